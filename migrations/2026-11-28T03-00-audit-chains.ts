import { sql, type Kysely } from 'kysely';

// Frozen: never edit once applied anywhere. Imports nothing from src/; typed against no schema, as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */

export async function up(db: Kysely<any>): Promise<void> {
  // Each server process appends to a hash chain of its own, named here, so that processes never wait on one
  // another to audit. Rows written before this migration form one chain, '' (hashed without the column).
  await sql`alter table audit_events add column chain text not null default ''`.execute(db);
  await sql`alter table audit_events alter column chain drop default`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('audit_events').dropColumn('chain').execute();
}
