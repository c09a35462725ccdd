import type { FastifyInstance } from 'fastify';

import { clientNames } from '../../clients/registry.js';
import { listGrants } from '../../grants/grants.js';
import { idParams } from '../schemas.js';
import { revokeGrant } from '../operations/grants.js';
import { noticeOf, type ConsoleContext } from './context.js';
import { operatorEvent } from './session.js';
import { when } from './views.js';

const PAGE = 50;

/** Live grants by user, client or patient (auditors read them too), and revoking one (admins). */
export async function grantPages(app: FastifyInstance, ctx: ConsoleContext): Promise<void> {
  const { deps, base } = ctx;
  const { db } = deps;

  app.get<{ Querystring: { user?: string; client?: string; patient?: string; after?: string; notice?: string } }>(
    '/admin/grants',
    {
      config: { consoleAuditor: true },
      schema: { querystring: { type: 'object', properties: { user: { type: 'string', maxLength: 256 }, client: { type: 'string', maxLength: 256 }, patient: { type: 'string', maxLength: 256 }, after: { type: 'string', maxLength: 256 }, notice: { type: 'string', maxLength: 64 } } } },
    },
    async (request, reply) => {
      const filters = { user: request.query.user?.trim() || undefined, client: request.query.client?.trim() || undefined, patient: request.query.patient?.trim() || undefined };
      const items = await listGrants(db, { ...filters, after: request.query.after, limit: PAGE });
      const names = await clientNames(db, [...new Set(items.map((g) => g.client_id).filter((c): c is string => !!c))]);
      const params = Object.fromEntries(Object.entries(filters).filter(([, v]) => v !== undefined)) as Record<string, string>;
      const admin = request.consoleOperator?.role === 'admin';
      return ctx.render(request, reply, 'grants', {
        section: 'grants',
        notice: noticeOf(request.query.notice),
        filters: { user: filters.user ?? '', client: filters.client ?? '', patient: filters.patient ?? '' },
        paged: !!request.query.after,
        first: `${base}/grants${Object.keys(params).length ? `?${new URLSearchParams(params).toString()}` : ''}`,
        next: items.length === PAGE ? `${base}/grants?${new URLSearchParams({ ...params, after: items.at(-1)!.grant_id }).toString()}` : null,
        admin,
        grants: items.map((g) => ({
          id: g.grant_id,
          client: g.client_id,
          clientName: g.client_id ? (names.get(g.client_id) ?? g.client_id) : '—',
          clientHref: admin && g.client_id ? `${base}/clients/${encodeURIComponent(g.client_id)}` : null,
          user: g.user_id ?? '—',
          patient: g.patient ?? '—',
          scope: g.scope ?? '',
          created: when(g.created_at),
          lastUsed: when(g.last_used_at),
          expires: when(g.expires_at),
          revoke: `${base}/grants/${encodeURIComponent(g.grant_id)}/revoke`,
        })),
      });
    },
  );

  app.post<{ Params: { id: string } }>(
    '/admin/grants/:id/revoke',
    { schema: { params: idParams('id'), body: { type: 'object', required: ['csrf'], properties: { csrf: { type: 'string', maxLength: 128 } } } } },
    async (request, reply) => {
      await revokeGrant(deps, operatorEvent(request), request.params.id);
      return ctx.redirect(reply, '/grants', 'grant-revoked');
    },
  );
}
