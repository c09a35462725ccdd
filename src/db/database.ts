import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';

import { PGlite } from '@electric-sql/pglite';
import { pg_trgm } from '@electric-sql/pglite/contrib/pg_trgm';
import { Kysely, PostgresDialect } from 'kysely';
import { PGliteDialect } from 'kysely-pglite-dialect';
import type { Logger } from 'pino';

import type { DatabaseConfig } from '../config/config.js';
import { withTransactionMigrationLock } from './migrate.js';
import { createPool, kyselyPool, PreparedStatements, StatementCounts } from './pool.js';
import { ReadReplica, type ReplicaOptions } from './replica.js';
import type { DB } from './schema.js';
import { WriteClock } from './write-clock.js';

export type DatabaseKind = 'postgres' | 'pglite';

/** The one handle to the database: Postgres over a `pg` pool, or the embedded PGlite. Same SQL on both. */
export interface Database {
  readonly db: Kysely<DB>;
  readonly kind: DatabaseKind;
  /** The read replica (DATABASE_REPLICA_URL), when one is configured: src/db/replica.ts. */
  readonly replica?: ReadReplica | undefined;
  /** Postgres pool connections (undefined on PGlite, one connection in process). */
  poolStats(): { total: number; idle: number; waiting: number } | undefined;
  /** Statements and commits the primary's connections have run (undefined on PGlite). */
  statementCounts?(): { readonly statements: number; readonly commits: number; readonly unprepared: number } | undefined;
  close(): Promise<void>;
}

export interface OpenOptions {
  readonly poolMax?: number;
  readonly log?: Logger;
  /** How long a new Postgres connection, or a wait for a free one, may take (default 10 s). */
  readonly connectTimeoutMs?: number;
  /**
   * How long a Postgres query may go unanswered before it fails and its connection is closed (default:
   * no limit). A server that stopped answering (frozen, or gone behind a network partition) otherwise holds
   * every request on it until TCP gives up, many minutes later.
   */
  readonly queryTimeoutMs?: number;
  /** A Postgres hot standby for the lookups that tolerate its lag (Postgres only). */
  readonly replica?: ReplicaOptions | undefined;
  /**
   * Whether the hot path's fixed statements are prepared once per connection under a name (default true;
   * DATABASE_PREPARED_STATEMENTS). Off behind a pooler in transaction mode that does not keep them; should
   * one turn out to be there anyway, the process notices and goes on without (src/db/pool.ts).
   */
  readonly preparedStatements?: boolean;
  /**
   * Whether those statements run on connections of their own that plan them once, however their values vary
   * (default true; DATABASE_GENERIC_PLANS): `plan_cache_mode = force_generic_plan` there, with
   * planner settings that keep those plans to index lookups, and up to `poolMax` more connections (src/db/pool.ts
   * FIXED_PLAN_SETTINGS). Only with prepared statements.
   */
  readonly genericPlans?: boolean;
}

export async function openDatabase(config: DatabaseConfig, options: OpenOptions = {}): Promise<Database> {
  return config.kind === 'postgres' ? openPostgres(config.url, options) : openPglite(config.dataDir);
}

function openPostgres(url: string, { poolMax = 10, log, connectTimeoutMs = 10_000, queryTimeoutMs, replica, preparedStatements = true, genericPlans = true }: OpenOptions): Database {
  const connection = { max: poolMax, connectTimeoutMs, queryTimeoutMs, applicationName: 'smart-auth-server', log };
  const pool = createPool(url, connection);
  // The fixed statements' own connections, which plan them once (src/db/pool.ts); without names, none.
  const planned = preparedStatements && genericPlans ? createPool(url, { ...connection, genericPlans: true }) : undefined;
  const writes = replica ? new WriteClock() : undefined;
  const prepared = new PreparedStatements(preparedStatements, log);
  const counts = new StatementCounts();
  const kysely = kyselyPool(pool, writes, prepared, counts, planned);
  const db = new Kysely<DB>({ dialect: withTransactionMigrationLock(new PostgresDialect({ pool: kysely })) });
  const reads = replica && writes ? ReadReplica.open(replica, { db, pool, kysely, writes, prepared }, { max: poolMax, connectTimeoutMs, queryTimeoutMs, log }) : undefined;
  return {
    db,
    kind: 'postgres',
    replica: reads,
    poolStats: () => ({ total: pool.totalCount + (planned?.totalCount ?? 0), idle: pool.idleCount + (planned?.idleCount ?? 0), waiting: pool.waitingCount + (planned?.waitingCount ?? 0) }),
    statementCounts: () => counts,
    close: once(async () => {
      await reads?.close();
      await db.destroy();
    }),
  };
}

/** close() may be reached from several shutdown paths; the second call waits for the first. */
function once(fn: () => Promise<void>): () => Promise<void> {
  let done: Promise<void> | undefined;
  return () => (done ??= fn());
}

/**
 * The embedded database's settings, for memory. Postgres' default 128 MB of shared buffers cost about
 * 140 MiB resident at start inside PGlite's WebAssembly memory (measured: 400 → 258 MiB on an existing data
 * directory); 16 MB hold the sandbox's working set many times over. PGlite already runs without fsync (its
 * default `-F`), the durability a single-process sandbox can take. The other half of its cost is V8
 * compiling the 10 MB WebAssembly module with its optimising tier (a transient 500 MiB at each start):
 * `npm start` and the Docker image run Node with `--liftoff-only` (README, Performance). pg_trgm is loaded for the
 * patient directory's search index (migrations/2026-12-03T00-00-patient-search-index.ts).
 */
const PGLITE_OPTIONS = { startParams: [...PGlite.defaultStartParams, '-c', 'shared_buffers=16MB'], extensions: { pg_trgm } };

/**
 * PGlite is one process, one connection. Two processes opening the same data directory would corrupt it,
 * so the directory is locked for as long as this process holds it.
 */
async function openPglite(dataDir: string | undefined): Promise<Database> {
  let unlock = async (): Promise<void> => {};
  let pglite: PGlite;
  if (dataDir === undefined) {
    pglite = new PGlite(PGLITE_OPTIONS);
  } else {
    const dir = resolve(dataDir);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    unlock = await lockDataDir(dir);
    pglite = new PGlite(join(dir, 'pgdata'), PGLITE_OPTIONS);
  }
  try {
    await pglite.waitReady;
  } catch (error) {
    await unlock();
    throw error;
  }
  const db = new Kysely<DB>({ dialect: withTransactionMigrationLock(new PGliteDialect(pglite)) });
  return {
    db,
    kind: 'pglite',
    poolStats: () => undefined,
    close: once(async () => {
      await db.destroy();
      // kysely only destroys a driver it initialised, i.e. one that ran a query.
      if (!pglite.closed) await pglite.close();
      await unlock();
    }),
  };
}

/** An in-memory PGlite database, for tests. */
export function openMemoryDatabase(): Promise<Database> {
  return openPglite(undefined);
}

/** The embedded database's directory is held by another live process (a running server, most often). */
export class DataDirInUseError extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number,
  ) {
    super(`The embedded database in ${dir} is in use by process ${pid}. It serves one process at a time; stop that process, or set DATABASE_URL to run several processes on Postgres.`);
    this.name = 'DataDirInUseError';
  }
}

async function lockDataDir(dir: string): Promise<() => Promise<void>> {
  const lockPath = join(dir, 'server.pid');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(lockPath, 'wx', 0o600);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      return () => rm(lockPath, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const pid = Number((await readFile(lockPath, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new DataDirInUseError(dir, pid);
      }
      await rm(lockPath, { force: true }); // left behind by a process that died
    }
  }
  throw new Error(`could not lock ${lockPath}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
