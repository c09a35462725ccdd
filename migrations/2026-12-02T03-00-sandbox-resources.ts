import { sql, type Kysely } from 'kysely';

// Frozen: never edit once applied anywhere. Imports nothing from src/; typed against no schema, as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */

export async function up(db: Kysely<any>): Promise<void> {
  // The embedded FHIR server's resources (the sandbox's data): the current version of each, as the server
  // holds it in memory. Loaded whole at start; every create, update and delete is written here before the
  // server answers, so an app's writes survive a restart. Search runs in memory, so no other index.
  await db.schema
    .createTable('fhir_resources')
    .addColumn('resource_type', 'text', (c) => c.notNull())
    .addColumn('id', 'text', (c) => c.notNull())
    .addColumn('version_id', 'text', (c) => c.notNull())
    .addColumn('resource', 'jsonb', (c) => c.notNull())
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('fhir_resources_pkey', ['resource_type', 'id'])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('fhir_resources').execute();
}
