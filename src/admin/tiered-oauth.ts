import type { FastifyInstance } from 'fastify';

import { listLinks, type TieredLink } from '../users/tiered-links.js';
import type { AdminDeps } from './deps.js';
import { addLink, LINK_KEY_SCHEMA, NEW_LINK_SCHEMA, removeLink, type NewLink } from './operations/tiered-links.js';
import { adminEvent, errorResponses, tagged } from './schemas.js';

const linkResponse = {
  type: 'object',
  required: ['idp', 'sub', 'user_id', 'linked_by', 'created_at', 'last_used_at'],
  properties: {
    idp: { type: 'string' },
    sub: { type: 'string' },
    user_id: { type: 'string' },
    linked_by: { type: 'string', enum: ['operator', 'auto'] },
    created_at: { type: 'string', format: 'date-time' },
    last_used_at: { type: ['string', 'null'], format: 'date-time' },
  },
} as const;

/** UDAP Tiered OAuth: which local user a person at an identity provider is (docs/udap.md). */
export async function tieredOAuthRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  app.get<{ Querystring: { user_id?: string; limit: number } }>(
    '/tiered-oauth/links',
    {
      schema: {
        ...tagged,
        summary: 'List the links of people at identity providers to local users (UDAP Tiered OAuth)',
        querystring: { type: 'object', additionalProperties: false, properties: { user_id: { type: 'string', minLength: 1, maxLength: 64 }, limit: { type: 'integer', minimum: 1, maximum: 500, default: 100 } } },
        response: { 200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: linkResponse } } }, ...errorResponses },
      },
    },
    async (request) => ({ items: (await listLinks(deps.db, { userId: request.query.user_id, limit: request.query.limit })).map(view) }),
  );

  app.post<{ Body: NewLink }>(
    '/tiered-oauth/links',
    { schema: { ...tagged, summary: 'Link a person at an identity provider (idp, sub) to a local user', body: NEW_LINK_SCHEMA, response: { 201: linkResponse, ...errorResponses } } },
    async (request, reply) => reply.code(201).send(view(await addLink(deps, adminEvent(request), request.body))),
  );

  app.delete<{ Querystring: { idp: string; sub: string } }>(
    '/tiered-oauth/links',
    { schema: { ...tagged, summary: 'Unlink a person at an identity provider from their local user', querystring: LINK_KEY_SCHEMA, response: { 204: { type: 'null' }, ...errorResponses } } },
    async (request, reply) => {
      await removeLink(deps, adminEvent(request), request.query.idp, request.query.sub);
      return reply.code(204).send();
    },
  );
}

function view(link: TieredLink): Record<string, unknown> {
  return { idp: link.idpIss, sub: link.sub, user_id: link.userId, linked_by: link.linkedBy, created_at: link.createdAt.toISOString(), last_used_at: link.lastUsedAt?.toISOString() ?? null };
}
