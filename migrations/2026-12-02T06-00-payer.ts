import { sql, type Kysely } from 'kysely';

// Frozen: never edit once applied anywhere. Imports nothing from src/; typed against no schema, as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */

/**
 * The payer pack (CMS-0057-F): attribution lists of provider organisations (Da Vinci ATR Groups), members'
 * consents (Provider Access opt-out, Payer-to-Payer opt-in, exclusion of sensitive data) and authorized
 * representatives. The gateway reads all three at every request of a payer client (src/grants/token-access.ts).
 */
export async function up(db: Kysely<any>): Promise<void> {
  // One list per imported ATR Group. `organization` is the organisation's identifier as `system|value`
  // (NPI, TIN), matched against a client's organization_identifiers.
  await db.schema
    .createTable('attribution_lists')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization', 'text', (c) => c.notNull())
    .addColumn('name', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await sql`create index attribution_lists_organization on attribution_lists (organization)`.execute(db);

  // Group.member: the patient, its period (either end open) and `inactive`. Kept when a member leaves the
  // Group (inactive, or its period ends) so that the history stays; a re-import replaces the list's members.
  await db.schema
    .createTable('attribution_members')
    .addColumn('list_id', 'text', (c) => c.notNull().references('attribution_lists.id').onDelete('cascade'))
    .addColumn('patient_id', 'text', (c) => c.notNull())
    .addColumn('period_start', 'timestamptz')
    .addColumn('period_end', 'timestamptz')
    .addColumn('inactive', 'boolean', (c) => c.notNull().defaultTo(false))
    .addPrimaryKeyConstraint('attribution_members_pkey', ['list_id', 'patient_id'])
    .execute();
  await sql`create index attribution_members_patient on attribution_members (patient_id)`.execute(db);

  // A member's choices. `organization` narrows a Payer-to-Payer opt-in to one payer (null: any payer).
  // A withdrawn consent keeps its row (withdrawn_at), for the member's history and the audit.
  await db.schema
    .createTable('member_consents')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('patient_id', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('provider-access-opt-out', 'payer-to-payer-opt-in', 'exclude-sensitive')`))
    .addColumn('organization', 'text')
    .addColumn('period_start', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('period_end', 'timestamptz')
    .addColumn('recorded_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('withdrawn_at', 'timestamptz')
    .execute();
  await sql`create index member_consents_patient on member_consents (patient_id, kind)`.execute(db);
  await sql`create index member_consents_live on member_consents (kind, patient_id) where withdrawn_at is null`.execute(db);

  // A person (a user whose fhirUser is a RelatedPerson or Person) who may act for a patient: pending until
  // the representative accepts, active within its period, revoked for good.
  await db.schema
    .createTable('representatives')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('patient_id', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('pending', 'active', 'revoked')`))
    .addColumn('period_start', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('period_end', 'timestamptz')
    .addColumn('designated_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await sql`create index representatives_user on representatives (user_id) where status = 'active'`.execute(db);
  // One standing designation per person and patient: a second request while one is pending or active is refused.
  await sql`create unique index representatives_standing on representatives (user_id, patient_id) where status <> 'revoked'`.execute(db);
  await sql`create index representatives_patient on representatives (patient_id)`.execute(db);

  // The Patient Access report (CMS-0057-F) reads a year of the gateway's access events of Patient Access apps.
  await sql`create index audit_events_patient_access on audit_events (recorded_at) where type = 'fhir.access' and details->>'payerRole' = 'patient-access'`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop index if exists audit_events_patient_access`.execute(db);
  await db.schema.dropTable('representatives').execute();
  await db.schema.dropTable('member_consents').execute();
  await db.schema.dropTable('attribution_members').execute();
  await db.schema.dropTable('attribution_lists').execute();
}
