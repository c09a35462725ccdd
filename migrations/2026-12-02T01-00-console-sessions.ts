import { sql, type Kysely } from 'kysely';

// Frozen: never edit once applied anywhere. Imports nothing from src/; typed against no schema, as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */

export async function up(db: Kysely<any>): Promise<void> {
  // Sessions of the operator console (/admin): server-side, so that signing out, disabling the operator or
  // taking their role away ends them at once, in every process. The cookie holds a random id; only its
  // keyed hash is stored. user_id is null for a session opened with ADMIN_TOKEN.
  await db.schema
    .createTable('console_sessions')
    .addColumn('id_hash', 'text', (c) => c.primaryKey())
    .addColumn('user_id', 'text', (c) => c.references('users.id').onDelete('cascade'))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('seen_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .execute();
  await sql`create index console_sessions_expires_at on console_sessions (expires_at)`.execute(db);
  await sql`create index console_sessions_user_id on console_sessions (user_id)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('console_sessions').execute();
}
