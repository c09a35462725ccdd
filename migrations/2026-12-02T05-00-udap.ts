import { sql, type Kysely } from 'kysely';

// Frozen: never edit once applied anywhere. Imports nothing from src/; typed against no schema, as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */

export async function up(db: Kysely<any>): Promise<void> {
  // UDAP registrations (HL7 UDAP Security IG §3): one client per (community, iss), and under the TEFCA profile
  // per exchange purpose too ('' when none). A cancelled registration keeps its row (cancelled_at set) so that
  // a retired client_id still says whose it was; a new registration by the same iss then gets a new client_id.
  await db.schema
    .createTable('udap_registrations')
    .addColumn('client_id', 'text', (c) => c.primaryKey())
    .addColumn('community', 'text', (c) => c.notNull())
    .addColumn('iss', 'text', (c) => c.notNull())
    .addColumn('exchange_purpose', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('cancelled_at', 'timestamptz')
    .execute();
  await sql`create unique index udap_registrations_current on udap_registrations (community, iss, exchange_purpose) where cancelled_at is null`.execute(db);
  // jti values of software statements already used (IG §7.1.4), keyed by a hash of (iss, jti), until the
  // statement they came with expires.
  await db.schema
    .createTable('udap_jtis')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .execute();
  await sql`create index udap_jtis_expires_at on udap_jtis (expires_at)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('udap_jtis').execute();
  await db.schema.dropTable('udap_registrations').execute();
}
