import { sql, type Kysely } from 'kysely';

// Frozen: never edit once applied anywhere. Imports nothing from src/; typed against no schema, as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */

export async function up(db: Kysely<any>): Promise<void> {
  // The audit trail: append-only, each row's hash covering the previous row's, so that an edit shows.
  await db.schema
    .createTable('audit_events')
    .addColumn('seq', 'bigint', (c) => c.primaryKey().generatedAlwaysAsIdentity())
    .addColumn('recorded_at', 'timestamptz', (c) => c.notNull())
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('outcome', 'text', (c) => c.notNull().check(sql`outcome in ('success', 'failure')`))
    .addColumn('actor_type', 'text', (c) => c.notNull().check(sql`actor_type in ('user', 'client', 'admin', 'system', 'anonymous')`))
    .addColumn('actor_id', 'text')
    .addColumn('user_id', 'text')
    .addColumn('client_id', 'text')
    .addColumn('patient_id', 'text')
    .addColumn('grant_id', 'text')
    .addColumn('scope', 'text')
    .addColumn('source_ip', 'text')
    .addColumn('request_id', 'text')
    .addColumn('details', 'jsonb', (c) => c.notNull())
    .addColumn('prev_hash', 'text', (c) => c.notNull())
    .addColumn('hash', 'text', (c) => c.notNull().unique())
    .execute();
  for (const column of ['recorded_at', 'type', 'client_id', 'user_id', 'patient_id']) {
    await sql`create index ${sql.raw(`audit_events_${column}`)} on audit_events (${sql.raw(column === 'recorded_at' ? 'recorded_at' : `${column}, recorded_at`)})`.execute(db);
  }
  await sql`create function audit_events_append_only() returns trigger language plpgsql as $$
    begin
      raise exception 'audit_events is append-only: % is not allowed', tg_op;
    end
  $$`.execute(db);
  await sql`create trigger audit_events_no_change before update or delete on audit_events for each row execute function audit_events_append_only()`.execute(db);
  await sql`create trigger audit_events_no_truncate before truncate on audit_events for each statement execute function audit_events_append_only()`.execute(db);

  // Who holds each grant, for the connected-apps page and the admin API, without reading JSON payloads.
  await db.schema.alterTable('grant_contexts').addColumn('client_id', 'text').execute();
  await db.schema.alterTable('grant_contexts').addColumn('account_id', 'text').execute();
  await db.schema.alterTable('grant_contexts').addColumn('scope', 'text').execute();
  await db.schema.alterTable('grant_contexts').addColumn('last_used_at', 'timestamptz').execute();
  await sql`create index grant_contexts_account on grant_contexts (account_id, client_id)`.execute(db);
  await sql`create index grant_contexts_client on grant_contexts (client_id)`.execute(db);
  await sql`create index grant_contexts_patient on grant_contexts (patient)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index grant_contexts_patient`.execute(db);
  await sql`drop index grant_contexts_client`.execute(db);
  await sql`drop index grant_contexts_account`.execute(db);
  for (const column of ['last_used_at', 'scope', 'account_id', 'client_id']) await db.schema.alterTable('grant_contexts').dropColumn(column).execute();
  await db.schema.dropTable('audit_events').execute();
  await sql`drop function audit_events_append_only()`.execute(db);
}
