import type { FastifyInstance } from 'fastify';

import { auditCounts, queryAudit } from '../../audit/audit.js';
import { countClientsByStatus, listClients } from '../../clients/registry.js';
import { countLiveGrants } from '../../grants/grants.js';
import { noticeOf, type ConsoleContext } from './context.js';
import { eventView } from './views.js';

const DAY_MS = 86_400_000;

/**
 * The dashboard: the last 24 hours from the audit trail (tokens issued and refreshed, sign-ins, failures),
 * live grants, and registrations waiting for approval. Auditors see it too: it is counts, and links to the
 * pages they may read.
 */
export async function dashboardPage(app: FastifyInstance, ctx: ConsoleContext): Promise<void> {
  const { db } = ctx.deps;
  app.get<{ Querystring: { notice?: string } }>(
    '/admin',
    { config: { consoleAuditor: true }, schema: { querystring: { type: 'object', properties: { notice: { type: 'string', maxLength: 64 } } } } },
    async (request, reply) => {
      const since = new Date(Date.now() - DAY_MS);
      const [counts, grants, clients, pending, failures] = await Promise.all([
        auditCounts(db, since),
        countLiveGrants(db),
        countClientsByStatus(db),
        listClients(db, { status: 'pending', limit: 20 }),
        queryAudit(db, { outcome: 'failure', from: since, newestFirst: true, limit: 10 }),
      ]);
      const count = (type: string, outcome?: 'success' | 'failure') => counts.filter((c) => c.type === type && (!outcome || c.outcome === outcome)).reduce((n, c) => n + c.count, 0);
      const admin = request.consoleOperator?.role === 'admin';
      return ctx.render(request, reply, 'dashboard', {
        section: 'dashboard',
        notice: noticeOf(request.query.notice),
        tiles: [
          { label: 'Tokens issued', value: count('token.issued'), hint: 'last 24 hours' },
          { label: 'Tokens refreshed', value: count('token.refreshed'), hint: 'last 24 hours' },
          { label: 'Active grants', value: grants, hint: 'now', href: `${ctx.base}/grants` },
          { label: 'Failures', value: counts.filter((c) => c.outcome === 'failure').reduce((n, c) => n + c.count, 0), hint: 'last 24 hours', href: `${ctx.base}/audit?outcome=failure` },
          { label: 'Failed sign-ins', value: count('login.failure'), hint: 'last 24 hours', href: `${ctx.base}/audit?type=login.failure` },
          { label: 'Pending approvals', value: clients.pending, hint: 'now', ...(admin ? { href: `${ctx.base}/clients?status=pending` } : {}) },
        ],
        pending: pending.map((c) => ({ id: c.client_id, name: typeof c.metadata.client_name === 'string' ? c.metadata.client_name : c.client_id, created: c.created_at.toISOString().slice(0, 16).replace('T', ' '), href: `${ctx.base}/clients/${encodeURIComponent(c.client_id)}` })),
        failures: failures.map(eventView),
        admin,
      });
    },
  );
}
