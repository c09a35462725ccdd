import { Kysely, PostgresDialect, type KyselyPlugin, type PostgresPool, type PostgresPoolClient } from 'kysely';
import type pg from 'pg';
import type { Logger } from 'pino';

import type { Config } from '../config/config.js';
import { unavailableReason } from './faults.js';
import { createPool, kyselyPool, type PreparedStatements } from './pool.js';
import type { DB } from './schema.js';
import type { WriteClock } from './write-clock.js';

/**
 * The lookups that may read from a replica (a Postgres hot standby), each with the tables it reads. Every
 * other read goes to the primary; docs/scaling.md ("Read replicas") has the whole table and the reasons.
 * What these have in common: a few seconds' lag costs nothing a client could exploit, because every
 * process already serves them from a cache of that age or holds the rule that lets them lag (key
 * publication before signing), and none of them decides whether a bearer value is still good.
 */
export const REPLICA_LOOKUPS = {
  /** The key set each process re-reads every KEY_REFRESH_SECONDS (what /jwks publishes and the keys that sign). */
  'signing-keys': ['signing_keys', 'cookie_keys'],
  /** An active client's registration, as oidc-provider asks for it at each request (cached CLIENT_CACHE_SECONDS). */
  'client-metadata': ['clients'],
  /** The patient picker's directory search. */
  'patient-search': ['patients'],
  /** The sandbox launcher's lists of patients, encounters, apps and users. */
  'launcher-lists': ['patients', 'encounters', 'clients', 'users'],
} as const satisfies Record<string, readonly (keyof DB)[]>;

export type ReplicaLookup = keyof typeof REPLICA_LOOKUPS;

/**
 * The lookups this configuration sends to the replica. CLIENT_CACHE_SECONDS=0 asks that a client changed
 * by one process (suspended, say) be seen by every other at once: its registration is then read from the
 * primary, since the replica would add its lag to what the cache no longer does.
 */
export function replicaLookups(config: Pick<Config, 'clientCacheSeconds'>): ReplicaLookup[] {
  return (Object.keys(REPLICA_LOOKUPS) as ReplicaLookup[]).filter((lookup) => lookup !== 'client-metadata' || config.clientCacheSeconds > 0);
}

/** Where a lag-tolerant lookup reads: what the stores that may use a replica are given. */
export interface ReplicaReads {
  /**
   * The handle for one read of `lookup`: the replica's while it has replayed everything this lookup may
   * need, the primary's otherwise. Single statements only (a read that fails on the replica is run again on
   * the primary), never a write.
   */
  db(lookup: ReplicaLookup): Kysely<DB>;
}

/** Without a replica every lookup reads the primary. */
export function primaryReads(db: Kysely<DB>): ReplicaReads {
  return { db: () => db };
}

export type ReplicaState =
  /** No measurement yet: reads go to the primary. */
  | 'starting'
  /** Lag within DATABASE_REPLICA_MAX_LAG_MS: the lookups above read from it. */
  | 'in_use'
  /** Further behind than DATABASE_REPLICA_MAX_LAG_MS: every read goes to the primary. */
  | 'lagging'
  /** Unreachable, or its last query failed: every read goes to the primary. */
  | 'unavailable'
  /** It answers but is not in recovery (a promoted standby, or a wrong URL): never read, it may have diverged. */
  | 'not_a_standby';

export interface ReplicaStatus {
  readonly state: ReplicaState;
  /** How far behind the primary it was at the last measurement, in milliseconds (undefined before the first). */
  readonly lagMs: number | undefined;
}

export interface ReplicaOptions {
  readonly url: string;
  readonly maxLagMs: number;
  readonly lookups: readonly ReplicaLookup[];
  /** How often the lag is measured (default 1 s). */
  readonly checkIntervalMs?: number;
}

interface Connection {
  readonly max: number;
  readonly connectTimeoutMs: number;
  readonly queryTimeoutMs: number | undefined;
  readonly log: Logger | undefined;
}

/**
 * A read replica with its lag measured. Every `checkIntervalMs` (1 s) the monitor reads the primary's WAL
 * position (`pg_current_wal_lsn()`), then the position the replica has replayed (`pg_last_wal_replay_lsn()`):
 * once the replica has replayed past a position the primary reported, it holds every transaction committed
 * before that question was sent. So the replica is known to be current as of a moment (`caughtUpTo`), and
 * its lag is how long ago that moment is, measured rather than assumed, whatever the write rate (an idle
 * primary has nothing to replay, so a replica paused on it is not behind). A lookup reads from the replica
 * only while that lag is within `maxLagMs` and the replica is current as of this process's last write to
 * the tables the lookup reads.
 */
export class ReadReplica implements ReplicaReads {
  readonly #primary: Kysely<DB>;
  readonly #replica: Kysely<DB>;
  readonly #pool: pg.Pool;
  readonly #monitor: LagMonitor;
  readonly #writes: WriteClock;
  readonly #lookups: ReadonlySet<ReplicaLookup>;

  private constructor(primary: Kysely<DB>, replica: Kysely<DB>, pool: pg.Pool, monitor: LagMonitor, writes: WriteClock, lookups: ReadonlySet<ReplicaLookup>) {
    this.#primary = primary;
    this.#replica = replica;
    this.#pool = pool;
    this.#monitor = monitor;
    this.#writes = writes;
    this.#lookups = lookups;
  }

  static open(options: ReplicaOptions, primary: { readonly db: Kysely<DB>; readonly pool: pg.Pool; readonly kysely: PostgresPool; readonly writes: WriteClock; readonly prepared: PreparedStatements }, connection: Connection): ReadReplica {
    const pool = createPool(options.url, { max: connection.max, connectTimeoutMs: connection.connectTimeoutMs, queryTimeoutMs: connection.queryTimeoutMs, applicationName: 'smart-auth-server-replica', log: connection.log });
    const monitor = new LagMonitor(primary.pool, pool, options.maxLagMs, options.checkIntervalMs ?? 1000, connection.log);
    const replica = new Kysely<DB>({ dialect: new PostgresDialect({ pool: fallingBack(kyselyPool(pool, undefined, primary.prepared), primary.kysely, (error) => monitor.failed(error)) }) });
    monitor.start();
    return new ReadReplica(primary.db, replica, pool, monitor, primary.writes, new Set(options.lookups));
  }

  db(lookup: ReplicaLookup): Kysely<DB> {
    return this.#lookups.has(lookup) && this.#monitor.currentAsOf(this.#writes.lastWrite(REPLICA_LOOKUPS[lookup])) ? this.#replica : this.#primary;
  }

  /** The same routing over handles that run `plugin` (the query observer's metrics and spans). */
  withPlugin(plugin: KyselyPlugin): ReplicaReads {
    const primary = this.#primary.withPlugin(plugin);
    const replica = this.#replica.withPlugin(plugin);
    return { db: (lookup) => (this.db(lookup) === this.#replica ? replica : primary) };
  }

  status(): ReplicaStatus {
    return this.#monitor.status();
  }

  async close(): Promise<void> {
    this.#monitor.stop();
    await this.#monitor.idle();
    await this.#replica.destroy();
    // kysely ends only a pool it has used; the monitor uses it from the start.
    if (!this.#pool.ended) await this.#pool.end();
  }
}

/** Samples kept while the replica is behind: past that many, the oldest go and its lag reads larger than it is. */
const MAX_SAMPLES = 1000;

/** Measures the replica's lag (see ReadReplica) and says whether it may serve a read. */
class LagMonitor {
  readonly #primary: pg.Pool;
  readonly #replica: pg.Pool;
  readonly #maxLagMs: number;
  readonly #intervalMs: number;
  readonly #log: Logger | undefined;
  /** The primary's WAL position and when it was asked for, oldest first, newer than `#caughtUpTo`. */
  readonly #samples: { readonly at: number; readonly lsn: bigint }[] = [];
  /** The replica holds every transaction committed before this moment (performance.now()). */
  #caughtUpTo = -Infinity;
  #lagMs: number | undefined;
  /** Why the replica may not be read, whatever its lag; undefined when it answered its last query. */
  #fault: 'starting' | 'unavailable' | 'not_a_standby' | undefined = 'starting';
  #reported: ReplicaState = 'starting';
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #running: Promise<void> = Promise.resolve();

  constructor(primary: pg.Pool, replica: pg.Pool, maxLagMs: number, intervalMs: number, log: Logger | undefined) {
    this.#primary = primary;
    this.#replica = replica;
    this.#maxLagMs = maxLagMs;
    this.#intervalMs = intervalMs;
    this.#log = log;
  }

  start(): void {
    this.#running = this.#measure().finally(() => this.#schedule());
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  idle(): Promise<void> {
    return this.#running;
  }

  /** Whether the replica may serve a read that must see every commit made before `since`. */
  currentAsOf(since: number): boolean {
    return this.#fault === undefined && this.#caughtUpTo >= since && performance.now() - this.#caughtUpTo <= this.#maxLagMs;
  }

  /** A read on the replica failed: none goes there until a measurement succeeds again. */
  failed(error: unknown): void {
    this.#fault = 'unavailable';
    this.#report(describe(error));
  }

  status(): ReplicaStatus {
    return { state: this.#state(), lagMs: this.#lagMs };
  }

  #state(): ReplicaState {
    if (this.#fault) return this.#fault;
    return performance.now() - this.#caughtUpTo <= this.#maxLagMs ? 'in_use' : 'lagging';
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#running = this.#measure().finally(() => this.#schedule());
    }, this.#intervalMs);
    // A monitor alone never keeps the process alive.
    this.#timer.unref();
  }

  async #measure(): Promise<void> {
    const askedAt = performance.now();
    let primaryLsn: bigint;
    try {
      primaryLsn = parseLsn((await this.#primary.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn')).rows[0]!.lsn);
    } catch {
      // The primary's own outage is reported by the requests that need it; the replica's lag is unknown
      // meanwhile, and grows as measured from the last moment it was known to be current.
      return;
    }
    this.#samples.push({ at: askedAt, lsn: primaryLsn });
    if (this.#samples.length > MAX_SAMPLES) this.#samples.shift();
    let replayed: { standby: boolean; lsn: string | null };
    try {
      replayed = (await this.#replica.query<{ standby: boolean; lsn: string | null }>('select pg_is_in_recovery() as standby, pg_last_wal_replay_lsn()::text as lsn')).rows[0]!;
    } catch (error) {
      this.failed(error);
      return;
    }
    if (!replayed.standby || replayed.lsn === null) {
      this.#fault = 'not_a_standby';
      this.#report('the replica is not in recovery: it is not a standby of the primary');
      return;
    }
    const position = parseLsn(replayed.lsn);
    let current = -1;
    for (let i = this.#samples.length - 1; i >= 0; i--) {
      if (this.#samples[i]!.lsn <= position) {
        current = i;
        break;
      }
    }
    if (current >= 0) {
      this.#caughtUpTo = this.#samples[current]!.at;
      this.#samples.splice(0, current + 1);
    }
    this.#lagMs = this.#caughtUpTo === -Infinity ? undefined : Math.round(performance.now() - this.#caughtUpTo);
    this.#fault = undefined;
    this.#report();
  }

  /** Logs each change of state (never a URL: the words are ours or Postgres' error code). */
  #report(reason?: string): void {
    const state = this.#state();
    if (state === this.#reported) return;
    this.#reported = state;
    if (state === 'in_use') this.#log?.info({ replica: state, lagMs: this.#lagMs }, 'read replica in use');
    else this.#log?.warn({ replica: state, lagMs: this.#lagMs, maxLagMs: this.#maxLagMs, ...(reason ? { reason } : {}) }, 'read replica not used: reads go to the primary');
  }
}

/** A WAL position (`16/B374D848`) as a number. */
function parseLsn(text: string): bigint {
  const [high = '', low = ''] = text.split('/');
  return (BigInt(`0x${high}`) << 32n) + BigInt(`0x${low}`);
}

function describe(error: unknown): string {
  const code = (error as { code?: unknown } | undefined)?.code;
  return unavailableReason(error) ?? (typeof code === 'string' ? `query failed (SQLSTATE ${code})` : 'query failed');
}

/** SQLSTATE 25006: a write reached the read-only standby. A bug to surface, not a fault to route around. */
const READ_ONLY = '25006';

/**
 * The replica's pool as kysely uses it, except that a read the replica cannot answer (unreachable, lost,
 * too slow, cancelled by a recovery conflict, a table a migration has not replayed yet) is run on a
 * primary connection instead, and the replica is set aside until the monitor next reaches it: a replica
 * outage never fails a request.
 */
function fallingBack(replica: PostgresPool, primary: PostgresPool, failed: (error: unknown) => void): PostgresPool {
  return {
    options: replica.options,
    end: () => replica.end(),
    async connect(): Promise<PostgresPoolClient> {
      let client: PostgresPoolClient;
      try {
        client = await replica.connect();
      } catch (error) {
        failed(error);
        return primary.connect();
      }
      let fallback: PostgresPoolClient | undefined;
      const query = async (text: string, values: readonly unknown[]): Promise<unknown> => {
        if (!fallback) {
          try {
            return await client.query(text, values);
          } catch (error) {
            if ((error as { code?: unknown }).code === READ_ONLY) throw error;
            failed(error);
            fallback = await primary.connect();
          }
        }
        return fallback.query(text, values);
      };
      return {
        query: query as PostgresPoolClient['query'],
        release: (destroy) => {
          client.release(destroy);
          fallback?.release(destroy);
        },
      };
    },
  };
}
