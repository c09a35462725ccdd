import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';

import type { Database } from '../db/database.js';
import { unavailableReason } from '../db/faults.js';
import { pendingMigrations } from '../db/migrate.js';
import type { ReplicaStatus } from '../db/replica.js';

const READY_TIMEOUT_MS = 2000;

const statusSchema = {
  type: 'object',
  required: ['status'],
  additionalProperties: false,
  properties: {
    status: { type: 'string' },
    database: { type: 'string' },
    reason: { type: 'string' },
    replica: {
      type: 'object',
      required: ['state'],
      additionalProperties: false,
      properties: { state: { type: 'string' }, lag_ms: { type: 'integer' } },
    },
  },
} as const;

/**
 * `/healthz`: the process is up and serving (liveness). `/readyz`: the database answers and every migration
 * this build knows is applied (readiness); 503 with the reason otherwise, and while shutting down. With a
 * read replica it also says whether the replica is read and how far behind it was last measured; the
 * replica never makes the process unready, since the primary serves every read without it.
 */
export async function healthRoutes(app: FastifyInstance, options: { readonly database: Database }): Promise<void> {
  const { db, kind, replica } = options.database;

  app.get('/healthz', { schema: { response: { 200: statusSchema } } }, async (_request, reply) => {
    void reply.header('cache-control', 'no-store');
    return { status: 'ok' };
  });

  app.get('/readyz', { schema: { response: { 200: statusSchema, 503: statusSchema } } }, async (request, reply) => {
    void reply.header('cache-control', 'no-store');
    const reason = await withTimeout(checkReady(), READY_TIMEOUT_MS).catch((error: unknown) => {
      const why = error instanceof ReadinessTimeout ? error.message : (unavailableReason(error) ?? 'unexpected error (see the server log)');
      request.log.warn({ reason: why, err: error }, 'not ready');
      return `database unreachable: ${why}`;
    });
    const details = replica ? { replica: replicaDetails(replica.status()) } : {};
    if (reason) return reply.code(503).send({ status: 'not_ready', database: kind, reason, ...details });
    return { status: 'ready', database: kind, ...details };
  });

  async function checkReady(): Promise<string | undefined> {
    await sql`select 1`.execute(db);
    const pending = await pendingMigrations(db);
    return pending.length ? `migrations not applied: ${pending.join(', ')}` : undefined;
  }
}

function replicaDetails({ state, lagMs }: ReplicaStatus): { state: string; lag_ms?: number } {
  return lagMs === undefined ? { state } : { state, lag_ms: lagMs };
}

class ReadinessTimeout extends Error {}

/**
 * The probe answers within `ms` even when the pool waits longer for a connection (a silent network
 * partition): a load balancer must learn at once that this process cannot serve.
 */
function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ReadinessTimeout(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
