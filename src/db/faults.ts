import { setTimeout as sleep } from 'node:timers/promises';

import type { Logger } from 'pino';

/**
 * What clients are asked to wait before trying again while the database is unavailable (RFC 9110 §10.2.3):
 * a Postgres restart or a failover takes seconds; asking sooner only adds load while it recovers.
 */
export const RETRY_AFTER_SECONDS = 5;

/** Socket errors of a connection that cannot be made or was lost. */
const NETWORK_FAULTS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection lost',
  EPIPE: 'connection lost',
  ECONNABORTED: 'connection lost',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'host unreachable',
  EHOSTDOWN: 'host unreachable',
  ENOTFOUND: 'host name not found',
  EAI_AGAIN: 'host name not found',
};

/** Postgres SQLSTATEs (Appendix A) that say the server cannot serve now but may shortly. */
const SERVER_FAULTS: Record<string, string> = {
  '57P01': 'the server is shutting down',
  '57P02': 'the server crashed',
  '57P03': 'the server is starting up or recovering',
  '53300': 'too many connections',
  // After a failover, a connection may reach the old primary, now a read-only standby.
  '25006': 'the server is read-only',
};

/** node-postgres and pg-pool report a lost or timed-out connection by message only. */
const DRIVER_FAULTS: readonly [RegExp, string][] = [
  [/^Connection terminated due to connection timeout/, 'connection timed out'],
  [/^Connection terminated/, 'connection lost'],
  [/^Client has encountered a connection error and is not queryable/, 'connection lost'],
  [/^timeout exceeded when trying to connect/, 'no connection within the connect timeout'],
  [/^Query read timeout/, 'no answer within the query timeout'],
];

/**
 * Why the database cannot be reached, when `error` (or an error it wraps) says it is a fault that passes:
 * the server is down, restarting, failing over or out of connections. Undefined for every other error, a
 * bad query or a wrong password included. The words are ours, safe to show: no host, user or database name.
 */
export function unavailableReason(error: unknown): string | undefined {
  const seen = new Set<unknown>();
  const queue = [error];
  while (queue.length) {
    const current = queue.shift();
    if (!current || typeof current !== 'object' || seen.has(current)) continue;
    seen.add(current);
    const { code, message, cause, errors } = current as { code?: unknown; message?: unknown; cause?: unknown; errors?: unknown };
    if (typeof code === 'string') {
      const reason = NETWORK_FAULTS[code] ?? SERVER_FAULTS[code] ?? (/^08[0-9A-Z]{3}$/.test(code) ? 'connection failure' : undefined);
      if (reason) return reason;
    }
    if (typeof message === 'string') {
      const match = DRIVER_FAULTS.find(([pattern]) => pattern.test(message));
      if (match) return match[1];
    }
    // Kysely's migrator and our own errors wrap the driver's in `cause`; Node's happy-eyeballs connect
    // reports every address it tried in an AggregateError.
    queue.push(cause, ...(Array.isArray(errors) ? (errors as unknown[]) : []));
  }
  return undefined;
}

export interface RetryOptions {
  readonly log: Logger;
  /** What is being done, for the log. */
  readonly what: string;
  readonly signal?: AbortSignal | undefined;
}

const FIRST_DELAY_MS = 250;
/** Small enough that a server waiting at start-up is serving within about this long of the database's return. */
const MAX_DELAY_MS = 2000;
/** A database that stays away is logged again at most this often. */
const LOG_EVERY_MS = 30_000;

/**
 * Runs `job` until it succeeds, waiting with exponential backoff while the database is unavailable (and only
 * then: any other error is thrown at once). Logs why it waits when it starts waiting, when the reason
 * changes, and every 30 s while it lasts. Stops with the signal's reason when the signal aborts.
 */
export async function retryWhileUnavailable<T>(job: () => Promise<T>, { log, what, signal }: RetryOptions): Promise<T> {
  let delay = FIRST_DELAY_MS;
  let lastReason: string | undefined;
  let loggedAt = 0;
  const started = Date.now();
  for (let attempt = 1; ; attempt++) {
    signal?.throwIfAborted();
    try {
      const result = await job();
      if (lastReason) log.info({ what, attempts: attempt, waitedMs: Date.now() - started }, 'database available');
      return result;
    } catch (error) {
      const reason = unavailableReason(error);
      if (!reason) throw error;
      if (reason !== lastReason || Date.now() - loggedAt >= LOG_EVERY_MS) {
        log.warn({ what, reason, attempt, retryInMs: delay }, 'waiting for the database');
        loggedAt = Date.now();
      }
      lastReason = reason;
    }
    await sleep(delay, undefined, { signal });
    delay = Math.min(delay * 2, MAX_DELAY_MS);
  }
}

/** SQLSTATEs (Appendix A) of a connection the server refuses for good: what the operator must change. */
const REFUSALS: Record<string, string> = {
  '28000': 'the role is not allowed to connect (no such role, or pg_hba.conf refuses it): check the user in DATABASE_URL',
  '28P01': 'the password was refused: check the password in DATABASE_URL',
  '3D000': 'the database does not exist: create it, or name another in DATABASE_URL',
  '42501': 'the role may not connect to this database: grant it CONNECT, or use another role',
};

/** TLS that cannot be agreed: node-postgres says so by message only, Node's TLS by its certificate error codes. */
const TLS_MESSAGE = /^The server does not support SSL connections/;
const TLS_CODE = /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)/;

/**
 * Why the database refused to let this server connect, when it did for a reason waiting will not change (wrong
 * role, password, database name, TLS): a line for the operator, with the server's message, instead of a stack
 * trace at start-up. Undefined for every other error.
 */
export function connectionRefusal(error: unknown): string | undefined {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  const text = typeof message === 'string' ? message : '';
  if (typeof code === 'string' && code in REFUSALS) return `the database refused the connection: ${REFUSALS[code]} (server said: ${text}, SQLSTATE ${code})`;
  if (TLS_MESSAGE.test(text) || (typeof code === 'string' && TLS_CODE.test(code))) return `the connection to the database could not be secured: ${text} (check sslmode in DATABASE_URL and the server's TLS set-up)`;
  return undefined;
}

/**
 * Whether the database refused the rows themselves (SQLSTATE class 22, data exception, or 23, integrity
 * constraint violation), as opposed to failing whatever was sent (connection lost, server shutting down):
 * a batch refused for one row's content is worth retrying row by row, a batch that failed otherwise is not.
 */
export function isRowError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^2[23]/.test(code);
}

/**
 * The SQLSTATE of a token endpoint's write whose code or refresh token another request used first
 * (migrations/2026-12-03T01-00-single-use-check.ts): a row error, so its batch is retried event by event.
 */
export const USED_ALREADY = '23U01';

/** Whether the write failed because a code or refresh token it consumed was used already (USED_ALREADY). */
export function isUsedAlready(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === USED_ALREADY;
}

/**
 * The SQLSTATE of a write recording an interaction's decision (a sign-in, a consent) that another request decided
 * first (migrations/2026-12-03T02-00-single-decision-check.ts): a row error, so its batch is retried event by event.
 */
export const DECIDED_ALREADY = '23U02';

/** Whether the write failed because the interaction it decided was decided already (DECIDED_ALREADY). */
export function isDecidedAlready(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === DECIDED_ALREADY;
}
