import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { action, field, hiddenFields, HttpBrowser, REDIRECT_URI, standaloneLaunch } from '../bench/lib/flows.js';
import { freePort } from './helpers/app.js';
import { basicAuth, form } from './helpers/clients.js';
import { createTestDatabase, type TestDatabase } from './helpers/databases.js';

/**
 * Three server processes (real ones: `smart-auth serve`) on one Postgres behind a round-robin reverse proxy,
 * as behind any load balancer without sticky sessions: every request of a launch lands on the next process,
 * and what one process changes (keys, clients, revocation, the sign-in throttle) the others honour within
 * their documented bounds.
 */

type Json = Record<string, unknown>;
const ROOT = join(import.meta.dirname, '..');
const ADMIN_TOKEN = randomBytes(32).toString('base64url');
const PROCESSES = 3;

/** Round robin over the backends, counting what each served; `pin` sends everything to one. */
class RoundRobin {
  readonly served: number[];
  #next = 0;
  pinned: number | undefined;
  readonly #server: Server;

  constructor(readonly ports: readonly number[]) {
    this.served = ports.map(() => 0);
    this.#server = createServer((req, res) => {
      const i = this.pinned ?? this.#next++ % ports.length;
      this.served[i]!++;
      const upstream = httpRequest({ host: '127.0.0.1', port: ports[i], method: req.method, path: req.url, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      upstream.on('error', () => {
        res.writeHead(502).end();
      });
      req.pipe(upstream);
    });
  }

  listen(port: number): Promise<void> {
    return new Promise((resolve) => this.#server.listen(port, '127.0.0.1', resolve));
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }
}

async function until(what: string, condition: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

describe('three server processes behind a round-robin proxy, one Postgres', { skip: process.env.TEST_DATABASE_URL ? false : 'needs TEST_DATABASE_URL (Postgres)' }, () => {
  let database: TestDatabase;
  let proxy: RoundRobin;
  const children: ChildProcess[] = [];
  const outputs: string[][] = [];
  let issuer: string;
  const backends: string[] = [];
  /** The launch's refresh token, rotated at each use (openid in scope: each refresh brings an id_token). */
  let refresh = '';
  /** The backend client's secret, as the admin API gave it. */
  let secret = '';

  before(async () => {
    database = await createTestDatabase('postgres', { migrate: false });
    const ports = await Promise.all(Array.from({ length: PROCESSES }, () => freePort()));
    const proxyPort = await freePort();
    issuer = `http://127.0.0.1:${proxyPort}`;
    proxy = new RoundRobin(ports);
    await proxy.listen(proxyPort);
    // Started together on an empty database: the migrations are applied once, under their lock.
    for (const port of ports) {
      const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'main.ts'), 'serve'], {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH ?? '',
          HOME: process.env.HOME ?? '',
          DATABASE_URL: database.url!,
          ISSUER: issuer,
          FHIR_BASE_URLS: `${issuer}/fhir`,
          HOST: '127.0.0.1',
          PORT: String(port),
          SECRET_KEY: 'c'.repeat(64),
          ADMIN_TOKEN,
          SANDBOX: 'false',
          SEED_DEMO: 'true',
          REGISTRATION: 'off',
          LOG_LEVEL: 'warn',
          KEY_REFRESH_SECONDS: '1',
          CLIENT_CACHE_SECONDS: '1',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      // What each process printed, kept to tell why one never became ready.
      const output: string[] = [];
      const keep = (chunk: Buffer): void => {
        output.push(chunk.toString());
        if (output.length > 200) output.shift();
      };
      child.stdout.on('data', keep);
      child.stderr.on('data', keep);
      outputs.push(output);
      children.push(child);
      backends.push(`http://127.0.0.1:${port}`);
    }
    for (const [i, backend] of backends.entries()) {
      const child = children[i]!;
      try {
        await until(`${backend} ready`, async () => {
          if (child.exitCode !== null) throw new Error(`${backend} exited with ${child.exitCode}`);
          return (await fetch(`${backend}/readyz`).catch(() => undefined))?.status === 200;
        }, 120_000);
      } catch (error) {
        throw new Error(`${(error as Error).message}; it printed:\n${outputs[i]!.join('')}`, { cause: error });
      }
    }
  });

  after(async () => {
    for (const child of children) child.kill('SIGTERM');
    await Promise.all(children.map((child) => (child.exitCode === null ? new Promise((resolve) => child.once('exit', resolve)) : Promise.resolve())));
    await proxy.close();
    await database.drop();
  });

  const admin = async (method: string, path: string, body?: Json): Promise<Response> =>
    fetch(`${issuer}/admin/api${path}`, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
  const clientToken = (origin: string): Promise<Response> =>
    fetch(`${origin}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('backend', secret) }, body: form({ grant_type: 'client_credentials', scope: 'system/Patient.rs' }) });
  const introspect = async (origin: string, token: string): Promise<Json> => {
    const res = await fetch(`${origin}/introspect`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('backend', secret) }, body: form({ token }) });
    assert.equal(res.status, 200);
    return (await res.json()) as Json;
  };

  /** Refreshes at one process; the id_token's key id. */
  const refreshAt = async (backend: string): Promise<string> => {
    const res = await fetch(`${backend}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form({ grant_type: 'refresh_token', refresh_token: refresh, client_id: 'spread-app' }) });
    assert.equal(res.status, 200, await res.clone().text());
    const body = (await res.json()) as Json;
    refresh = body.refresh_token as string;
    const header = JSON.parse(Buffer.from(String(body.id_token).split('.')[0]!, 'base64url').toString()) as { kid: string };
    return header.kid;
  };

  it('a launch whose every request lands on the next process: sign-in, picker, consent and code exchange on different processes', async () => {
    const created = await admin('POST', '/clients', { client_id: 'spread-app', client_name: 'Spread', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'], scope: 'openid fhirUser launch/patient patient/*.rs offline_access' });
    assert.equal(created.status, 201, await created.text());
    const before = [...proxy.served];
    const token = await standaloneLaunch(new HttpBrowser(issuer), { clientId: 'spread-app', scope: 'openid fhirUser launch/patient patient/*.rs offline_access', fhirBase: `${issuer}/fhir`, username: 'clinician', password: 'clinician-demo', patient: 'demo-amy-shaw' });
    assert.equal(token.patient, 'demo-amy-shaw');
    assert.equal(token.token_type, 'Bearer');
    const served = proxy.served.map((n, i) => n - before[i]!);
    assert.ok(served.every((n) => n >= 2), `every process served part of the launch: ${served.join(', ')}`);
    // A patient's: the consent page, shown by one process, carries the record sealed; the next process opens it.
    const own = await standaloneLaunch(new HttpBrowser(issuer), { clientId: 'spread-app', scope: 'openid fhirUser launch/patient patient/*.rs', fhirBase: `${issuer}/fhir`, username: 'patient', password: 'patient-demo' });
    assert.equal(own.patient, 'demo-amy-shaw');

    // The refresh token works on each process in turn, rotating as it goes.
    refresh = token.refresh_token as string;
    for (const backend of backends) await refreshAt(backend);
  });

  it('a code is single-use across processes: the second exchange, on another process, is refused', async () => {
    const browser = new HttpBrowser(issuer);
    proxy.pinned = 0;
    try {
      const query = new URLSearchParams({ response_type: 'code', client_id: 'spread-app', redirect_uri: REDIRECT_URI, scope: 'launch/patient patient/*.rs', state: 's', aud: `${issuer}/fhir`, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' });
      let page = await browser.follow('GET', `/auth?${query.toString()}`);
      page = await browser.follow('POST', action(page.body, '/login'), { csrf: field(page.body, 'csrf'), username: 'clinician', password: 'clinician-demo' });
      // The picker asks for consent on the same page: the patient goes with the decision.
      const scopes = [...page.body.matchAll(/name="scope" value="([^"]*)" checked/g)].map((m) => m[1]!);
      page = await browser.follow('POST', action(page.body, '/consent'), { ...hiddenFields(page.body, '/consent'), patient: 'demo-amy-shaw', decision: 'approve', scope: scopes });
      const code = new URL(page.appUrl!).searchParams.get('code')!;
      const body = form({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, client_id: 'spread-app', code_verifier: 'dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk' });
      const first = await fetch(`${backends[1]}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
      assert.equal(first.status, 200, await first.clone().text());
      const second = await fetch(`${backends[2]}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
      assert.equal(second.status, 400);
      assert.equal(((await second.json()) as Json).error, 'invalid_grant');
    } finally {
      proxy.pinned = undefined;
    }
  });

  it('revocation on one process holds on every other at the next request', async () => {
    const created = await admin('POST', '/clients', { client_id: 'backend', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'system/Patient.rs' });
    assert.equal(created.status, 201, await created.clone().text());
    secret = ((await created.json()) as Json).client_secret as string;
    await until('the new client known everywhere', async () => (await Promise.all(backends.map(async (b) => (await clientToken(b)).status))).every((s) => s === 200));
    const res = await clientToken(backends[0]!);
    const token = ((await res.json()) as Json).access_token as string;
    for (const backend of backends) assert.equal((await introspect(backend, token)).active, true);
    const revoked = await fetch(`${backends[1]}/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('backend', secret) }, body: form({ token }) });
    assert.equal(revoked.status, 200);
    for (const backend of backends) assert.deepEqual(await introspect(backend, token), { active: false });
  });

  it('a key rotation on one process is served by all within KEY_REFRESH_SECONDS', async () => {
    const rotated = await fetch(`${backends[0]}/admin/api/keys/rotate`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ algs: ['RS256'], force: true }) });
    assert.equal(rotated.status, 200, await rotated.clone().text());
    const { rotated: [rotation] } = (await rotated.json()) as { rotated: { activated: string }[] };
    // Every process signs with the new key once it has re-read the key set (KEY_REFRESH_SECONDS=1).
    await until('every process signing with the new key', async () => {
      const kids: string[] = [];
      for (const backend of backends) kids.push(await refreshAt(backend));
      return kids.every((kid) => kid === rotation!.activated);
    }, 10_000);
  });

  it('a suspended client is refused by every process within CLIENT_CACHE_SECONDS', async () => {
    const suspended = await admin('PATCH', '/clients/backend', { status: 'suspended' });
    assert.equal(suspended.status, 200, await suspended.text());
    await until('every process refusing the suspended client', async () => (await Promise.all(backends.map(async (b) => (await clientToken(b)).status))).every((s) => s === 401), 5_000);
  });

  it('the sign-in throttle counts wrong passwords made on any process', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 7; i++) {
      const browser = new HttpBrowser(backends[i % PROCESSES]!);
      const query = new URLSearchParams({ response_type: 'code', client_id: 'spread-app', redirect_uri: REDIRECT_URI, scope: 'launch/patient patient/*.rs', state: 's', aud: `${issuer}/fhir`, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' });
      const page = await browser.follow('GET', `/auth?${query.toString()}`);
      const res = await browser.request('POST', action(page.body, '/login'), { csrf: field(page.body, 'csrf'), username: 'patient', password: `wrong-${i}` });
      statuses.push(res.status);
    }
    // Five wrong passwords per account at once (test/login-throttle.test.ts), wherever they were tried.
    assert.deepEqual(statuses, [401, 401, 401, 401, 401, 429, 429]);
  });
});
