import type { Kysely } from 'kysely';
import { Migrator, type MigrationResult } from 'kysely/migration';

import { migrations } from '../../migrations/index.js';

// Migrations are typed against no schema at all (they describe its history), as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */
function migrator(db: Kysely<any>): Migrator {
  return new Migrator({ db, provider: { getMigrations: () => Promise.resolve(migrations) } });
}

export class MigrationError extends Error {
  override name = 'MigrationError';
}

/**
 * Applies every pending migration. Safe to run from several processes at once: kysely's migrator takes a
 * lock, so exactly one applies them and the others find nothing left to do.
 * @returns the names of the migrations applied by this call.
 */
export async function migrateToLatest(db: Kysely<any>): Promise<string[]> {
  const { error, results = [] } = await migrator(db).migrateToLatest();
  const failed = results.find((r: MigrationResult) => r.status === 'Error');
  if (error || failed) {
    throw new MigrationError(`migration ${failed?.migrationName ?? '(unknown)'} failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  return results.filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

/** Names of the migrations this build knows and the database has not applied. */
export async function pendingMigrations(db: Kysely<any>): Promise<string[]> {
  const all = await migrator(db).getMigrations();
  return all.filter((m) => !m.executedAt).map((m) => m.name);
}
