import type { FastifyRequest } from 'fastify';

import type { AuditEvent } from '../audit/audit.js';

/** Shared pieces of the admin API's schemas. */

/** The OpenAPI tag of admin routes: the generated document lists exactly the routes carrying it. */
export const ADMIN_TAG = 'admin';

export const errorSchema = {
  type: 'object',
  required: ['error', 'error_description'],
  properties: { error: { type: 'string' }, error_description: { type: 'string' } },
} as const;

/** Responses every admin route can give besides its own. */
export const errorResponses = { 400: errorSchema, 401: errorSchema, 403: errorSchema, 404: errorSchema, 409: errorSchema } as const;

export const idParams = (name: string) =>
  ({ type: 'object', required: [name], properties: { [name]: { type: 'string', minLength: 1, maxLength: 256 } } }) as const;

export const pageQuery = {
  limit: { type: 'integer', minimum: 1, maximum: 500, default: 50 },
  after: { type: 'string', maxLength: 256, description: 'the `next` of the previous page' },
} as const;

export const tagged = { tags: [ADMIN_TAG] } as const;

/** The next-page cursor: the last item's key, or null at the end. */
export function nextCursor<T>(items: readonly T[], limit: number, key: (item: T) => string): string | null {
  return items.length === limit ? key(items.at(-1)!) : null;
}

/** Audit fields of the admin calling. */
export function adminEvent(request: FastifyRequest): Pick<AuditEvent, 'actorType' | 'actorId' | 'sourceIp' | 'requestId'> {
  return { actorType: request.adminActor?.type ?? 'admin', actorId: request.adminActor?.id, sourceIp: request.ip, requestId: request.id };
}
