import { sql, type Kysely } from 'kysely';

// Frozen: never edit once applied anywhere. Imports nothing from src/; typed against no schema, as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */

export async function up(db: Kysely<any>): Promise<void> {
  // Signed statements of the audit trail's state (every chain's head and count), each a compact JWS. Kept
  // here and exported elsewhere, so that rows removed from the end of the trail are noticed.
  await db.schema
    .createTable('audit_checkpoints')
    .addColumn('id', 'bigint', (c) => c.primaryKey().generatedAlwaysAsIdentity())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('kid', 'text', (c) => c.notNull())
    .addColumn('jws', 'text', (c) => c.notNull())
    .execute();
  // Pruning retired signing keys asks whether a key signed a checkpoint.
  await sql`create index audit_checkpoints_kid on audit_checkpoints (kid)`.execute(db);
  await sql`create function audit_checkpoints_append_only() returns trigger language plpgsql as $$
    begin
      raise exception 'audit_checkpoints is append-only: % is not allowed', tg_op;
    end
  $$`.execute(db);
  await sql`create trigger audit_checkpoints_no_change before update or delete on audit_checkpoints for each row execute function audit_checkpoints_append_only()`.execute(db);
  await sql`create trigger audit_checkpoints_no_truncate before truncate on audit_checkpoints for each statement execute function audit_checkpoints_append_only()`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('audit_checkpoints').execute();
  await sql`drop function audit_checkpoints_append_only()`.execute(db);
}
