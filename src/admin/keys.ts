import type { FastifyInstance } from 'fastify';

import { HttpProblem } from '../errors.js';
import { KeyRotationError, listSigningKeys, rotateSigningKeys } from '../keys/signing-keys.js';
import { minPublishedSeconds, RETIRED_KEY_PUBLISH_SECONDS } from '../maintenance.js';
import { SIGNING_ALGS, type SigningAlg } from '../config/config.js';
import type { AdminDeps } from './deps.js';
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
  const { config, db, box, host, audit } = deps;
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
      try {
        const rotated = await rotateSigningKeys(db, box, {
          ...(request.body.algs ? { algs: request.body.algs } : {}),
          force: request.body.force ?? false,
          minPublishedSeconds: minPublishedSeconds(config),
          retiredPublishSeconds: RETIRED_KEY_PUBLISH_SECONDS,
        });
        await host.refresh();
        await audit.record({ ...adminEvent(request), type: 'key.rotated', details: { rotated } });
        return { rotated: rotated.map((r) => ({ ...r, retired: r.retired ?? null })) };
      } catch (error) {
        if (error instanceof KeyRotationError) throw HttpProblem.conflict(error.message);
        throw error;
      }
    },
  );
}
