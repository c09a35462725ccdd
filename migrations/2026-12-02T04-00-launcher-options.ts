import { sql, type Kysely } from 'kysely';

// Frozen: never edit once applied anywhere. Imports nothing from src/; typed against no schema, as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */

export async function up(db: Kysely<any>): Promise<void> {
  // What the sandbox launcher asked of one launch beyond its context: sign-in and consent skipped, an error
  // simulated, the patients the picker offers. Keyed by the launch's id (its keyed hash), gone with it.
  await db.schema
    .createTable('launcher_options')
    .addColumn('launch_id', 'text', (c) => c.primaryKey().references('launches.id').onDelete('cascade').onUpdate('cascade'))
    .addColumn('skip_login', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('skip_consent', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('simulate', 'text')
    .addColumn('patients', 'jsonb')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('launcher_options').execute();
}
