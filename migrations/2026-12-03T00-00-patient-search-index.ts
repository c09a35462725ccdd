import { sql, type Kysely } from 'kysely';

// Frozen: never edit once applied anywhere. Imports nothing from src/; typed against no schema, as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */

export async function up(db: Kysely<any>): Promise<void> {
  // The picker's first page (no search words): the directory by name, read in order rather than sorted whole.
  await sql`create index patients_display_name on patients (display_name, id)`.execute(db);
  // Birth dates are searched by prefix (`like '1962-03%'`), which a B-tree in the database's collation serves
  // only where that collation is C; text_pattern_ops serves it in any, and equality (a patient match) as well.
  await sql`create index patients_birth_date_prefix on patients (birth_date text_pattern_ops)`.execute(db);
  await sql`drop index patients_birth_date`.execute(db);
  // Its search, `search_text like '%word%'`: a trigram index, where the database offers pg_trgm (Postgres's
  // contrib, a trusted extension since Postgres 13, so the database's owner may create it; PGlite when loaded).
  // Where it does not, or the role may not create it, the search still works and reads the whole directory.
  await sql`
    do $$
    begin
      create extension if not exists pg_trgm;
    exception when others then
      raise notice 'pg_trgm is not available (%); the patient search reads the whole directory', sqlerrm;
    end
    $$`.execute(db);
  await sql`
    do $$
    declare
      home name := (select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'pg_trgm');
    begin
      if home is not null then
        execute format('create index patients_search_text on patients using gin (search_text %I.gin_trgm_ops)', home);
      end if;
    end
    $$`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists patients_search_text`.execute(db);
  await sql`create index patients_birth_date on patients (birth_date)`.execute(db);
  await sql`drop index patients_birth_date_prefix`.execute(db);
  await sql`drop index patients_display_name`.execute(db);
}
