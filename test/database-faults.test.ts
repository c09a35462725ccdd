import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { pino } from 'pino';

import { buildApp } from '../src/app.js';
import { verifyAudit } from '../src/audit/verify.js';
import { TEST_FHIR_BASE, testConfig } from './helpers/app.js';
import { basicAuth, form, registerClient } from './helpers/clients.js';
import { OwnPostgres, postgresBinDir } from './helpers/own-postgres.js';
import { TcpForwarder } from './helpers/tcp-forwarder.js';

type Body = Record<string, unknown>;

const bin = postgresBinDir();
const ADMIN_TOKEN = randomBytes(32).toString('base64url');
const SECRET = randomBytes(32).toString('base64url');
const CLIENT = { client_id: 'backend', grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'client_secret_basic', client_secret: SECRET, scope: 'system/Patient.rs' };
const BROWSER_CLIENT = { client_id: 'browser-app', token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], response_types: ['code'], redirect_uris: ['https://app.example/callback'], scope: 'openid launch/patient patient/*.rs' };

/** Waits for a condition by polling; fails the test with `what` when it does not hold within `ms`. */
async function until(what: string, condition: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

interface Outcome {
  readonly status: number;
  readonly body: Body;
  readonly retryAfter: string | undefined;
  /** When the answer came, in wall-clock milliseconds (to compare with Postgres' log). */
  readonly at: number;
}

/**
 * A bounded load of client_credentials token requests from a few concurrent clients, which back off a
 * little on 503 as Retry-After asks.
 */
class TokenLoad {
  readonly outcomes: Outcome[] = [];
  #stop = false;
  readonly #workers: Promise<void>[];

  constructor(app: FastifyInstance, concurrency: number, max: number) {
    this.#workers = Array.from({ length: concurrency }, async () => {
      while (!this.#stop && this.outcomes.length < max) {
        const res = await tokenRequest(app);
        this.outcomes.push({ status: res.statusCode, body: res.json<Body>(), retryAfter: res.headers['retry-after'], at: Date.now() });
        if (res.statusCode !== 200) await sleep(25);
      }
    });
  }

  count(status: number, from = 0): number {
    return this.outcomes.slice(from).filter((o) => o.status === status).length;
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await Promise.all(this.#workers);
  }
}

const tokenRequest = (app: FastifyInstance) =>
  app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(CLIENT.client_id, SECRET) }, payload: form({ grant_type: 'client_credentials', scope: 'system/Patient.rs' }) });

const authorizeUrl = `/auth?${form({ client_id: BROWSER_CLIENT.client_id, response_type: 'code', redirect_uri: BROWSER_CLIENT.redirect_uris[0]!, scope: 'openid launch/patient', aud: TEST_FHIR_BASE, state: 'xyz', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' })}`;
const UNAVAILABLE = { error: 'temporarily_unavailable', error_description: 'the service is temporarily unavailable; try again shortly' };

describe('Postgres faults (a cluster of our own, crashed with kill -9)', { skip: bin ? false : 'no Postgres binaries found (set POSTGRES_BIN_DIR)' }, () => {
  let own: OwnPostgres | undefined;
  const cluster = (): OwnPostgres => own!;
  before(async () => {
    own = await OwnPostgres.create(bin!);
    await own.start();
  });
  after(async () => {
    await own?.destroy();
  });

  const env = () => ({ DATABASE_URL: cluster().url, DATABASE_POOL_MAX: '4', ADMIN_TOKEN, CLIENT_CACHE_SECONDS: '60' });

  it('under load: 503 temporarily_unavailable while it is down (never 500, no crash), back without a restart, no answered token lost', { timeout: 60_000 }, async (t) => {
    const lines: Body[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line) as Body) });
    // Background jobs every second, to see them meet the outage and carry on.
    const app = await buildApp(testConfig({ ...env(), KEY_REFRESH_SECONDS: '1', PURGE_INTERVAL_SECONDS: '1' }), { logger });
    await app.ready();
    try {
      await registerClient(app, CLIENT);
      await registerClient(app, BROWSER_CLIENT);
      const load = new TokenLoad(app, 4, 20_000);
      try {
        await until('tokens issued before the crash', () => load.count(200) >= 50);
        const signIn = await app.inject({ method: 'GET', url: authorizeUrl });
        assert.equal(signIn.statusCode, 303, 'the browser app is known (and cached) before the crash');

        await cluster().kill9();
        const killedAt = load.outcomes.length;
        await until('a token request answered 503 after the crash', () => load.count(503, killedAt) >= 5);

        const ready = await app.inject({ method: 'GET', url: '/readyz' });
        assert.equal(ready.statusCode, 503);
        assert.deepEqual(ready.json(), { status: 'not_ready', database: 'postgres', reason: 'database unreachable: connection refused' });

        const introspection = await app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(CLIENT.client_id, SECRET) }, payload: form({ token: 'anything' }) });
        assert.equal(introspection.statusCode, 503);
        assert.deepEqual(introspection.json(), UNAVAILABLE);
        assert.equal(introspection.headers['retry-after'], '5');

        // RFC 6749 §4.1.2.1: the client is known (from this process's cache) and the redirect URI is
        // registered, so the error goes back to the app, with its state.
        const authorize = await app.inject({ method: 'GET', url: authorizeUrl });
        assert.equal(authorize.statusCode, 303, authorize.body);
        const location = new URL(String(authorize.headers.location));
        assert.equal(`${location.origin}${location.pathname}`, BROWSER_CLIENT.redirect_uris[0]);
        assert.equal(location.searchParams.get('error'), 'temporarily_unavailable');
        assert.equal(location.searchParams.get('state'), 'xyz');

        // An unknown client cannot be redirected to: a page for the person.
        const page = await app.inject({ method: 'GET', url: '/auth?client_id=nobody&response_type=code&scope=openid', headers: { accept: 'text/html' } });
        assert.equal(page.statusCode, 503);
        assert.match(page.body, /<code>temporarily_unavailable<\/code>/);

        const admin = await app.inject({ method: 'GET', url: '/admin/api/clients', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
        assert.equal(admin.statusCode, 503);
        assert.deepEqual(admin.json(), UNAVAILABLE);
        assert.equal(admin.headers['retry-after'], '5');

        await until('the background jobs meeting the outage', () => lines.some((l) => l.msg === 'key refresh skipped: database unavailable'));

        const restartedAt = load.outcomes.length;
        const restarting = Date.now();
        const started = cluster().start();
        await until('Postgres accepting connections again', () => cluster().accepts());
        await started;
        const first = await tokenRequest(app);
        assert.equal(first.statusCode, 200, `the first request once Postgres accepts connections again: ${first.body}`);
        const firstAt = Math.min(Date.now(), ...load.outcomes.slice(restartedAt).filter((o) => o.status === 200).map((o) => o.at));
        await until('tokens from the load after the restart', () => load.count(200, restartedAt) >= 20);
        const readyAgain = await app.inject({ method: 'GET', url: '/readyz' });
        assert.equal(readyAgain.statusCode, 200);
        const returned = cluster().readyAt();
        t.diagnostic(`recovery: first token ${firstAt - returned} ms after Postgres logged it was ready again (${firstAt - restarting} ms after its restart began, crash recovery included)`);
      } finally {
        await load.stop();
      }

      const statuses = new Set(load.outcomes.map((o) => o.status));
      assert.deepEqual([...statuses].sort(), [200, 503], 'only tokens and 503s, never a 500');
      for (const o of load.outcomes.filter((o) => o.status === 503)) {
        assert.deepEqual(o.body, UNAVAILABLE);
        assert.equal(o.retryAfter, '5');
      }

      const issued = load.outcomes.filter((o) => o.status === 200).map((o) => o.body.access_token as string);
      let lost = 0;
      for (const token of issued) {
        const res = await app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(CLIENT.client_id, SECRET) }, payload: form({ token }) });
        assert.equal(res.statusCode, 200);
        if (res.json<Body>().active !== true) lost++;
      }
      t.diagnostic(`tokens: ${issued.length} answered 200, ${lost} of them lost; ${load.count(503)} requests answered 503 while Postgres was down`);
      assert.equal(lost, 0, 'every token answered 200 is still active after the crash');

      assert.deepEqual(lines.filter((l) => l.level !== 'warn' && l.level !== 40), [], 'nothing worse than a warning was logged');
      const audit = await verifyAudit(app.runtime.database.db, app.runtime.box);
      assert.equal(audit.ok, true, `audit chain: ${JSON.stringify(audit.brokenAt)}`);
    } finally {
      await app.close();
    }
  });

  it('a frozen Postgres (as in a network partition): /readyz says so within its timeout, requests get 503 once the query or connect timeout passes, and are served again once it answers', { timeout: 60_000 }, async () => {
    const app = await buildApp(testConfig({ ...env(), DATABASE_CONNECT_TIMEOUT_SECONDS: '2', DATABASE_QUERY_TIMEOUT_SECONDS: '2' }), { background: false });
    try {
      await registerClient(app, CLIENT);
      assert.equal((await tokenRequest(app)).statusCode, 200);
      cluster().freeze();
      try {
        const ready = await app.inject({ method: 'GET', url: '/readyz' });
        assert.equal(ready.statusCode, 503);
        assert.deepEqual(ready.json(), { status: 'not_ready', database: 'postgres', reason: 'database unreachable: no answer within 2000 ms' });
        // The first on a pooled connection, which gets no answer; the second on a new one, which cannot connect.
        for (let i = 0; i < 2; i++) {
          const token = await tokenRequest(app);
          assert.equal(token.statusCode, 503);
          assert.deepEqual(token.json(), UNAVAILABLE);
        }
      } finally {
        cluster().thaw();
      }
      assert.equal((await tokenRequest(app)).statusCode, 200);
      assert.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200);
    } finally {
      await app.close();
    }
  });

  it('starts while Postgres is down, saying why, and is ready once Postgres is up', { timeout: 60_000 }, async () => {
    await cluster().stop();
    const lines: Body[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line) as Body) });
    const abort = new AbortController();
    const building = buildApp(testConfig(env()), { logger, background: false, signal: abort.signal });
    let app: FastifyInstance | undefined;
    try {
      await until('a log line saying why the start waits', () => lines.some((l) => l.msg === 'waiting for the database' && l.reason === 'connection refused'));
      await cluster().start();
      app = await building;
      const ready = await app.inject({ method: 'GET', url: '/readyz' });
      assert.equal(ready.statusCode, 200);
      assert.equal((await tokenRequest(app)).statusCode, 200);
    } finally {
      abort.abort();
      const built = app ?? (await building.catch(() => undefined));
      await built?.close();
    }
  });
});

describe('failover to a streaming replica (synchronous replication, the primary crashed under load)', { skip: bin ? false : 'no Postgres binaries found (set POSTGRES_BIN_DIR)' }, () => {
  let primary: OwnPostgres | undefined;
  let standby: OwnPostgres | undefined;
  let address: TcpForwarder | undefined;
  after(async () => {
    await address?.close();
    await standby?.destroy();
    await primary?.destroy();
  });

  it('503 temporarily_unavailable during the switch, tokens again from the promoted replica without a restart, none answered 200 lost', { timeout: 120_000 }, async (t) => {
    primary = await OwnPostgres.create(bin!);
    await primary.start();
    standby = await primary.replica();
    await standby.start();
    // Synchronous: a commit returns once the standby has it, so what was answered 200 survives the primary.
    const admin = new pg.Client({ connectionString: primary.url });
    await admin.connect();
    try {
      await admin.query(`alter system set synchronous_standby_names = '*'`);
      await admin.query('select pg_reload_conf()');
      await until('the standby streaming synchronously', async () => (await admin.query<{ sync_state: string }>('select sync_state from pg_stat_replication')).rows.some((r) => r.sync_state === 'sync'));
    } finally {
      await admin.end();
    }
    // The address the server knows, following the primary (a VIP, a DNS name or a pooler in production).
    address = await TcpForwarder.start(primary.port);

    const lines: Body[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line) as Body) });
    const app = await buildApp(testConfig({ DATABASE_URL: `postgres://postgres@127.0.0.1:${address.port}/postgres`, DATABASE_POOL_MAX: '4', ADMIN_TOKEN, DATABASE_CONNECT_TIMEOUT_SECONDS: '2' }), { logger });
    await app.ready();
    try {
      await registerClient(app, CLIENT);
      const load = new TokenLoad(app, 4, 20_000);
      let promotedAt = 0;
      let firstAt = 0;
      try {
        await until('tokens issued before the crash', () => load.count(200) >= 50);
        await primary.kill9();
        const killedAt = load.outcomes.length;
        await until('a token request answered 503 after the crash', () => load.count(503, killedAt) >= 5);
        assert.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 503);

        // What Patroni does: promote the standby, move the address.
        await standby.promote();
        promotedAt = Date.now();
        address.switchTo(standby.port);
        const switchedAt = load.outcomes.length;
        await until('tokens from the promoted replica', () => load.count(200, switchedAt) >= 20, 30_000);
        firstAt = load.outcomes.slice(switchedAt).find((o) => o.status === 200)!.at;
        assert.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200);
      } finally {
        await load.stop();
      }
      t.diagnostic(`failover: first token ${firstAt - promotedAt} ms after the replica was promoted`);

      const statuses = new Set(load.outcomes.map((o) => o.status));
      assert.deepEqual([...statuses].sort(), [200, 503], 'only tokens and 503s, never a 500');
      for (const o of load.outcomes.filter((o) => o.status === 503)) assert.deepEqual(o.body, UNAVAILABLE);

      const issued = load.outcomes.filter((o) => o.status === 200).map((o) => o.body.access_token as string);
      let lost = 0;
      for (const token of issued) {
        const res = await app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(CLIENT.client_id, SECRET) }, payload: form({ token }) });
        assert.equal(res.statusCode, 200);
        if (res.json<Body>().active !== true) lost++;
      }
      t.diagnostic(`tokens: ${issued.length} answered 200, ${lost} of them lost after the failover; ${load.count(503)} requests answered 503 during it`);
      assert.equal(lost, 0, 'every token answered 200 before the crash is active on the promoted replica');
      assert.deepEqual(lines.filter((l) => l.level !== 40), [], 'nothing worse than a warning was logged');
      const audit = await verifyAudit(app.runtime.database.db, app.runtime.box);
      assert.equal(audit.ok, true, `audit chain: ${JSON.stringify(audit.brokenAt)}`);
    } finally {
      await app.close();
    }
  });
});
