import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

import { HttpProblem } from '../../errors.js';
import { SIGNING_ALGS, type SigningAlg } from '../../config/config.js';
import { listSigningKeys, type RotationResult } from '../../keys/signing-keys.js';
import { minPublishedSeconds } from '../../maintenance.js';
import { rotateKeys } from '../operations/keys.js';
import { checked, type ConsoleContext, type FormValue } from './context.js';
import { operatorEvent } from './session.js';
import { when } from './views.js';

/** Signing keys: their states and ages, and rotation on demand (docs/architecture.md §Keys). */
export async function keyPages(app: FastifyInstance, ctx: ConsoleContext): Promise<void> {
  const { deps, base } = ctx;
  const { db, config } = deps;

  async function page(request: FastifyRequest, reply: FastifyReply, extra: { rotated?: readonly RotationResult[]; error?: string; status?: number } = {}) {
    const keys = await listSigningKeys(db);
    const now = Date.now();
    return ctx.render(request, reply, 'keys', {
      section: 'keys',
      action: `${base}/keys/rotate`,
      algs: [...new Set(keys.filter((k) => k.state !== 'retired').map((k) => k.alg))],
      minPublished: minPublishedSeconds(config),
      keys: keys.map((k) => ({
        kid: k.kid,
        alg: k.alg,
        state: k.state,
        created: when(k.createdAt),
        activated: when(k.activatedAt),
        publishUntil: when(k.publishUntil),
        ageDays: Math.floor((now - (k.activatedAt ?? k.createdAt).getTime()) / 86_400_000),
      })),
      rotated: extra.rotated ?? null,
      error: extra.error ?? null,
    }, extra.status ?? 200);
  }

  app.get('/admin/keys', async (request, reply) => page(request, reply));

  app.post<{ Body: { algs?: FormValue; force?: string } }>(
    '/admin/keys/rotate',
    {
      schema: {
        body: {
          type: 'object',
          required: ['csrf'],
          additionalProperties: false,
          properties: { csrf: { type: 'string', maxLength: 128 }, algs: { anyOf: [{ type: 'string', enum: [...SIGNING_ALGS] }, { type: 'array', maxItems: 4, items: { type: 'string', enum: [...SIGNING_ALGS] } }] }, force: { type: 'string', enum: ['true'] } },
        },
      },
    },
    async (request, reply) => {
      const algs = [...new Set(checked(request.body.algs))] as SigningAlg[];
      try {
        const rotated = await rotateKeys(deps, operatorEvent(request), { algs: algs.length ? algs : undefined, force: request.body.force === 'true' });
        return await page(request, reply, { rotated });
      } catch (error) {
        if (!(error instanceof HttpProblem) || error.statusCode >= 500) throw error;
        return page(request, reply, { error: error.message, status: error.statusCode });
      }
    },
  );
}
