import type { Config } from '../config/config.js';
import { openDatabase, type Database } from '../db/database.js';
import { migrateToLatest } from '../db/migrate.js';
import { createLogger } from '../http/logger.js';
import { seedDemo } from '../seed/demo.js';

/** Runs `job` on the configured database, opened with a small pool and closed after it. */
export async function withDatabase<T>(config: Config, job: (db: Database) => Promise<T>): Promise<T> {
  const log = createLogger(config.logLevel);
  const database = await openDatabase(config.database, { poolMax: 2, log, preparedStatements: config.databasePreparedStatements, genericPlans: config.databaseGenericPlans });
  try {
    return await job(database);
  } finally {
    await database.close();
  }
}

export async function migrate(config: Config): Promise<number> {
  return withDatabase(config, async ({ db }) => {
    const applied = await migrateToLatest(db);
    process.stdout.write(applied.length ? `Applied: ${applied.join(', ')}\n` : 'No pending migrations.\n');
    return 0;
  });
}

export async function seed(config: Config): Promise<number> {
  return withDatabase(config, async ({ db }) => {
    await migrateToLatest(db);
    const result = await seedDemo(db, config);
    process.stdout.write(`Demo data: ${result.users} users, ${result.patients} patients, ${result.clients} clients added.\n`);
    return 0;
  });
}
