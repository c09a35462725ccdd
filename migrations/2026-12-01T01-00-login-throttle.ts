import { sql, type Kysely } from 'kysely';

// Frozen: never edit once applied anywhere. Imports nothing from src/; typed against no schema, as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */

export async function up(db: Kysely<any>): Promise<void> {
  // Sign-in throttling (src/users/login-throttle.ts): one row per throttled key, a user name, a device or a
  // source address, stored only as a keyed hash. Every attempt is counted here, in one statement, before any
  // password is checked, so that every server process sees the same counts.
  await db.schema
    .createTable('login_throttle')
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('key_hash', 'text', (c) => c.notNull())
    .addColumn('hits', 'integer', (c) => c.notNull())
    .addColumn('next_at', 'timestamptz', (c) => c.notNull())
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('last_admitted', 'boolean', (c) => c.notNull())
    .addPrimaryKeyConstraint('login_throttle_pkey', ['kind', 'key_hash'])
    .execute();
  await sql`create index login_throttle_expires_at on login_throttle (expires_at)`.execute(db);

  // The per-user counters this replaces: they were read before the password check and written after it, so
  // concurrent attempts all passed, and they knew nothing of unknown user names or of sources.
  await db.schema.alterTable('users').dropColumn('locked_until').execute();
  await db.schema.alterTable('users').dropColumn('failed_logins').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('users').addColumn('failed_logins', 'integer', (c) => c.notNull().defaultTo(0)).execute();
  await db.schema.alterTable('users').addColumn('locked_until', 'timestamptz').execute();
  await db.schema.dropTable('login_throttle').execute();
}
