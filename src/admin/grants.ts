import type { FastifyInstance } from 'fastify';

import { listGrants } from '../grants/grants.js';
import type { AdminDeps } from './deps.js';
import { revokeGrant } from './operations/grants.js';
import { adminEvent, errorResponses, idParams, nextCursor, pageQuery, tagged } from './schemas.js';

const grantResponse = {
  type: 'object',
  properties: {
    grant_id: { type: 'string' },
    client_id: { type: ['string', 'null'] },
    user_id: { type: ['string', 'null'] },
    patient: { type: ['string', 'null'] },
    scope: { type: ['string', 'null'] },
    created_at: { type: 'string', format: 'date-time' },
    last_used_at: { type: ['string', 'null'], format: 'date-time' },
    expires_at: { type: 'string', format: 'date-time' },
  },
} as const;

/** What users have granted to apps, and cutting it off. */
export async function grantRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const { db } = deps;
  app.get<{ Querystring: { user?: string; client?: string; patient?: string; limit: number; after?: string } }>(
    '/grants',
    {
      schema: {
        ...tagged,
        summary: 'List live grants by user, client or patient',
        querystring: { type: 'object', additionalProperties: false, properties: { user: { type: 'string', maxLength: 256 }, client: { type: 'string', maxLength: 256 }, patient: { type: 'string', maxLength: 256 }, ...pageQuery } },
        response: { 200: { type: 'object', required: ['items', 'next'], properties: { items: { type: 'array', items: grantResponse }, next: { type: ['string', 'null'] } } }, ...errorResponses },
      },
    },
    async (request) => {
      const items = await listGrants(db, request.query);
      return { items, next: nextCursor(items, request.query.limit, (g) => g.grant_id) };
    },
  );

  app.delete<{ Params: { grant_id: string } }>(
    '/grants/:grant_id',
    { schema: { ...tagged, summary: 'Revoke a grant and every token issued under it', params: idParams('grant_id'), response: { 204: { type: 'null' }, ...errorResponses } } },
    async (request, reply) => {
      await revokeGrant(deps, adminEvent(request), request.params.grant_id);
      return reply.code(204).send();
    },
  );
}
