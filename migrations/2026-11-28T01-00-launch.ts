import { sql, type Kysely } from 'kysely';

// Frozen: never edit once applied anywhere. Imports nothing from src/; typed against no schema, as kysely documents.
/* eslint-disable @typescript-eslint/no-explicit-any */

export async function up(db: Kysely<any>): Promise<void> {
  // EHR launch contexts, created server-to-server before the EHR opens the app with `launch=<id>`.
  await db.schema
    .createTable('launches')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('client_id', 'text')
    .addColumn('fhir_base', 'text')
    .addColumn('user_id', 'text')
    .addColumn('patient', 'text')
    .addColumn('encounter', 'text')
    .addColumn('fhir_context', 'jsonb')
    .addColumn('intent', 'text')
    .addColumn('need_patient_banner', 'boolean')
    .addColumn('smart_style_url', 'text')
    .addColumn('tenant', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addColumn('consumed_at', 'timestamptz')
    .execute();
  await sql`create index launches_expires_at on launches (expires_at)`.execute(db);

  // The SMART context of one authorization, keyed by oidc-provider's grant (one grant per authorization):
  // what the token response, refreshes and introspection report.
  await db.schema
    .createTable('grant_contexts')
    .addColumn('grant_id', 'text', (c) => c.primaryKey())
    .addColumn('fhir_base', 'text', (c) => c.notNull())
    .addColumn('patient', 'text')
    .addColumn('encounter', 'text')
    .addColumn('fhir_context', 'jsonb')
    .addColumn('intent', 'text')
    .addColumn('need_patient_banner', 'boolean')
    .addColumn('smart_style_url', 'text')
    .addColumn('tenant', 'text')
    .addColumn('launch_id', 'text')
    .addColumn('fhir_user', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .execute();
  await sql`create index grant_contexts_expires_at on grant_contexts (expires_at)`.execute(db);

  // Repeated login failures back off, counted here so that the limit holds across server processes.
  await db.schema.alterTable('users').addColumn('failed_logins', 'integer', (c) => c.notNull().defaultTo(0)).execute();
  await db.schema.alterTable('users').addColumn('locked_until', 'timestamptz').execute();
  await db.schema.alterTable('users').addColumn('last_login_at', 'timestamptz').execute();

  // Patients a user may act for (a parent, a caregiver), besides a patient user's own record.
  await db.schema
    .createTable('user_patients')
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('patient_id', 'text', (c) => c.notNull().references('patients.id').onDelete('cascade'))
    .addPrimaryKeyConstraint('user_patients_pkey', ['user_id', 'patient_id'])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('user_patients').execute();
  await db.schema.alterTable('users').dropColumn('last_login_at').execute();
  await db.schema.alterTable('users').dropColumn('locked_until').execute();
  await db.schema.alterTable('users').dropColumn('failed_logins').execute();
  await db.schema.dropTable('grant_contexts').execute();
  await db.schema.dropTable('launches').execute();
}
