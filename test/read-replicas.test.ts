import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import type { FastifyInstance } from 'fastify';
import pg from 'pg';

import { buildApp } from '../src/app.js';
import { WriteClock } from '../src/db/write-clock.js';
import { minPublishedSeconds } from '../src/maintenance.js';
import { TEST_ADMIN_TOKEN, TEST_FHIR_BASE, testConfig } from './helpers/app.js';
import { basicAuth, createClient, form } from './helpers/clients.js';
import { callback, consent, exchange, login, pickPatient, REDIRECT_URI, startAuthorization, title, tokenRequest } from './helpers/flow.js';
import { OwnPostgres, postgresBinDir } from './helpers/own-postgres.js';

type Body = Record<string, unknown>;

const bin = postgresBinDir();
const skip = !process.env.TEST_DATABASE_URL
  ? 'TEST_DATABASE_URL is not set: the read-replica tests run with the Postgres half of the suite'
  : !bin
    ? 'no Postgres binaries found (set POSTGRES_BIN_DIR)'
    : false;

const METRICS_TOKEN = 'metrics-token-0123456789abcdefghijklmnop';
const BACKEND = { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'system/Patient.rs' };
const PATIENT_APP = { client_id: 'patient-app', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] };
/** Whether one of `statements` names `table`. */
const touches = (statements: readonly string[], table: string): boolean => statements.some((s) => s.split(/[ +]/).includes(table));
/** The lag monitor's own statements, which run every second on both sides. */
const MONITOR = /pg_current_wal_lsn|pg_last_wal_replay_lsn/;

async function query(url: string, ...statements: string[]): Promise<pg.QueryResult[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const results: pg.QueryResult[] = [];
    for (const text of statements) results.push(await client.query(text));
    return results;
  } finally {
    await client.end();
  }
}

async function until(what: string, condition: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/**
 * What the server's connections ran on one cluster, read from the cluster's own log (log_statement = all,
 * the application name in each line): `verb table+table…` per statement (every table it names), the
 * monitor's left out.
 */
class StatementLog {
  readonly #file: string;
  #offset = 0;
  /** Everything the server ran on this cluster during the test. */
  readonly all: string[] = [];

  constructor(cluster: OwnPostgres) {
    this.#file = cluster.logFile;
  }

  mark(): void {
    this.#offset = statSync(this.#file).size;
  }

  /** The server's statements since the last mark. */
  since(): string[] {
    const text = readFileSync(this.#file).subarray(this.#offset).toString('utf8');
    // A statement over several lines goes on in lines without the prefix.
    const statements: string[] = [];
    let current: string[] | undefined;
    for (const line of text.split('\n')) {
      if (/^\d{4}-\d{2}-\d{2} /.test(line)) {
        const match = /^\S+ \S+ UTC \[\d+\] smart-auth-server(?:-replica)?: LOG: {2}(?:statement|execute [^:]*): (.*)$/.exec(line);
        current = match ? [match[1]!] : undefined;
        if (current) statements.push('');
      } else if (current) {
        current.push(line);
      }
      if (current) statements[statements.length - 1] = current.join(' ');
    }
    const found = statements
      .filter((statement) => !MONITOR.test(statement))
      .map((statement) => {
        const verb = statement.trim().split(/\s+/)[0]!.toLowerCase();
        const tables = [...new Set([...statement.matchAll(/\b(?:from|join|into|update)\s+"?(\w+)"?/g)].map((m) => m[1]!))].filter((name) => name !== 'lateral');
        return `${verb} ${tables.join('+') || '-'}`;
      });
    this.all.push(...found);
    return found;
  }
}

describe("this process's writes, as the primary's connections commit them (WriteClock)", () => {
  it('a statement outside a transaction at once; inside one at its commit, never when rolled back; reads never', () => {
    const clock = new WriteClock();
    const first = clock.session();
    first.executed('select * from "clients" where "client_id" = $1 for update');
    first.executed('insert into "audit_events" ("id") values ($1) on conflict do update set "id" = excluded."id"');
    assert.equal(clock.lastWrite(['clients']), -Infinity, 'a read, even one that locks');
    const audited = clock.lastWrite(['audit_events']);
    assert.ok(audited > -Infinity);

    first.executed('begin');
    first.executed('update "clients" set "status" = $1 where "client_id" = $2');
    first.executed('delete\nfrom users where id = $1');
    assert.equal(clock.lastWrite(['clients', 'users']), -Infinity, 'not committed yet');
    first.executed('commit');
    const committed = clock.lastWrite(['clients']);
    assert.ok(committed >= audited);
    assert.equal(clock.lastWrite(['users']), committed);

    const second = clock.session();
    second.executed('start transaction isolation level serializable');
    second.executed('insert into "patients" ("id") values ($1)');
    second.executed('rollback');
    second.executed('begin');
    second.executed('insert into "encounters" ("id") values ($1)');
    second.released();
    assert.equal(clock.lastWrite(['patients', 'encounters']), -Infinity, 'rolled back, or released without a commit');
  });
});

describe('key publication with a read replica', () => {
  it('a next key is published for the maximum replica lag longer before it may sign', () => {
    const postgres = { DATABASE_URL: 'postgres://db/x', KEY_REFRESH_SECONDS: '60' };
    assert.equal(minPublishedSeconds(testConfig(postgres)), 60 + 300);
    assert.equal(minPublishedSeconds(testConfig({ ...postgres, DATABASE_REPLICA_URL: 'postgres://standby/x', DATABASE_REPLICA_MAX_LAG_MS: '4500' })), 60 + 5 + 300);
  });
});

describe('read replicas (a primary and a streaming standby of our own)', { skip }, () => {
  let primary: OwnPostgres | undefined;
  let standby: OwnPostgres | undefined;
  let app: FastifyInstance | undefined;
  /** Another server process on the primary alone: its writes are not this process's own. */
  let other: FastifyInstance | undefined;
  let onPrimary: StatementLog;
  let onReplica: StatementLog;
  const server = (): FastifyInstance => app!;

  before(async () => {
    primary = await OwnPostgres.create(bin!);
    await primary.start();
    // Copied to the standby by pg_basebackup: every statement logged, with the connection's application name.
    await query(primary.url, `alter system set log_statement = 'all'`, `alter system set log_line_prefix = '%m [%p] %a: '`, 'select pg_reload_conf()');
    standby = await primary.replica();
    await standby.start();
    onPrimary = new StatementLog(primary);
    onReplica = new StatementLog(standby);
    app = await buildApp(
      testConfig({ DATABASE_URL: primary.url, DATABASE_REPLICA_URL: standby.url, DATABASE_REPLICA_MAX_LAG_MS: '2000', ADMIN_TOKEN: TEST_ADMIN_TOKEN, METRICS_TOKEN, SANDBOX: 'true', SEED_DEMO: 'true', DATABASE_POOL_MAX: '4' }),
      { background: false },
    );
    await app.ready();
    other = await buildApp(testConfig({ DATABASE_URL: primary.url, ADMIN_TOKEN: TEST_ADMIN_TOKEN, DATABASE_POOL_MAX: '2' }), { background: false });
    await other.ready();
    await until('the replica in use', async () => (await readiness()).replica?.state === 'in_use');
  });

  after(async () => {
    await app?.close();
    await other?.close();
    await standby?.destroy();
    await primary?.destroy();
  });

  async function readiness(): Promise<{ status: string; replica?: { state: string; lag_ms?: number } }> {
    const res = await server().inject({ method: 'GET', url: '/readyz' });
    assert.equal(res.statusCode, 200, 'a replica never makes the server unready');
    return res.json();
  }

  /** Runs `request` and returns what each side ran for it, once the replica has replayed this process's writes. */
  async function measured<T>(request: () => Promise<T>): Promise<{ result: T; primary: string[]; replica: string[] }> {
    server().runtime.clients.clear();
    // Audit events are written in batches after their requests answer: those of earlier requests go first.
    await server().runtime.audit.flush();
    onPrimary.mark();
    onReplica.mark();
    const result = await request();
    return { result, primary: onPrimary.since(), replica: onReplica.since() };
  }

  const clientCredentials = (clientId: string, secret: string) => tokenRequest(server(), { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, { authorization: basicAuth(clientId, secret) });
  const introspect = (clientId: string, secret: string, token: string) =>
    server().inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(clientId, secret) }, payload: form({ token }) });

  it('the lag-tolerant lookups read the replica; codes, tokens, refresh, introspection, the gateway door and sign-in read the primary', { timeout: 60_000 }, async (t) => {
    const backend = await createClient(server(), { ...BACKEND, client_id: 'backend' });
    await createClient(server(), { ...PATIENT_APP, client_name: 'Patient App', scope: 'openid fhirUser launch/patient patient/Patient.rs offline_access' });
    // This process wrote the clients: their reads stay on the primary until the replica has replayed that.
    const first = await measured(() => clientCredentials('backend', backend.client_secret!));
    assert.equal(first.result.statusCode, 200, first.result.body);
    assert.ok(first.primary.includes('select clients'), `own write read back from the primary: ${first.primary.join(', ')}`);
    assert.deepEqual(first.replica, []);
    await until('the replica current past the clients written', async () => (await measured(() => clientCredentials('backend', backend.client_secret!))).replica.includes('select clients'));

    const token = await measured(() => clientCredentials('backend', backend.client_secret!));
    assert.equal(token.result.statusCode, 200, token.result.body);
    assert.deepEqual(token.replica, ['select clients'], 'the client registration');
    assert.ok(touches(token.primary, 'oidc_payloads'), token.primary.join(', '));
    assert.ok(!token.primary.includes('select clients'));
    const accessToken = token.result.json<Body>().access_token as string;

    // RFC 7662: only the caller's registration comes from the replica; the token itself from the primary.
    const introspection = await measured(() => introspect('backend', backend.client_secret!, accessToken));
    assert.equal(introspection.result.statusCode, 200);
    assert.equal(introspection.result.json<Body>().active, true);
    assert.deepEqual(introspection.replica, ['select clients']);
    assert.ok(touches(introspection.primary, 'oidc_payloads'), introspection.primary.join(', '));

    const fhir = await measured(() => server().inject({ method: 'GET', url: `${new URL(TEST_FHIR_BASE).pathname}/Patient/demo-henry-nguyen`, headers: { authorization: `Bearer ${accessToken}` } }));
    assert.equal(fhir.result.statusCode, 200, fhir.result.body);
    assert.equal(fhir.result.json<Body>().id, 'demo-henry-nguyen');
    assert.deepEqual(fhir.replica, [], 'the gateway door checks the token on the primary');
    assert.ok(touches(fhir.primary, 'oidc_payloads'), fhir.primary.join(', '));

    const keys = await measured(() => server().runtime.host.refresh());
    assert.equal(keys.result, false, 'the key set has not changed');
    assert.deepEqual(keys.replica.sort(), ['select cookie_keys', 'select signing_keys']);
    assert.deepEqual(keys.primary, []);

    const launcher = await measured(() => server().inject({ method: 'GET', url: '/launcher?q=nguyen' }));
    assert.equal(launcher.result.statusCode, 200);
    assert.match(launcher.result.body, /Henry Minh Nguyen/);
    assert.deepEqual(launcher.replica, ['select patients', 'select encounters', 'select clients', 'select users']);
    assert.deepEqual(launcher.primary, []);

    // A standalone launch: sign-in and its throttle, the code and the refresh token on the primary; the
    // picker's directory search on the replica.
    const flow = await startAuthorization(server(), { client_id: 'patient-app', scope: 'openid fhirUser launch/patient patient/Patient.rs offline_access' });
    const signIn = await measured(() => login(flow, 'clinician', 'clinician-demo'));
    assert.equal(title(signIn.result), 'Allow Patient App to access the record of the patient you choose?');
    assert.ok(touches(signIn.primary, 'login_throttle') && touches(signIn.primary, 'users'), signIn.primary.join(', '));
    assert.deepEqual([...signIn.replica].sort(), ['select clients', 'select patients'], "the app's registration and the picker's directory search");
    await pickPatient(flow, 'demo-henry-nguyen');
    await consent(flow);
    assert.ok(callback(flow).code);
    const code = await measured(() => exchange(server(), flow));
    assert.equal(code.result.statusCode, 200, code.result.body);
    assert.equal(code.result.json<Body>().patient, 'demo-henry-nguyen');
    assert.deepEqual(code.replica, ['select clients']);
    // The code marked used on the primary, by the statement that writes the tokens with the audit event.
    assert.ok(touches(code.primary, 'oidc_payloads') && code.primary.some((statement) => statement.startsWith('with ') && touches([statement], 'consumed')), code.primary.join(', '));
    const refresh = await measured(() => tokenRequest(server(), { grant_type: 'refresh_token', client_id: 'patient-app', refresh_token: code.result.json<Body>().refresh_token as string }));
    assert.equal(refresh.result.statusCode, 200, refresh.result.body);
    assert.deepEqual(refresh.replica, ['select clients']);
    assert.ok(touches(refresh.primary, 'oidc_payloads'), refresh.primary.join(', '));

    for (const table of ['oidc_payloads', 'login_throttle', 'launches', 'grant_contexts', 'audit_events']) {
      assert.ok(!touches(onReplica.all, table), `nothing read ${table} from the replica`);
    }
    const ready = await readiness();
    assert.equal(ready.replica?.state, 'in_use');
    t.diagnostic(`replica lag measured while in use: ${ready.replica.lag_ms} ms`);

    const metrics = await server().inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
    assert.equal(metrics.statusCode, 200);
    assert.match(metrics.body, /^smart_auth_db_replica_in_use 1$/m);
    assert.match(metrics.body, /^smart_auth_db_replica_lag_seconds \d+(\.\d+)?$/m);
  });

  it('a lagging replica (replay paused): every read goes to the primary, and a client created by another process is found at once', { timeout: 60_000 }, async (t) => {
    await query(standby!.url, 'select pg_wal_replay_pause()');
    try {
      // Another process writes: the primary moves on, the replica does not.
      const late = await createClient(other!, { ...BACKEND, client_id: 'late-backend' });
      // The state is judged at each read, the lag figure at each measurement: wait for both to say so.
      await until('the replica reported lagging', async () => {
        const replica = (await readiness()).replica;
        return replica?.state === 'lagging' && (replica.lag_ms ?? 0) > 2000;
      });
      const ready = await readiness();
      assert.ok((ready.replica?.lag_ms ?? 0) > 2000, `lag ${ready.replica?.lag_ms} ms`);
      t.diagnostic(`replica lag measured with replay paused: ${ready.replica?.lag_ms} ms`);

      const token = await measured(() => clientCredentials('late-backend', late.client_secret!));
      assert.equal(token.result.statusCode, 200, token.result.body);
      assert.equal(token.result.json<Body>().token_type, 'Bearer');
      assert.deepEqual(token.replica, []);
      assert.ok(token.primary.includes('select clients'));
      const launcher = await measured(() => server().inject({ method: 'GET', url: '/launcher' }));
      assert.equal(launcher.result.statusCode, 200);
      assert.deepEqual(launcher.replica, []);

      const metrics = await server().inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
      assert.match(metrics.body, /^smart_auth_db_replica_in_use 0$/m);
    } finally {
      await query(standby!.url, 'select pg_wal_replay_resume()');
    }
    await until('the replica in use again', async () => (await readiness()).replica?.state === 'in_use');
    await until('the replica serving client registrations again', async () => (await measured(() => clientCredentials('late-backend', 'wrong'))).replica.includes('select clients'));
  });

  it("this process's own change is read back from the primary while the replica has not replayed it", { timeout: 60_000 }, async () => {
    assert.equal((await readiness()).replica?.state, 'in_use');
    await query(standby!.url, 'select pg_wal_replay_pause()');
    try {
      const created = await createClient(server(), { ...BACKEND, client_id: 'own-backend' });
      assert.equal((await readiness()).replica?.state, 'in_use', 'within the maximum lag: the replica is still read');
      const token = await measured(() => clientCredentials('own-backend', created.client_secret!));
      assert.equal(token.result.statusCode, 200, token.result.body);
      assert.deepEqual(token.replica, []);
      assert.ok(token.primary.includes('select clients'));
    } finally {
      await query(standby!.url, 'select pg_wal_replay_resume()');
    }
  });

  it('the replica stopped: requests still answer 200 from the primary, /readyz says so; back, it is used again', { timeout: 60_000 }, async () => {
    const backend = await createClient(other!, { ...BACKEND, client_id: 'stop-backend' });
    await until('the replica serving the new client', async () => (await measured(() => clientCredentials('stop-backend', backend.client_secret!))).replica.includes('select clients'));

    await standby!.stop();
    // The replica's pooled connections are dead: the first reads fail there and run again on the primary.
    for (let i = 0; i < 3; i++) {
      const token = await measured(() => clientCredentials('stop-backend', backend.client_secret!));
      assert.equal(token.result.statusCode, 200, token.result.body);
      assert.equal(token.result.json<Body>().token_type, 'Bearer');
      const launcher = await server().inject({ method: 'GET', url: '/launcher' });
      assert.equal(launcher.statusCode, 200);
      assert.equal((await server().runtime.host.refresh()), false);
    }
    const ready = await readiness();
    assert.deepEqual({ status: ready.status, state: ready.replica?.state }, { status: 'ready', state: 'unavailable' });

    await standby!.start();
    await until('the replica in use again', async () => (await readiness()).replica?.state === 'in_use');
    await until('the replica serving client registrations again', async () => (await measured(() => clientCredentials('stop-backend', backend.client_secret!))).replica.includes('select clients'));
    const token = await measured(() => clientCredentials('stop-backend', backend.client_secret!));
    assert.equal(token.result.statusCode, 200);
    assert.deepEqual(token.replica, ['select clients']);
  });
});
