import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { sql } from 'kysely';

import { openDatabase } from '../src/db/database.js';
import { migrateToLatest, pendingMigrations } from '../src/db/migrate.js';
import { migrations } from '../migrations/index.js';
import { createTestDatabase, describeEachDatabase, type TestDatabase } from './helpers/databases.js';
import { pgbouncerMissing, startPgbouncer, type Pgbouncer } from './helpers/pgbouncer.js';

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
      assert.deepEqual(audit.rows.map((r) => r.indexname), ['audit_events_client_id', 'audit_events_patient_access', 'audit_events_patient_id', 'audit_events_pkey', 'audit_events_recorded_at', 'audit_events_type', 'audit_events_user_id']);
    });

  },
  { migrate: false },
);

describe('migrations through PgBouncer in transaction mode', { skip: pgbouncerMissing() ?? false }, () => {
  let pooler: Pgbouncer;
  let target: TestDatabase;

  before(async () => {
    pooler = await startPgbouncer({ poolSize: 3 });
    target = await createTestDatabase('postgres', { migrate: false });
  });
  after(async () => {
    await target.drop();
    await pooler.stop();
  });

  // kysely's own lock, a session advisory lock, was released on another server connection than the one that
  // took it: the lock stayed held by a pooled connection, and the next server to start waited an hour.
  it('five servers starting at once: one applies the migrations, the others wait for it, and no lock is left held', { timeout: 60_000 }, async () => {
    const name = new URL(target.url!).pathname.slice(1);
    const servers = await Promise.all(Array.from({ length: 5 }, () => openDatabase({ kind: 'postgres', url: pooler.url(name) }, { poolMax: 2 })));
    try {
      const applied = await Promise.all(servers.map((server) => migrateToLatest(server.db)));
      assert.deepEqual(applied.map((names) => names.length).sort((a, b) => a - b), [0, 0, 0, 0, Object.keys(migrations).length]);
      // A restart, through the same pooled server connections, finds nothing to do and does not wait.
      assert.deepEqual(await Promise.all(servers.map((server) => migrateToLatest(server.db))), [[], [], [], [], []]);
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_locks where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database())`.execute(target.database.db);
      assert.deepEqual(rows, [{ n: 0 }]);
    } finally {
      await Promise.all(servers.map((server) => server.close()));
    }
  });

  it('a migration that fails leaves nothing applied and no lock held: the next start applies them all', { timeout: 60_000 }, async () => {
    const fresh = await createTestDatabase('postgres', { migrate: false });
    const freshName = new URL(fresh.url!).pathname.slice(1);
    const server = await openDatabase({ kind: 'postgres', url: pooler.url(freshName) }, { poolMax: 2 });
    try {
      // A table in the way of the first migration makes it fail, as a half-done manual change would.
      const first = Object.keys(migrations)[0]!;
      await sql`create table clients (id int)`.execute(fresh.database.db);
      await assert.rejects(migrateToLatest(server.db), (error: Error) => error.name === 'MigrationError' && error.message.startsWith(`migration ${first} failed`));
      assert.deepEqual(await pendingMigrations(fresh.database.db), Object.keys(migrations));
      await sql`drop table clients`.execute(fresh.database.db);
      assert.deepEqual(await migrateToLatest(server.db), Object.keys(migrations));
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_locks where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database())`.execute(fresh.database.db);
      assert.deepEqual(rows, [{ n: 0 }]);
    } finally {
      await server.close();
      await fresh.drop();
    }
  });
});
