import { sql, type Kysely } from 'kysely';

// Frozen: never edit once applied anywhere. Imports nothing from src/; typed against no schema, as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */

export async function up(db: Kysely<any>): Promise<void> {
  // An interaction is decided once (a sign-in, a consent, a refusal): the statement that records a decision
  // (src/audit/audit.ts, with its audit event, and for a consent its grant) updates the interaction only while it
  // is undecided; when fewer rows were decided than were presented, this ends the statement with SQLSTATE 23U02
  // (integrity class, so that the batch is tried one event at a time), and nothing of it stays.
  await sql`create function oidc_interactions_all_decided(decided bigint, presented integer) returns boolean language plpgsql as $$
    begin
      if decided < presented then
        raise exception 'an interaction presented was decided already' using errcode = '23U02';
      end if;
      return true;
    end
  $$`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop function oidc_interactions_all_decided(bigint, integer)`.execute(db);
}
