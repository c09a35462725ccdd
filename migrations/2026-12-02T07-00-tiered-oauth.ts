import { sql, type Kysely } from 'kysely';

// Frozen: never edit once applied anywhere. Imports nothing from src/; typed against no schema, as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */

export async function up(db: Kysely<any>): Promise<void> {
  // UDAP Tiered OAuth (HL7 UDAP Security IG §6): the person an IdP names by (iss, sub) is this local user. One
  // local user per (iss, sub); a user may be linked from several IdPs. `linked_by`: 'operator' or 'auto'.
  await db.schema
    .createTable('tiered_oauth_links')
    .addColumn('idp_iss', 'text', (c) => c.notNull())
    .addColumn('sub', 'text', (c) => c.notNull())
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('linked_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('last_used_at', 'timestamptz')
    .addPrimaryKeyConstraint('tiered_oauth_links_pkey', ['idp_iss', 'sub'])
    .execute();
  await sql`create index tiered_oauth_links_user on tiered_oauth_links (user_id)`.execute(db);
  // This server's own registration as a client at each IdP (IG §6: the data holder registers as per §3), per
  // trust community and callback URL (a new ISSUER registers anew): reused for every sign-in there, forgotten
  // when the IdP no longer knows the client_id.
  await db.schema
    .createTable('tiered_oauth_clients')
    .addColumn('community', 'text', (c) => c.notNull())
    .addColumn('idp', 'text', (c) => c.notNull())
    .addColumn('redirect_uri', 'text', (c) => c.notNull())
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('tiered_oauth_clients_pkey', ['community', 'idp', 'redirect_uri'])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('tiered_oauth_clients').execute();
  await db.schema.dropTable('tiered_oauth_links').execute();
}
