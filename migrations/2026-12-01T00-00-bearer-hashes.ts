import { sql, type Kysely } from 'kysely';

// Frozen: never edit once applied anywhere. Imports nothing from src/; typed against no schema, as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */

export async function up(db: Kysely<any>): Promise<void> {
  // Small facts about the data itself that code checks at start-up, e.g. a conversion still to run.
  await db.schema
    .createTable('server_state')
    .addColumn('key', 'text', (c) => c.primaryKey())
    .addColumn('value', 'jsonb', (c) => c.notNull())
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  // From here on tokens, codes, sessions and launch ids are stored as keyed hashes. Rows written before hold
  // them in clear; hashing needs SECRET_KEY, which migrations never see, so the server converts them at its
  // next start and then clears this mark.
  await sql`insert into server_state (key, value) values ('bearer_ids_in_clear', 'true'::jsonb)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('server_state').execute();
}
