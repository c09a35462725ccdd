import assert from 'node:assert/strict';
import { it } from 'node:test';

import { sql } from 'kysely';

import { migrateToLatest, pendingMigrations } from '../src/db/migrate.js';
import { migrations } from '../migrations/index.js';
import { describeEachDatabase } from './helpers/databases.js';

describeEachDatabase(
  'migrations',
  (ctx) => {
    it('a fresh database has every migration pending', async () => {
      assert.deepEqual(await pendingMigrations(ctx.current.database.db), Object.keys(migrations));
    });

    it('apply in order exactly once, even when two processes start together; a second run is a no-op', async () => {
      const { db } = ctx.current.database;
      const results = await Promise.all([migrateToLatest(db), migrateToLatest(db)]);
      assert.deepEqual(results.sort((a, b) => a.length - b.length), [[], Object.keys(migrations)]);
      assert.deepEqual(await pendingMigrations(db), []);
      assert.deepEqual(await migrateToLatest(db), []);
    });

    it('create the tables the server uses', async () => {
      const { rows } = await sql<{ table_name: string }>`select table_name from information_schema.tables where table_schema = 'public' order by table_name`.execute(ctx.current.database.db);
      const tables = rows.map((r) => r.table_name);
      for (const table of ['clients', 'cookie_keys', 'encounters', 'oidc_payloads', 'patients', 'signing_keys', 'users']) assert.ok(tables.includes(table), table);
    });

    it('index what the hot paths look up', async () => {
      const { rows } = await sql<{ indexname: string }>`select indexname from pg_indexes where tablename = 'oidc_payloads' order by indexname`.execute(ctx.current.database.db);
      assert.deepEqual(rows.map((r) => r.indexname), ['oidc_payloads_expires_at', 'oidc_payloads_grant_id', 'oidc_payloads_pkey', 'oidc_payloads_uid', 'oidc_payloads_user_code']);
      const audit = await sql<{ indexname: string }>`select indexname from pg_indexes where tablename = 'audit_events' order by indexname`.execute(ctx.current.database.db);
      assert.deepEqual(audit.rows.map((r) => r.indexname), ['audit_events_client_id', 'audit_events_hash_key', 'audit_events_patient_access', 'audit_events_patient_id', 'audit_events_pkey', 'audit_events_recorded_at', 'audit_events_type', 'audit_events_user_id']);
    });

  },
  { migrate: false },
);
