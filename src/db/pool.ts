import type { PostgresPool, PostgresPoolClient } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';

import { unavailableReason } from './faults.js';
import type { WriteClock } from './write-clock.js';

export interface PoolOptions {
  readonly max: number;
  readonly connectTimeoutMs: number;
  readonly queryTimeoutMs?: number | undefined;
  /** Shown in pg_stat_activity: tells the primary's connections from the replica's. */
  readonly applicationName: string;
  readonly log?: Logger | undefined;
}

/** A node-postgres pool with our connection settings and listeners for connections lost outside a query. */
export function createPool(url: string, { max, connectTimeoutMs, queryTimeoutMs, applicationName, log }: PoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max,
    connectionTimeoutMillis: connectTimeoutMs,
    ...(queryTimeoutMs ? { query_timeout: queryTimeoutMs } : {}),
    idleTimeoutMillis: 30_000,
    // TCP keepalive finds connections to a host that vanished (a failover, a partition) while they idle.
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    application_name: applicationName,
  });
  // A connection lost while idle (Postgres restart, failover) is reported by the pool, which drops it.
  pool.on('error', (error) => log?.warn({ pool: applicationName, reason: unavailableReason(error), err: error }, 'idle database connection lost'));
  // A connection lost while checked out fails its query, which answers its request, and then emits 'error'
  // on the client, where pg-pool listens only while the client is idle: without a listener of its own that
  // event would be an uncaught exception. The pool discards the client when it is released.
  pool.on('connect', (client) => {
    client.on('error', (error) => log?.debug({ pool: applicationName, reason: unavailableReason(error) }, 'database connection lost while in use'));
  });
  return pool;
}

/**
 * The pool as kysely uses it, except that a client whose query failed for want of its connection (lost, or
 * no answer within the query timeout) is released as broken: pg-pool then closes it instead of handing it
 * to the next request, whose query would queue behind the one that never got its answer. With `writes`,
 * every committed write is recorded there by table (see WriteClock).
 */
export function kyselyPool(pool: pg.Pool, writes?: WriteClock): PostgresPool {
  return {
    options: pool.options,
    end: () => pool.end(),
    async connect(): Promise<PostgresPoolClient> {
      const client = await pool.connect();
      const session = writes?.session();
      let broken = false;
      const query = async (text: string, values: readonly unknown[]): Promise<pg.QueryResult> => {
        try {
          const result = await client.query(text, [...values]);
          session?.executed(text);
          return result;
        } catch (error) {
          if (unavailableReason(error)) broken = true;
          throw error;
        }
      };
      return {
        // kysely's type also admits a cursor, which it passes only when given a `cursor` option (never here).
        query: query as unknown as PostgresPoolClient['query'],
        release: (destroy) => {
          session?.released();
          client.release(destroy || broken);
        },
        processID: (client as { processID?: number }).processID,
      };
    },
  };
}
