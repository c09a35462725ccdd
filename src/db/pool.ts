import type { PostgresPool, PostgresPoolClient } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';

import { unavailableReason } from './faults.js';
import { statementName } from './statements.js';
import type { WriteClock } from './write-clock.js';

export interface PoolOptions {
  readonly max: number;
  readonly connectTimeoutMs: number;
  readonly queryTimeoutMs?: number | undefined;
  /** Shown in pg_stat_activity: tells the primary's connections from the replica's. */
  readonly applicationName: string;
  readonly log?: Logger | undefined;
  /** Each new connection plans prepared statements once (see {@link FIXED_PLAN_SETTINGS}). */
  readonly genericPlans?: boolean | undefined;
}

/**
 * Set on every new connection of the pool that runs the hot path's fixed statements (DATABASE_GENERIC_PLANS,
 * on by default; see {@link kyselyPool}). Postgres otherwise plans a prepared statement afresh at every
 * execution whenever its generic plan looks dearer than the plans made for the values at hand, and ours
 * always do: a lookup of `id = any($1)` is costed for ten ids without the values and for the one or two at
 * hand with them. Measured on the bench (pg_stat_statements): introspection's token lookup was planned at
 * every call, 290 µs of planning to 140 µs of execution; planning was 38–67 % of the time Postgres spent on
 * the statements of client_credentials, code exchange and introspection. Planned once per connection,
 * Postgres's own CPU per operation fell by 17–67 % on introspection, refresh, code exchange and the gateway.
 *
 * Only there: a statement planned without its values cannot use what only its values tell, so every other
 * statement, written freely, keeps Postgres's default (`on conflict (…) where status <> $1` finds no arbiter
 * index in a generic plan; a partial index whose predicate a parameter states is not used).
 *
 * A plan made once is kept for the life of the connection while the tables grow (until autovacuum's next
 * ANALYZE replans it), and it is costed for ten values per array parameter. Left to itself, Postgres chose
 * to read the whole of oidc_payloads (2,300 rows, 137 pages) for a token looked up by `model = any($1) and
 * id = any($2)` (a hundred index probes, as it counts them), hashed every user to join one, and, planned
 * while there were few grants, joined every grant to every launch context before matching them to the token:
 * 5–12 ms a lookup after a few seconds of launches (bench, auto_explain). The fixed statements look rows up
 * and write them by key, a few at a time: on their connections a table is read whole only where no index
 * serves (`enable_seqscan`), rows are joined one by one through the index on the key the row before names
 * (no hash, merge or materialized joins), and in the order written, from the rows looked up to the rows
 * they name (`join_collapse_limit`). test/fixed-plans.test.ts holds every fixed statement's plan to that.
 * What this cannot settle: planned on tables whose statistics count a row or two of a kind, Postgres may
 * still find one kind's rows by `model` alone and filter them, until the next ANALYZE.
 */
export const FIXED_PLAN_SETTINGS: Readonly<Record<string, string>> = {
  plan_cache_mode: 'force_generic_plan',
  enable_seqscan: 'off',
  enable_hashjoin: 'off',
  enable_mergejoin: 'off',
  enable_material: 'off',
  join_collapse_limit: '1',
};

/** {@link FIXED_PLAN_SETTINGS} as the one simple query each new connection sends. */
const GENERIC_PLANS = Object.entries(FIXED_PLAN_SETTINGS)
  .map(([name, value]) => `set ${name} = ${value}`)
  .join('; ');

/** A node-postgres pool with our connection settings and listeners for connections lost outside a query. */
export function createPool(url: string, { max, connectTimeoutMs, queryTimeoutMs, applicationName, log, genericPlans = false }: PoolOptions): pg.Pool {
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
    // Queued before the query that asked for the connection, so it runs first. Should it fail, the
    // connection works as before, planning at each execution.
    if (genericPlans) {
      client.query(GENERIC_PLANS).catch((error: unknown) => {
        // A connection lost at once fails the query waiting behind this too, which reports it.
        if (unavailableReason(error)) return;
        log?.warn({ pool: applicationName, err: error }, 'could not set plan_cache_mode on a new database connection: its prepared statements are planned at every execution');
      });
    }
  });
  return pool;
}

/** invalid_sql_statement_name, duplicate_prepared_statement: what a pooler that moves sessions between server connections causes. */
const PREPARED_LOST = new Set(['26000', '42P05']);

/**
 * Whether the fixed statements of the hot path (src/db/statements.ts) go as named prepared statements, parsed
 * and planned once per connection (DATABASE_PREPARED_STATEMENTS, on by default). A pooler in transaction
 * mode that does not track them (PgBouncer before 1.21, or without max_prepared_statements) hands a
 * connection's next statement to another server connection, where the name is unknown (26000) or already
 * taken (42P05): both are refused before anything runs, so the statement is sent again unnamed, and from
 * then on every statement of the process is, with one warning in the log.
 */
export class PreparedStatements {
  #enabled: boolean;
  readonly #log: Logger | undefined;

  constructor(enabled: boolean, log?: Logger) {
    this.#enabled = enabled;
    this.#log = log;
  }

  get enabled(): boolean {
    return this.#enabled;
  }

  /** The name `text` runs under: a fixed statement's, outside transactions, while names are kept. */
  nameOf(text: string, inTransaction: boolean): string | undefined {
    return this.#enabled && !inTransaction ? statementName(text) : undefined;
  }

  /**
   * Runs `text`, by `name` (from {@link nameOf}) when it has one; `counts`, where it was counted as named, learns
   * when it was sent again unnamed.
   */
  async query(client: pg.PoolClient, text: string, values: unknown[], name: string | undefined, counts?: StatementCounts): Promise<pg.QueryResult> {
    if (!name) return client.query(text, values);
    try {
      return await client.query({ name, text, values });
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (!PREPARED_LOST.has(code ?? '')) throw error;
      // Statements in flight at that moment may fail so too: each is sent again, the warning logged once.
      if (this.#enabled) {
        this.#enabled = false;
        this.#log?.warn({ code }, 'the database connection lost a prepared statement (a pooler in transaction mode?): statements go unnamed from now on; set DATABASE_PREPARED_STATEMENTS=false to say so');
      }
      if (counts) counts.unprepared++;
      return client.query(text, values);
    }
  }
}

/** What the primary's connections have run since the process started: the cost that regressions show in. */
export class StatementCounts {
  /** Statements sent, `begin` and `commit` not counted. */
  statements = 0;
  /** Transactions committed: each statement outside a transaction is one, an explicit transaction is one. */
  commits = 0;
  /**
   * Statements sent without a name, which Postgres parses and plans at each execution: every one that is not a
   * fixed statement (src/db/statements.ts) or runs inside a transaction, and all of them when names are off.
   */
  unprepared = 0;
}

/** Statements that open and close a transaction, as kysely and our code send them. */
const BEGIN = /^\s*(begin|start transaction)\b/i;
const END = /^\s*(commit|end|rollback|abort)\s*;?\s*$/i;
/** `end` is Postgres's other name for `commit`. */
const COMMITS = new Set(['commit', 'end']);

/**
 * The pool as kysely uses it, except that a client whose query failed for want of its connection (lost, or
 * no answer within the query timeout) is released as broken: pg-pool then closes it instead of handing it
 * to the next request, whose query would queue behind the one that never got its answer. With `writes`,
 * every committed write is recorded there by table (see WriteClock).
 *
 * With `planned`, the fixed statements that run by name (outside transactions) go to that pool's
 * connections, which plan them once ({@link FIXED_PLAN_SETTINGS}), and everything else to `pool`'s: a connection
 * kysely asks for is then taken from `pool` only at its first statement that needs one, so that a request
 * that runs fixed statements alone holds a connection of `planned` for each, and none of `pool`.
 */
export function kyselyPool(pool: pg.Pool, writes?: WriteClock, prepared = new PreparedStatements(false), counts = new StatementCounts(), planned?: pg.Pool): PostgresPool {
  return {
    options: pool.options,
    end: async () => {
      await Promise.all([pool.end(), planned?.end()]);
    },
    async connect(): Promise<PostgresPoolClient> {
      let client = planned ? undefined : await pool.connect();
      const session = writes?.session();
      let broken = false;
      let inTransaction = false;
      const query = async (text: string, values: readonly unknown[]): Promise<pg.QueryResult> => {
        const ended = inTransaction ? END.exec(text)?.[1] : undefined;
        const name = prepared.nameOf(text, inTransaction);
        if (BEGIN.test(text)) inTransaction = true;
        else if (ended) {
          inTransaction = false;
          if (COMMITS.has(ended.toLowerCase())) counts.commits++;
        } else {
          counts.statements++;
          if (!inTransaction) counts.commits++;
          if (!name) counts.unprepared++;
        }
        if (planned && name) {
          const result = await onItsOwn(planned, prepared, text, values, name, counts);
          session?.executed(text);
          return result;
        }
        try {
          client ??= await pool.connect();
          const result = await prepared.query(client, text, [...values], name, counts);
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
          client?.release(destroy || broken);
        },
        // Read by kysely only to cancel a query, which we never ask of it.
        get processID() {
          return (client as { processID?: number } | undefined)?.processID;
        },
      };
    },
  };
}

/** One fixed statement on a connection of `planned`, taken for it and given back (closed if it broke). */
async function onItsOwn(planned: pg.Pool, prepared: PreparedStatements, text: string, values: readonly unknown[], name: string, counts: StatementCounts): Promise<pg.QueryResult> {
  const client = await planned.connect();
  let broken = false;
  try {
    return await prepared.query(client, text, [...values], name, counts);
  } catch (error) {
    broken = unavailableReason(error) !== undefined;
    throw error;
  } finally {
    client.release(broken);
  }
}
