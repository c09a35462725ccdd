import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import { sql } from 'kysely';
import { pino } from 'pino';

import { openDatabase, type Database } from '../src/db/database.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { Statement } from '../src/db/statements.js';
import { testApp } from './helpers/app.js';
import { basicAuth, form, registerClient } from './helpers/clients.js';
import { adminQuery } from './helpers/databases.js';
import { pgbouncerMissing, startPgbouncer, type Pgbouncer } from './helpers/pgbouncer.js';

/**
 * The hot path's fixed statements (src/db/statements.ts) are prepared once per connection under a name
 * derived from their text; behind a pooler in transaction mode that does not keep them, the process notices
 * the first lost name and goes on unnamed. A direct connection is needed to see the names: CI runs the
 * suite through PgBouncer and names Postgres itself in TEST_DATABASE_DIRECT_URL.
 */
const directUrl = process.env.TEST_DATABASE_DIRECT_URL ?? process.env.TEST_DATABASE_URL;
const SECRET = randomBytes(32).toString('base64url');

function databaseUrl(base: string, name: string): string {
  const url = new URL(base);
  url.pathname = `/${name}`;
  return url.href;
}

interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly code?: string;
}

describe('prepared statements', { skip: directUrl ? false : 'needs TEST_DATABASE_URL (Postgres)' }, () => {
  const name = `smart_auth_test_${randomBytes(6).toString('hex')}`;

  before(async () => {
    await adminQuery(directUrl!, `create database ${name}`);
    const database = await openDatabase({ kind: 'postgres', url: databaseUrl(directUrl!, name) }, { poolMax: 1, preparedStatements: false });
    await migrateToLatest(database.db);
    await database.close();
  });
  after(() => adminQuery(directUrl!, `drop database if exists ${name} with (force)`));

  interface Prepared {
    readonly name: string;
    readonly generic_plans: number;
    readonly custom_plans: number;
  }

  /** Three client_credentials tokens and an introspection of each, on a connection of its own; the names it then holds. */
  async function namesAfterTokens(database: Database): Promise<string[]> {
    return (await preparedAfterTokens(database)).prepared.map((p) => p.name);
  }

  /** Statements of our own, fixed, so that they run where the fixed statements do (their own pool, when there is one). */
  const PREPARED = new Statement<Prepared>("select name, generic_plans::int, custom_plans::int from pg_prepared_statements where statement not like '%pg_prepared_statements%' order by name");
  const MODE = new Statement<{ plan_cache_mode: string }>('show plan_cache_mode');

  /**
   * The same, with how Postgres planned each named statement on the connection that ran them, its
   * plan_cache_mode, and that of the connection the other statements ran on.
   */
  async function preparedAfterTokens(database: Database): Promise<{ prepared: Prepared[]; mode: string; others: string }> {
    const app = await testApp(database, { CLIENT_CACHE_SECONDS: '30' });
    try {
      const clientId = `backend-${randomBytes(4).toString('hex')}`;
      await registerClient(app, { client_id: clientId, grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'client_secret_basic', client_secret: SECRET, scope: 'system/Patient.rs introspect' });
      for (let i = 0; i < 3; i++) {
        const res = await app.inject({ method: 'POST', url: '/token', headers: { authorization: basicAuth(clientId, SECRET), 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ grant_type: 'client_credentials', scope: 'system/Patient.rs' }) });
        assert.equal(res.statusCode, 200, res.body);
        const token = res.json<{ access_token: string }>().access_token;
        const introspected = await app.inject({ method: 'POST', url: '/introspect', headers: { authorization: basicAuth(clientId, SECRET), 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ token }) });
        assert.equal(introspected.statusCode, 200, introspected.body);
        assert.deepEqual({ active: introspected.json<{ active: boolean }>().active }, { active: true });
      }
      await app.runtime.audit.flush();
      // One connection in each pool: the one that ran every statement above of its kind.
      const { rows } = await PREPARED.execute(database.db, []);
      const mode = (await MODE.execute(database.db, [])).rows[0]!.plan_cache_mode;
      const others = (await sql<{ plan_cache_mode: string }>`select current_setting('plan_cache_mode') as plan_cache_mode`.execute(database.db)).rows[0]!.plan_cache_mode;
      return { prepared: rows, mode, others };
    } finally {
      await app.close();
    }
  }

  it('a direct connection prepares the token write (with its audit event) and the token lookup once, by name, and plans them once, on connections of their own', async () => {
    const database = await openDatabase({ kind: 'postgres', url: databaseUrl(directUrl!, name) }, { poolMax: 1 });
    try {
      const { prepared, mode, others } = await preparedAfterTokens(database);
      const names = prepared.map((p) => p.name);
      assert.ok(names.length >= 2, `prepared: ${names.join(', ') || 'none'}`);
      assert.ok(names.every((n) => /^sas_[\w-]{20}$/.test(n)), names.join(', '));
      assert.equal(mode, 'force_generic_plan');
      // Three tokens and three introspections: each statement ran more than once, and was never planned
      // for the values at hand (Postgres's default would have, at each of the first five executions at least).
      assert.ok(prepared.some((p) => p.generic_plans >= 3), JSON.stringify(prepared));
      assert.deepEqual(prepared.filter((p) => p.custom_plans > 0), []);
      // Every other statement is planned as Postgres sees fit, with its values.
      assert.equal(others, 'auto');
    } finally {
      await database.close();
    }
  });

  it('DATABASE_GENERIC_PLANS=false: prepared by name, planned by Postgres as it sees fit', async () => {
    const database = await openDatabase({ kind: 'postgres', url: databaseUrl(directUrl!, name) }, { poolMax: 1, genericPlans: false });
    try {
      const { prepared, mode, others } = await preparedAfterTokens(database);
      assert.ok(prepared.length >= 2, JSON.stringify(prepared));
      assert.deepEqual([mode, others], ['auto', 'auto']);
      assert.ok(prepared.some((p) => p.custom_plans >= 3), JSON.stringify(prepared));
    } finally {
      await database.close();
    }
  });

  it('DATABASE_PREPARED_STATEMENTS=false: nothing is prepared, and the plan cache mode is left alone', async () => {
    const database = await openDatabase({ kind: 'postgres', url: databaseUrl(directUrl!, name) }, { poolMax: 1, preparedStatements: false });
    try {
      assert.deepEqual(await preparedAfterTokens(database), { prepared: [], mode: 'auto', others: 'auto' });
    } finally {
      await database.close();
    }
  });

  describe('behind PgBouncer in transaction mode, which does not keep them', { skip: pgbouncerMissing() ?? false }, () => {
    let pooler: Pgbouncer;
    before(async () => {
      pooler = await startPgbouncer({ poolSize: 1 });
    });
    after(() => pooler.stop());

    it('the first lost name is noticed, that statement sent again unnamed, and every later one unnamed, with one warning', async () => {
      const lines: LogLine[] = [];
      const log = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line) as LogLine) });
      const database = await openDatabase({ kind: 'postgres', url: pooler.url(name) }, { poolMax: 2, log });
      const statement = new Statement<{ n: number }>('select $1::int + 1 as n');
      try {
        // Two client connections at once (of the fixed statements' pool), one server connection: the second's
        // Parse meets the first's name there.
        const before = { ...database.statementCounts?.() };
        const answers = await Promise.all([1, 2].map((n) => statement.execute(database.db, [n])));
        assert.deepEqual(answers.map((a) => a.rows), [[{ n: 2 }], [{ n: 3 }]]);
        assert.deepEqual((await statement.execute(database.db, [3])).rows, [{ n: 4 }]);
        // Counted as they went: of the two at once, one ran by name and the other, which met that name, was sent
        // again unnamed; the third went unnamed.
        const counts = database.statementCounts?.();
        assert.deepEqual({ statements: (counts?.statements ?? 0) - (before.statements ?? 0), unprepared: (counts?.unprepared ?? 0) - (before.unprepared ?? 0) }, { statements: 3, unprepared: 2 });
        // And the server's own statements work through the pooler from then on.
        await namesAfterTokens(database);
        const warnings = lines.filter((l) => l.msg.startsWith('the database connection lost a prepared statement'));
        assert.equal(warnings.length, 1, JSON.stringify(lines));
        assert.ok(warnings[0]!.code === '42P05' || warnings[0]!.code === '26000', JSON.stringify(warnings[0]));
      } finally {
        await database.close();
      }
    });
  });
});
