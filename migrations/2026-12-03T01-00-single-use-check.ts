import { sql, type Kysely } from 'kysely';

// Frozen: never edit once applied anywhere. Imports nothing from src/; typed against no schema, as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */

export async function up(db: Kysely<any>): Promise<void> {
  // The token endpoint's write marks the code or refresh token used in the statement that stores what it issued
  // (src/audit/audit.ts): when fewer rows flipped from unused than were presented, this ends the statement with
  // SQLSTATE 23U01 (integrity class, so that the batch is tried one event at a time), and nothing of it stays.
  await sql`create function oidc_payloads_all_consumed(flipped bigint, presented integer) returns boolean language plpgsql as $$
    begin
      if flipped < presented then
        raise exception 'a code or refresh token presented was used already' using errcode = '23U01';
      end if;
      return true;
    end
  $$`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop function oidc_payloads_all_consumed(bigint, integer)`.execute(db);
}
