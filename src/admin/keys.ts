import type { FastifyInstance } from 'fastify';

import { listSigningKeys } from '../keys/signing-keys.js';
import { SIGNING_ALGS, type SigningAlg } from '../config/config.js';
import type { AdminDeps } from './deps.js';
import { rotateKeys } from './operations/keys.js';
import { adminEvent, errorResponses, tagged } from './schemas.js';

const keyResponse = {
  type: 'object',
  properties: {
    kid: { type: 'string' },
    alg: { type: 'string' },
    state: { type: 'string', enum: ['next', 'active', 'retired'] },
    created_at: { type: 'string', format: 'date-time' },
    activated_at: { type: ['string', 'null'], format: 'date-time' },
    retired_at: { type: ['string', 'null'], format: 'date-time' },
    publish_until: { type: ['string', 'null'], format: 'date-time' },
  },
} as const;

/** Signing keys: their states, and rotation on demand (see docs/architecture.md §Keys). */
export async function keyRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const { db } = deps;
  app.get('/keys', { schema: { ...tagged, summary: 'List signing keys', response: { 200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: keyResponse } } }, ...errorResponses } } }, async () => ({
    items: (await listSigningKeys(db)).map((k) => ({
      kid: k.kid,
      alg: k.alg,
      state: k.state,
      created_at: k.createdAt.toISOString(),
      activated_at: k.activatedAt?.toISOString() ?? null,
      retired_at: k.retiredAt?.toISOString() ?? null,
      publish_until: k.publishUntil?.toISOString() ?? null,
    })),
  }));

  app.post<{ Body: { algs?: SigningAlg[]; force?: boolean } }>(
    '/keys/rotate',
    {
      schema: {
        ...tagged,
        summary: 'Promote the published next keys to signing, retire the current ones',
        body: { type: 'object', additionalProperties: false, properties: { algs: { type: 'array', uniqueItems: true, items: { type: 'string', enum: [...SIGNING_ALGS] } }, force: { type: 'boolean' } } },
        response: {
          200: { type: 'object', required: ['rotated'], properties: { rotated: { type: 'array', items: { type: 'object', properties: { alg: { type: 'string' }, activated: { type: 'string' }, retired: { type: ['string', 'null'] }, next: { type: 'string' } } } } } },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const rotated = await rotateKeys(deps, adminEvent(request), { algs: request.body.algs, force: request.body.force ?? false });
      return { rotated: rotated.map((r) => ({ ...r, retired: r.retired ?? null })) };
    },
  );
}
