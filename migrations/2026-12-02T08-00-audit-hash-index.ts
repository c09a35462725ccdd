import { sql, type Kysely } from 'kysely';

// Frozen: never edit once applied anywhere. Imports nothing from src/; typed against no schema, as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */

export async function up(db: Kysely<any>): Promise<void> {
  // No query looks an audit row up by its hash: the chain links rows by prev_hash and the verifier finds each
  // chain's anchor as it walks the trail. The unique index on hash was a random-key B-tree insert (and its WAL)
  // for every event written.
  await sql`alter table audit_events drop constraint if exists audit_events_hash_key`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`alter table audit_events add constraint audit_events_hash_key unique (hash)`.execute(db);
}
