import { PostgresAdapter, sql, type Dialect, type Kysely } from 'kysely';
import { Migrator, type MigrationResult } from 'kysely/migration';

import { migrations } from '../../migrations/index.js';

// Migrations are typed against no schema at all (they describe its history), as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */
function migrator(db: Kysely<any>): Migrator {
  return new Migrator({ db, provider: { getMigrations: () => Promise.resolve(migrations) } });
}

/** kysely's own lock key, so that a process of an older build, which takes kysely's lock, still excludes ours. */
const MIGRATION_LOCK = sql.lit(BigInt('3853314791062309107'));
const takeMigrationLock = sql`select pg_advisory_xact_lock(${MIGRATION_LOCK})`;

/**
 * kysely 0.29 serialises migrations with a session advisory lock taken and released by statements of their
 * own. Behind a pooler in transaction mode (PgBouncer) each statement may run on another server connection:
 * the unlock misses, the lock stays on a pooled connection for good, and the next process to migrate waits
 * on it for kysely's hour-long lock timeout. This adapter takes a transaction lock instead, which ends with
 * the transaction whatever happens; {@link migrateToLatest} runs the migrator inside one transaction.
 */
class TransactionLockAdapter extends PostgresAdapter {
  override async acquireMigrationLock(db: Kysely<any>): Promise<void> {
    await takeMigrationLock.execute(db);
  }

  override async releaseMigrationLock(): Promise<void> {
    // the transaction's end releases it
  }
}

/** The dialect with migrations locked for the span of their transaction (see {@link TransactionLockAdapter}). */
export function withTransactionMigrationLock(dialect: Dialect): Dialect {
  return {
    createDriver: () => dialect.createDriver(),
    createQueryCompiler: () => dialect.createQueryCompiler(),
    createIntrospector: (db) => dialect.createIntrospector(db),
    createAdapter: () => new TransactionLockAdapter(),
  };
}

export class MigrationError extends Error {
  override name = 'MigrationError';
}

/**
 * Applies every pending migration, all in one transaction: either all of them or none. Safe to run from
 * several processes at once, directly or through a pooler: the first takes the lock, the others wait for
 * its commit and find nothing left to do.
 * @returns the names of the migrations applied by this call.
 */
export async function migrateToLatest(db: Kysely<any>): Promise<string[]> {
  return db.transaction().execute(async (trx) => {
    // Before the migrator looks for its own tables, which two processes would otherwise both create.
    await takeMigrationLock.execute(trx);
    const { error, results = [] } = await migrator(trx).migrateToLatest();
    const failed = results.find((r: MigrationResult) => r.status === 'Error');
    if (error || failed) {
      throw new MigrationError(`migration ${failed?.migrationName ?? '(unknown)'} failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
    return results.filter((r) => r.status === 'Success').map((r) => r.migrationName);
  });
}

/** Names of the migrations this build knows and the database has not applied. */
export async function pendingMigrations(db: Kysely<any>): Promise<string[]> {
  const all = await migrator(db).getMigrations();
  return all.filter((m) => !m.executedAt).map((m) => m.name);
}
