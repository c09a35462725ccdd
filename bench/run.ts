/**
 * npm run bench — throughput, latency and memory of every hot endpoint of the built server, on Postgres and
 * on the embedded database, side by side with bare oidc-provider measured in the same run.
 * Options: --duration S (per run, default 3) --connections N (default 16) --runs N (default 3)
 *          --warmup S (unmeasured load before each scenario's runs on each server, default 2)
 *          --only a,b (scenario names) --no-pglite --no-growth --no-scaling --no-bare
 *          --observability (the Postgres scenarios without, with metrics and with traces, in turn)
 * Postgres: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres); a throw-away database
 * is created and dropped. Results: bench/results/<date>-<commit>.{json,md} and bench/results/latest.md.
 */
import { execSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import pg from 'pg';

import { PACKAGE_ROOT } from '../src/paths.js';
import { SecretBox } from '../src/security/secret-box.js';
import { CHALLENGE, HttpBrowser, mintCodes, REDIRECT_URI, standaloneLaunch, VERIFIER } from './lib/flows.js';
import { perOperation, serverLatency, snapshot, type Cost } from './lib/cost.js';
import { load, loadFlows, median, paced, type RequestSpec, type Run } from './lib/load.js';
import { startBare, startOurs, startUpstream, type ServerProcess } from './lib/servers.js';
import { bareSecretClients, basicAuthorization, form, FORM, SYSTEM_SCOPE } from './lib/requests.js';

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '3' },
    connections: { type: 'string', default: '16' },
    runs: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '2' },
    only: { type: 'string' },
    'no-pglite': { type: 'boolean' },
    'no-growth': { type: 'boolean' },
    'no-scaling': { type: 'boolean' },
    'no-bare': { type: 'boolean' },
    observability: { type: 'boolean' },
  },
});
const DURATION = Number(args.duration);
const CONNECTIONS = Number(args.connections);
const RUNS = Number(args.runs);
/**
 * Seconds of unmeasured load on each server before a scenario's measured runs: V8 compiles a path's hot
 * functions only after it has run them thousands of times, and until then a server runs at half speed or less
 * (three cold runs in a row measured ours at 2,050, 2,161 and 2,602 client_credentials/s, bare oidc-provider at
 * 4,189, 6,520 and 8,511). Without it the first run measures the compiler and the median mixes the two.
 */
const WARMUP = Number(args.warmup);
const ADMIN_TOKEN = randomBytes(32).toString('base64url');
/** Our server keeps metrics, as deployed: its statement and commit counters are read from /metrics. */
const METRICS_TOKEN = randomBytes(32).toString('base64url');
const SECRET_KEY = randomBytes(32).toString('hex');
const CLIENT_SECRET = randomBytes(32).toString('base64url');
const APP_SCOPE = 'openid fhirUser launch/patient patient/*.rs offline_access';
/**
 * One person per concurrent browser, as in real use: the sign-in throttle counts attempts on a user name
 * before checking them, so eight browsers signing in as one user at the same moment are slowed as a guesser.
 */
const PEOPLE = 8;
const PEOPLE_PASSWORD = 'bench-password';
const person = (role: 'patient' | 'clinician', n: number) => ({ username: `bench-${role}-${n % PEOPLE}`, password: PEOPLE_PASSWORD });
const started = Date.now();
const PACED_MAX = 3000;
/** The issue's p99 bound at 70 % of peak, in seconds: a boundary of the server's request histogram. */
const P99_TARGET_S = 0.025;
const log = (message: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${message}\n`);

interface Key {
  readonly alg: 'ES384' | 'RS384';
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly jwk: JWK;
}

async function key(alg: Key['alg']): Promise<Key> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const kid = `bench-${alg}`;
  return { alg, kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

/** Everything a target needs to be loaded: its URL and, for ours, the admin API. */
interface Target {
  readonly name: string;
  readonly column: 'bare' | 'bare-pg' | 'postgres' | 'pglite';
  readonly server: ServerProcess;
}

interface Scenario {
  readonly name: string;
  readonly description: string;
  readonly bare: boolean;
  /** A generator of single-use requests, sized for about `count` of them (or one flow per call). */
  readonly prepare?: (target: Target, count: number) => Promise<() => RequestSpec>;
  /** A flow for one worker (called once per worker); its result is called for each flow the worker runs. */
  readonly flow?: (target: Target) => () => Promise<unknown>;
  /** Single-use requests the pool must hold per second of load, on ours and on bare (refined by each run). */
  readonly poolGuess?: { readonly ours: number; readonly bare: number };
  /** A gateway scenario: the same request straight to the upstream FHIR server, measured next to it. */
  readonly direct?: () => RequestSpec;
}

/** Client secrets per server: ours generates them (shown once at creation); bare is given CLIENT_SECRET. */
const secrets = new Map<string, string>();
const basicAuth = (url: string, clientId: string) => basicAuthorization(clientId, secrets.get(`${url} ${clientId}`) ?? CLIENT_SECRET);

function cycle<T>(items: readonly T[]): () => T {
  let i = 0;
  return () => items[i++ % items.length]!;
}

/** Single-use items: after the pool runs dry the last one repeats, and the server's refusals show as errors. */
function drain<T>(items: T[]): () => T {
  let i = 0;
  return () => items[Math.min(i++, items.length - 1)]!;
}

async function assertions(k: Key, audience: string, count: number): Promise<string[]> {
  const now = Math.floor(Date.now() / 1000);
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    out.push(await new SignJWT({ iss: 'bench-jwt', sub: 'bench-jwt', aud: audience, jti: randomBytes(16).toString('base64url'), exp: now + 240 }).setProtectedHeader({ alg: k.alg, kid: k.kid, typ: 'JWT' }).sign(k.privateKey));
  }
  return out;
}

async function ccToken(url: string): Promise<string> {
  const res = await fetch(`${url}/token`, { method: 'POST', headers: { ...FORM, authorization: basicAuth(url, 'bench-basic') }, body: form({ grant_type: 'client_credentials', scope: SYSTEM_SCOPE }) });
  if (res.status !== 200) throw new Error(`client_credentials: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { access_token: string }).access_token;
}

/**
 * Codes or refresh tokens. On bare, by its preparation endpoint. On ours, through the real flow: browsers
 * signed in as patients get codes at the authorization endpoint, and refresh tokens are what their
 * exchange returns. That runs at the speed of whole authorizations, far below the exchange rate being
 * measured, so on Postgres a few dozen are made that way and the rest cloned from them in SQL: each clone
 * is a new grant (payload, launch context) and a new code or token bound to it, with fresh random ids,
 * exactly the rows the flow writes. (On the embedded database no second connection is possible: all are
 * made by the flow.)
 */
async function grants(target: Target, kind: 'codes' | 'refresh', count: number): Promise<string[]> {
  const url = target.server.url;
  if (target.column === 'bare' || target.column === 'bare-pg') {
    const res = await fetch(`${url}/__prepare?kind=${kind}&n=${count}&client=bench-app`);
    return (await res.json()) as string[];
  }
  const seeds = await realGrants(target, kind, target.column === 'postgres' ? Math.min(count, 32) : count);
  return target.column === 'postgres' && count > seeds.length ? [...seeds, ...(await cloneGrants(kind, seeds, Math.ceil((count - seeds.length) / seeds.length)))] : seeds;
}

async function cloneGrants(kind: 'codes' | 'refresh', seeds: readonly string[], copies: number): Promise<string[]> {
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  try {
    const model = kind === 'codes' ? 'AuthorizationCode' : 'RefreshToken';
    const columns = (await db.query<{ column_name: string }>(`select column_name from information_schema.columns where table_name = 'grant_contexts' and column_name <> 'grant_id'`)).rows.map((r) => `"${r.column_name}"`);
    // New values as oidc-provider makes them (43 base64url characters), stored as the server stores them: a
    // keyed hash under SECRET_KEY, the value itself nowhere.
    const box = new SecretBox(Buffer.from(SECRET_KEY, 'hex'));
    const plan = seeds.flatMap((seed) => Array.from({ length: copies }, () => ({ seed: box.bearerId(seed), value: randomBytes(32).toString('base64url'), grant: randomBytes(16).toString('base64url') })));
    await db.query('begin');
    await db.query(
      `create temp table clones on commit drop as
       select t.payload as token, t.expires_at as token_expires, g.payload as grant_payload, g.expires_at as grant_expires, g.id as seed_grant, p.stored_id as new_id, p.new_grant
       from unnest($2::text[], $3::text[], $4::text[]) as p(seed, stored_id, new_grant)
       join oidc_payloads t on t.model = $1 and t.id = p.seed
       join oidc_payloads g on g.model = 'Grant' and g.id = t.payload->>'grantId'`,
      [model, plan.map((p) => p.seed), plan.map((p) => box.bearerId(p.value)), plan.map((p) => p.grant)],
    );
    await db.query(`insert into oidc_payloads (model, id, payload, expires_at) select 'Grant', new_grant, grant_payload || jsonb_build_object('jti', new_grant), grant_expires from clones`);
    await db.query(`insert into grant_contexts (grant_id, ${columns.join(', ')}) select c.new_grant, ${columns.map((c) => `gc.${c}`).join(', ')} from clones c join grant_contexts gc on gc.grant_id = c.seed_grant`);
    await db.query(
      `insert into oidc_payloads (model, id, payload, grant_id, expires_at)
       select $1, new_id, token || jsonb_build_object('grantId', new_grant), new_grant, token_expires from clones`,
      [model],
    );
    await db.query('commit');
    return plan.map((p) => p.value);
  } finally {
    await db.end();
  }
}

async function realGrants(target: Target, kind: 'codes' | 'refresh', count: number): Promise<string[]> {
  const url = target.server.url;
  const codes = await mintCodes(await signedInBrowsers(target), { clientId: 'bench-app', scope: APP_SCOPE, fhirBase: `${url}/fhir` }, count);
  if (kind === 'codes') return codes;
  const tokens: string[] = [];
  const queue = [...codes];
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let code = queue.pop(); code; code = queue.pop()) {
        const res = await fetch(`${url}/token`, { method: 'POST', headers: FORM, body: form({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, client_id: 'bench-app', code_verifier: VERIFIER }) });
        tokens.push(((await res.json()) as { refresh_token: string }).refresh_token);
      }
    }),
  );
  return tokens;
}

const appTokens = new Map<string, Promise<string>>();
/** An access token of bench-app for Amy (patient/*.rs), by the real flow; one per server. */
function appToken(target: Target): Promise<string> {
  let token = appTokens.get(target.server.url);
  if (!token) {
    token = (async () => {
      const [code] = await mintCodes(await signedInBrowsers(target), { clientId: 'bench-app', scope: APP_SCOPE, fhirBase: `${target.server.url}/fhir` }, 1);
      const res = await fetch(`${target.server.url}/token`, { method: 'POST', headers: FORM, body: form({ grant_type: 'authorization_code', code: code!, redirect_uri: REDIRECT_URI, client_id: 'bench-app', code_verifier: VERIFIER }) });
      const body = (await res.json()) as { access_token?: string; patient?: string };
      if (!body.access_token || body.patient !== 'demo-amy-shaw') throw new Error(`no token for Amy: ${JSON.stringify(body)}`);
      return body.access_token;
    })();
    appTokens.set(target.server.url, token);
  }
  return token;
}

const browsers = new Map<string, HttpBrowser[]>();
/** Eight browsers signed in as patients, for minting codes in parallel. */
async function signedInBrowsers(target: Target): Promise<HttpBrowser[]> {
  let signedIn = browsers.get(target.server.url);
  if (!signedIn) {
    signedIn = await Promise.all(
      Array.from({ length: PEOPLE }, async (_, n) => {
        const browser = new HttpBrowser(target.server.url);
        await standaloneLaunch(browser, { clientId: 'bench-app', scope: APP_SCOPE, fhirBase: `${target.server.url}/fhir`, ...person('patient', n) });
        return browser;
      }),
    );
    browsers.set(target.server.url, signedIn);
  }
  return signedIn;
}

function scenarios(es384: Key, rs384: Key): Scenario[] {
  /** Numbers the browsers of the launch flows, one person each. */
  let workers = 0;
  /** One browser per worker, signed in by its first launch (outside the count only in that it is the first). */
  const signedInLaunch = (name: string, role: 'patient' | 'clinician', description: string): Scenario => ({
    name,
    description,
    bare: true,
    flow: (target) => {
      const browser = new HttpBrowser(target.server.url);
      let ready: Promise<unknown> | undefined;
      const who = person(role, workers++);
      const run = () => standaloneLaunch(browser, { clientId: 'bench-launch', scope: APP_SCOPE, fhirBase: `${target.server.url}/fhir`, ...who, ...(role === 'clinician' ? { patient: 'demo-amy-shaw' } : {}) });
      return async () => {
        ready ??= run();
        await ready;
        return run();
      };
    },
  });
  const jwtScenario = (k: Key): Scenario => ({
    name: `cc-${k.alg.toLowerCase()}`,
    description: `client_credentials, private_key_jwt ${k.alg}, fresh jti`,
    bare: true,
    poolGuess: { ours: 1000, bare: 2500 },
    prepare: async (target, count) => {
      const next = drain(await assertions(k, `${target.server.url}/token`, count));
      return () => ({ method: 'POST', path: '/token', headers: FORM, body: form({ grant_type: 'client_credentials', scope: SYSTEM_SCOPE, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: next() }) });
    },
  });
  return [
    { name: 'discovery', description: 'GET /.well-known/openid-configuration', bare: true, prepare: async () => () => ({ method: 'GET', path: '/.well-known/openid-configuration' }) },
    { name: 'smart-config', description: 'GET /fhir/.well-known/smart-configuration', bare: false, prepare: async () => () => ({ method: 'GET', path: '/fhir/.well-known/smart-configuration' }) },
    { name: 'jwks', description: 'GET /jwks', bare: true, prepare: async () => () => ({ method: 'GET', path: '/jwks' }) },
    {
      name: 'cc-basic',
      description: 'client_credentials, client_secret_basic, opaque token',
      bare: true,
      prepare: async (target) => {
        const authorization = basicAuth(target.server.url, 'bench-basic');
        return () => ({ method: 'POST', path: '/token', headers: { ...FORM, authorization }, body: form({ grant_type: 'client_credentials', scope: SYSTEM_SCOPE }) });
      },
    },
    jwtScenario(es384),
    jwtScenario(rs384),
    {
      name: 'introspect-valid',
      description: 'introspection of active opaque tokens (client_secret_basic caller)',
      bare: true,
      prepare: async (target) => {
        const next = cycle(await Promise.all(Array.from({ length: 50 }, () => ccToken(target.server.url))));
        const authorization = basicAuth(target.server.url, 'bench-rs');
        return () => ({ method: 'POST', path: '/introspect', headers: { ...FORM, authorization }, body: form({ token: next() }) });
      },
    },
    {
      name: 'introspect-unknown',
      description: 'introspection of unknown tokens',
      bare: true,
      prepare: async (target) => {
        const authorization = basicAuth(target.server.url, 'bench-rs');
        return () => ({ method: 'POST', path: '/introspect', headers: { ...FORM, authorization }, body: form({ token: randomBytes(32).toString('base64url') }) });
      },
    },
    {
      name: 'refresh',
      description: 'refresh_token grant with rotation (public client)',
      bare: true,
      poolGuess: { ours: 500, bare: 3000 },
      prepare: async (target, count) => {
        const next = drain(await grants(target, 'refresh', count));
        return () => ({ method: 'POST', path: '/token', headers: FORM, body: form({ grant_type: 'refresh_token', refresh_token: next(), client_id: 'bench-app' }) });
      },
    },
    {
      name: 'code',
      description: 'authorization_code exchange with PKCE (codes prepared)',
      bare: true,
      poolGuess: { ours: 500, bare: 3000 },
      prepare: async (target, count) => {
        const next = drain(await grants(target, 'codes', count));
        return () => ({ method: 'POST', path: '/token', headers: FORM, body: form({ grant_type: 'authorization_code', code: next(), redirect_uri: REDIRECT_URI, client_id: 'bench-app', code_verifier: VERIFIER }) });
      },
    },
    {
      name: 'gw-read',
      description: 'gateway: GET /fhir/Observation/{id} with a patient/*.rs token (door, rules, upstream, check, audit)',
      bare: false,
      direct: () => ({ method: 'GET', path: '/fhir/Observation/demo-amy-shaw-obs-3' }),
      prepare: async (target) => {
        const authorization = `Bearer ${await appToken(target)}`;
        return () => ({ method: 'GET', path: '/fhir/Observation/demo-amy-shaw-obs-3', headers: { authorization } });
      },
    },
    {
      name: 'gw-search',
      description: 'gateway: GET /fhir/Observation?subject=Patient/…&_count=20 (10 matches) with a patient/*.rs token',
      bare: false,
      direct: () => ({ method: 'GET', path: '/fhir/Observation?subject=Patient/demo-amy-shaw&_count=20' }),
      prepare: async (target) => {
        const authorization = `Bearer ${await appToken(target)}`;
        return () => ({ method: 'GET', path: '/fhir/Observation?subject=Patient/demo-amy-shaw&_count=20', headers: { authorization } });
      },
    },
    {
      name: 'launch',
      description: 'whole standalone launch, new browser: authorize, sign in, pick patient, consent, code, token',
      bare: false,
      flow: (target) => {
        const who = person('clinician', workers++);
        return () => standaloneLaunch(new HttpBrowser(target.server.url), { clientId: 'bench-launch', scope: APP_SCOPE, fhirBase: `${target.server.url}/fhir`, ...who, patient: 'demo-amy-shaw' });
      },
    },
    signedInLaunch('launch-session', 'clinician', 'whole standalone launch, signed-in clinician: authorize, pick patient, consent, code, token (bare: no picker)'),
    signedInLaunch('launch-patient', 'patient', 'whole standalone launch, signed-in patient (no picker): authorize, consent, code, token'),
  ];
}

/** A run at saturation, with what each operation cost in CPU and SQL (src: bench/lib/cost.ts). */
type Costed = Run & { readonly cost?: Cost | undefined };

interface Measured {
  readonly saturation: Costed;
  readonly runs: readonly number[];
  readonly at70?: Paced;
}

/** A run at a steady rate; `serverOver25`: the share of its answers the server itself took over 25 ms for (its histogram). */
type Paced = Run & { readonly serverOver25?: number | undefined };

async function measure(target: Target, scenario: Scenario, runs: number, with70: boolean): Promise<Measured> {
  const results: Costed[] = [];
  let perSecond = (target.column === 'bare' ? scenario.poolGuess?.bare : scenario.poolGuess?.ours) ?? 0;
  if (target.column === 'bare-pg') perSecond = Math.round(perSecond * 1.5);
  // The embedded database runs at about a third of Postgres: a smaller first pool, refined by the run.
  if (target.column === 'pglite') perSecond = Math.round(perSecond / 3);
  // CPU of the server and of Postgres, and the server's SQL counters, around each saturation run.
  const costed = async (run: () => Promise<Run>): Promise<Costed> => {
    const server = { url: target.server.url, pid: target.server.child.pid };
    const how = { withPostgres: target.column === 'postgres' || target.column === 'bare-pg', metricsToken: target.column === 'postgres' ? METRICS_TOKEN : undefined, admin: walClient };
    if (target.column === 'postgres' || target.column === 'bare-pg') await analyze(target.column === 'postgres' ? databaseUrl : bareDatabaseUrl);
    const before = await snapshot(server, how);
    const result = await run();
    return { ...result, cost: perOperation(before, await snapshot(server, how), result.ok + result.errors) };
  };
  // At a steady rate, the server's own view of the run too: how many of its answers it took over the 25 ms bound
  // itself (read just around the load, so that what `prepare` sent before is not in it).
  const metricsToken = target.column === 'postgres' ? METRICS_TOKEN : undefined;
  const timed = async (run: () => Promise<Run>): Promise<Paced> => {
    const before = await serverLatency(target.server.url, metricsToken, P99_TARGET_S);
    const result = await run();
    const after = before && (await serverLatency(target.server.url, metricsToken, P99_TARGET_S));
    return before && after ? { ...result, serverOver25: (after.over - before.over) / Math.max(1, after.answers - before.answers) } : result;
  };
  const once = async (rate?: number, retries = 2, duration = DURATION, measured = true): Promise<Costed & Paced> => {
    const options = { duration, connections: CONNECTIONS, rate };
    const cost = rate ? timed : measured ? costed : (run: () => Promise<Run>) => run();
    if (scenario.flow) return cost(() => loadFlows(() => scenario.flow!(target), { ...options, connections: Math.min(CONNECTIONS, 8) }));
    const count = Math.ceil((rate ?? perSecond) * duration * 1.3) + 200;
    const next = await scenario.prepare!(target, count);
    const run = await cost(() => (rate ? paced(target.server.url, next, { ...options, rate }) : load(target.server.url, next, options)));
    perSecond = Math.max(perSecond, run.rps);
    // A pool of single-use inputs that ran dry: the run measured refusals. Again, with a pool to match.
    if (scenario.poolGuess && run.errors && run.ok + run.errors > count && !rate && retries) return once(undefined, retries - 1, duration, measured);
    return run;
  };
  if (WARMUP > 0) await once(undefined, 0, WARMUP, false);
  for (let i = 0; i < runs; i++) results.push(await once());
  const saturation = median(results);
  // An open-loop generator in Node on the same two cores cannot hold a steady rate much above 3,000/s.
  const at70 = with70 && saturation.rps * 0.7 <= PACED_MAX ? await once(saturation.rps * 0.7) : undefined;
  const firstError = results.find((r) => r.firstError)?.firstError;
  log(`${target.column.padEnd(8)} ${scenario.name.padEnd(18)} ${saturation.rps.toFixed(0).padStart(6)} rps  p99 ${saturation.p99.toFixed(1)} ms${at70 ? `  @70% p99 ${at70.p99.toFixed(1)} ms` : ''}${at70?.serverOver25 !== undefined ? ` (server over 25 ms: ${(at70.serverOver25 * 100).toFixed(2)} %)` : ''}  errors ${saturation.errors}${firstError ? ` (first: ${firstError.slice(0, 300)})` : ''}`);
  return { saturation, runs: results.map((r) => Math.round(r.rps)), ...(at70 ? { at70 } : {}) };
}

async function measureDirect(upstream: ServerProcess, name: string, next: () => RequestSpec): Promise<Measured> {
  const results: Run[] = [];
  if (WARMUP > 0) await load(upstream.url, next, { duration: WARMUP, connections: CONNECTIONS });
  for (let i = 0; i < RUNS; i++) results.push(await load(upstream.url, next, { duration: DURATION, connections: CONNECTIONS }));
  const saturation = median(results);
  log(`${'direct'.padEnd(8)} ${name.padEnd(18)} ${saturation.rps.toFixed(0).padStart(6)} rps  p99 ${saturation.p99.toFixed(1)} ms  errors ${saturation.errors}`);
  return { saturation, runs: results.map((r) => Math.round(r.rps)) };
}

async function adminSetup(target: Target, es384: Key, rs384: Key): Promise<void> {
  const call = async (path: string, body: unknown) => {
    const res = await fetch(`${target.server.url}/admin/api${path}`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (res.status >= 300) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return (await res.json()) as Record<string, unknown>;
  };
  for (const [clientId, scope] of [['bench-basic', 'system/*.rs'], ['bench-rs', 'introspect']] as const) {
    const created = await call('/clients', { client_id: clientId, grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope });
    secrets.set(`${target.server.url} ${clientId}`, created.client_secret as string);
  }
  await call('/clients', { client_id: 'bench-jwt', grant_types: ['client_credentials'], token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [es384.jwk, rs384.jwk] }, scope: 'system/*.rs' });
  await call('/clients', { client_id: 'bench-app', redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none', consent: 'pre-approved' });
  await call('/clients', { client_id: 'bench-launch', redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none' });
  for (let n = 0; n < PEOPLE; n++) {
    await call('/users', { ...person('patient', n), fhirUser: 'Patient/demo-amy-shaw', name: `Bench Patient ${n}` });
    await call('/users', { ...person('clinician', n), fhirUser: 'Practitioner/demo-practitioner', name: `Bench Clinician ${n}` });
  }
}

let databaseUrl = '';
let bareDatabaseUrl = '';

/** BENCH_OURS_ENV: settings added to our server's environment (a JSON object of strings), for A/B runs. */
function oursEnv(): Record<string, string> {
  const raw = process.env.BENCH_OURS_ENV;
  if (!raw) return {};
  const parsed: unknown = JSON.parse(raw);
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed) || !Object.values(parsed).every((v) => typeof v === 'string')) {
    throw new Error('BENCH_OURS_ENV must be a JSON object of strings, as {"DATABASE_GENERIC_PLANS":"false"}');
  }
  return parsed as Record<string, string>;
}

/**
 * Fresh statistics before a measured run on Postgres, outside it: the scenario's inputs were just written
 * (thousands of grants and tokens into tables that held none), and until autovacuum's next round (a minute
 * apart) the planner would take a table of thousands of rows for an empty one and scan it. A deployment's
 * tables have long had their statistics; the bench's should too, for ours and for bare+pg alike.
 */
async function analyze(url: string): Promise<void> {
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    await db.query('analyze');
  } finally {
    await db.end();
  }
}
/**
 * What a deployment holds after an hour of traffic, written before the first measured run: live grants with
 * their launch contexts, sessions, interactions, codes and tokens that no scenario touches. On tables that
 * held a few rows of each kind when last analyzed, the planner takes every kind for a row or two, and the
 * statements planned once per connection (src/db/pool.ts) keep what it chose while a run writes thousands
 * more; a deployment's tables are neither empty nor grown fivefold since their last ANALYZE.
 */
async function populate(url: string): Promise<void> {
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    const kinds: readonly [string, number][] = [['Grant', 5_000], ['Session', 3_000], ['Interaction', 1_000], ['AuthorizationCode', 500], ['AccessToken', 10_000], ['RefreshToken', 5_000]];
    for (const [model, count] of kinds) {
      await db.query(
        `insert into oidc_payloads (model, id, payload, grant_id, uid, expires_at)
         select $1, md5($1 || i), jsonb_build_object('accountId', 'population-' || (i % 500), 'clientId', 'bench-app', 'scope', 'openid patient/*.rs'),
                case when $1 in ('AuthorizationCode', 'AccessToken', 'RefreshToken') then md5('Grant' || (i % 5000 + 1)) end,
                case when $1 = 'Session' then md5('uid' || i) end, now() + interval '1 day'
         from generate_series(1, $2::int) as i on conflict do nothing`,
        [model, count],
      );
    }
    await db.query(
      `insert into grant_contexts (grant_id, fhir_base, patient, expires_at)
       select md5('Grant' || i), 'http://population.invalid/fhir', 'population-' || i, now() + interval '1 day' from generate_series(1, 5000) as i on conflict do nothing`,
    );
  } finally {
    await db.end();
  }
}

/** The bench's connection to the cluster, which reads where its write-ahead log is (bench/lib/cost.ts). */
let walClient: pg.Client | undefined;

async function main(): Promise<void> {
  const adminUrl = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const dbName = `smart_auth_bench_${Date.now()}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  walClient = admin;
  await admin.query(`create database ${dbName}`);
  await admin.query(`create database ${dbName}_bare`);
  const u = new URL(adminUrl);
  u.pathname = `/${dbName}`;
  databaseUrl = u.href;
  u.pathname = `/${dbName}_bare`;
  bareDatabaseUrl = u.href;
  const meta = {
    date: new Date().toISOString(),
    commit: execSync('git rev-parse --short HEAD', { cwd: PACKAGE_ROOT }).toString().trim(),
    node: process.version,
    postgres: (await admin.query<{ server_version: string }>('show server_version')).rows[0]!.server_version,
    cpu: `${cpus()[0]?.model ?? 'unknown'} × ${cpus().length}`,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    duration: DURATION,
    connections: CONNECTIONS,
    runs: RUNS,
    warmup: WARMUP,
  };
  log(`bench ${meta.commit} on ${meta.cpu}, Node ${meta.node}, Postgres ${meta.postgres}; ${RUNS} × ${DURATION} s after ${WARMUP} s unmeasured, ${CONNECTIONS} connections`);

  const [es384, rs384] = await Promise.all([key('ES384'), key('RS384')]);
  const all = scenarios(es384, rs384).filter((s) => !args.only || args.only.split(',').includes(s.name));
  const results: Record<string, Partial<Record<Target['column'] | 'direct', Measured>>> = {};
  const rss: Partial<Record<Target['column'] | 'upstream', number>> = {};
  const startup: Partial<Record<Target['column'] | 'upstream', ServerProcess['startup']>> = {};
  const env = { SECRET_KEY, ADMIN_TOKEN, SEED_DEMO: 'true', KEY_ROTATION_DAYS: '0', LAUNCHER: 'false', ...oursEnv() };
  const pglitDir = await mkdtemp(join(tmpdir(), 'smart-auth-bench-'));
  const extra: Record<string, unknown> = {};
  // The gateway's upstream, in a process of its own; every server here fronts it at /fhir.
  const upstream = all.some((s) => s.direct) ? await startUpstream() : undefined;
  const withUpstream = (env: Record<string, string>) => (url: string) => (upstream ? { ...env, FHIR_UPSTREAMS: `${url}/fhir=${upstream.url}/fhir` } : env);
  try {
    // Our server on Postgres.
    const ours = await startOurs('ours (Postgres)', withUpstream({ ...env, DATABASE_URL: databaseUrl, METRICS_TOKEN }));
    const postgres: Target = { name: 'ours on Postgres', column: 'postgres', server: ours };
    await adminSetup(postgres, es384, rs384);
    await populate(databaseUrl);
    const perToken = await rowsPerToken(databaseUrl, postgres);
    extra.perToken = perToken;
    log(`Postgres per client_credentials token: ${perToken.rows.toFixed(2)} rows, ${perToken.bytes.toFixed(0)} bytes`);
    for (const scenario of all) {
      (results[scenario.name] ??= {}).postgres = await measure(postgres, scenario, RUNS, true);
      // The same request straight to the upstream, right after: what the gateway costs.
      if (scenario.direct && upstream) results[scenario.name]!.direct = await measureDirect(upstream, scenario.name, scenario.direct);
    }
    rss.postgres = await ours.rssMiB();
    startup.postgres = ours.startup;

    if (!args['no-growth']) extra.growth = await growth(postgres, all);
    if (!args['no-scaling']) extra.scaling = await scaling(postgres, env);
    await ours.stop();
    if (args.observability) extra.observability = await observability(postgres, env, all);

    // Bare oidc-provider, in memory and on Postgres.
    if (!args['no-bare']) {
      const bareClients = [
        ...bareSecretClients(CLIENT_SECRET),
        { client_id: 'bench-jwt', grant_types: ['client_credentials'], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [es384.jwk, rs384.jwk] } },
        { client_id: 'bench-app', grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none' },
        { client_id: 'bench-launch', grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none' },
      ];
      for (const column of ['bare', 'bare-pg'] as const) {
        const bare = await startBare(bareClients, CHALLENGE, column === 'bare-pg' ? bareDatabaseUrl : undefined);
        const target: Target = { name: column === 'bare' ? 'bare oidc-provider' : 'bare oidc-provider on Postgres', column, server: bare };
        // At 70 % too: the latency the issue's p99 target is about, of the bare core on this machine, beside ours.
        for (const scenario of all.filter((s) => s.bare)) (results[scenario.name] ??= {})[column] = await measure(target, scenario, RUNS, true);
        rss[column] = await bare.rssMiB();
        startup[column] = bare.startup;
        await bare.stop();
      }
    }

    // Our server on the embedded database.
    if (!args['no-pglite']) {
      const embedded = await startOurs('ours (PGlite)', withUpstream({ ...env, DATA_DIR: pglitDir, SEED_DEMO: 'true' }));
      const target: Target = { name: 'ours on PGlite', column: 'pglite', server: embedded };
      await adminSetup(target, es384, rs384);
      for (const scenario of all) (results[scenario.name] ??= {}).pglite = await measure(target, scenario, 1, false);
      rss.pglite = await embedded.rssMiB();
      startup.pglite = embedded.startup;
      await embedded.stop();
    }
    if (upstream) {
      rss.upstream = await upstream.rssMiB();
      startup.upstream = upstream.startup;
    }
  } finally {
    await upstream?.stop();
    await rm(pglitDir, { recursive: true, force: true });
    await admin.query(`drop database if exists ${dbName} with (force)`);
    await admin.query(`drop database if exists ${dbName}_bare with (force)`);
    await admin.end();
  }

  const report = { meta, scenarios: Object.fromEntries(all.map((s) => [s.name, { description: s.description, ...results[s.name] }])), rssMiB: rss, startup, ...extra };
  const markdown = toMarkdown(report);
  process.stdout.write(`\n${markdown}\n`);
  const dir = join(PACKAGE_ROOT, 'bench/results');
  await mkdir(dir, { recursive: true });
  const base = `${meta.date.slice(0, 19).replace(/[:T]/g, '-')}-${meta.commit}`;
  await writeFile(join(dir, `${base}.json`), `${JSON.stringify(report, null, 2)}\n`);
  await writeFile(join(dir, `${base}.md`), `${markdown}\n`);
  await writeFile(join(dir, 'latest.md'), `${markdown}\n`);
  log(`done in ${((Date.now() - started) / 1000).toFixed(0)} s; results in bench/results/${base}.{json,md}`);
}

async function rowsPerToken(url: string, target: Target): Promise<{ rows: number; bytes: number }> {
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  const snapshot = async () => {
    const { rows } = await db.query<{ rows: string; bytes: string }>(
      `select (select count(*) from oidc_payloads) + (select count(*) from audit_events) as rows,
              pg_total_relation_size('oidc_payloads') + pg_total_relation_size('audit_events') as bytes`,
    );
    return { rows: Number(rows[0]!.rows), bytes: Number(rows[0]!.bytes) };
  };
  await db.query('vacuum oidc_payloads, audit_events');
  const before = await snapshot();
  const n = 2000;
  await Promise.all(Array.from({ length: 8 }, async (_, w) => {
    for (let i = w; i < n; i += 8) await ccToken(target.server.url);
  }));
  const after = await snapshot();
  await db.end();
  return { rows: (after.rows - before.rows) / n, bytes: (after.bytes - before.bytes) / n };
}

async function growth(target: Target, all: readonly Scenario[]): Promise<Record<string, unknown>> {
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  const out: Record<string, unknown> = {};
  const picks = all.filter((s) => ['cc-basic', 'introspect-valid', 'refresh'].includes(s.name));
  let live = Number((await db.query<{ n: string }>('select count(*) as n from oidc_payloads')).rows[0]!.n);
  for (const size of [10_000, 1_000_000]) {
    const add = Math.max(0, size - live);
    const t = Date.now();
    // Live grants and their access tokens, as a busy deployment holds them.
    await db.query(
      `insert into oidc_payloads (model, id, payload, grant_id, expires_at)
       select case when i % 2 = 0 then 'Grant' else 'AccessToken' end, md5('growth' || i), jsonb_build_object('accountId', 'user-' || i, 'clientId', 'bench-app', 'scope', 'openid patient/*.rs'),
              case when i % 2 = 0 then null else md5('growth' || (i - 1)) end, now() + interval '1 day'
       from generate_series(1, $1) as i
       on conflict do nothing`,
      [add],
    );
    await db.query('analyze oidc_payloads');
    live += add;
    log(`growth: ${live.toLocaleString('en')} live rows (${((Date.now() - t) / 1000).toFixed(0)} s to insert)`);
    const runs: Record<string, Run> = {};
    for (const scenario of picks) runs[scenario.name] = (await measure(target, scenario, 1, false)).saturation;
    out[String(live)] = runs;
  }
  out.explain = await explain(db);
  await db.end();
  return out;
}

async function explain(db: pg.Client): Promise<Record<string, string>> {
  const plans: Record<string, string> = {};
  const queries: Record<string, string> = {
    'find (model, id)': `select payload, consumed_at from oidc_payloads where model = 'AccessToken' and id = 'x' and (expires_at is null or expires_at > now())`,
    'revokeByGrantId': `delete from oidc_payloads where grant_id = 'x' and model = 'AccessToken'`,
    'purge expired': `delete from oidc_payloads where ctid in (select ctid from oidc_payloads where expires_at < now() - interval '5 minutes' limit 5000)`,
    'grant context': `select * from grant_contexts where grant_id = 'x' and expires_at > now()`,
    'audit chain anchor': `select hash from audit_events order by seq desc limit 1`,
    'client': `select metadata, client_secret from clients where client_id = 'x' and status in ('active')`,
  };
  for (const [name, sql] of Object.entries(queries)) {
    const { rows } = await db.query<{ 'QUERY PLAN': string }>(`explain ${sql}`);
    plans[name] = rows.map((r) => r['QUERY PLAN']).join('\n');
  }
  return plans;
}

async function scaling(single: Target, env: Record<string, string>): Promise<Record<string, unknown>> {
  // Processes on the same database (so the same clients and secrets), added as the count grows: 2, then 4.
  const others: ServerProcess[] = [];
  const out: Record<string, unknown> = {};
  try {
    for (const count of [2, 4]) {
      while (others.length < count - 1) {
        const next = await startOurs(`ours (Postgres, process ${others.length + 2})`, { ...env, DATABASE_URL: databaseUrl, SEED_DEMO: 'false' });
        for (const clientId of ['bench-basic', 'bench-rs']) secrets.set(`${next.url} ${clientId}`, secrets.get(`${single.server.url} ${clientId}`)!);
        others.push(next);
      }
      const targets: Target[] = [single, ...others.map((server, i): Target => ({ name: `process-${i + 2}`, column: 'postgres', server }))];
      for (const name of ['cc-basic', 'introspect-valid']) {
        const s = scenarios(await key('ES384'), await key('RS384')).find((x) => x.name === name)!;
        const connections = Math.max(2, Math.round(CONNECTIONS / count));
        const runs = await Promise.all(targets.map(async (target) => load(target.server.url, await s.prepare!(target, 0), { duration: DURATION, connections })));
        const rps = runs.reduce((sum, r) => sum + r.rps, 0);
        out[`${name} ×${count}`] = { rps, p99: Math.max(...runs.map((r) => r.p99)), errors: runs.reduce((sum, r) => sum + r.errors, 0) };
        log(`scaling  ${name.padEnd(18)} ${count} processes: ${rps.toFixed(0)} rps`);
      }
    }
    out.rssSecondMiB = await others[0]?.rssMiB();
  } finally {
    for (const other of others) await other.stop();
  }
  return out;
}

/**
 * What metrics and tracing cost: the same scenarios on the same database, three server processes side by
 * side (no observability, metrics kept with METRICS_TOKEN, traces sent to a collector that discards them:
 * an OTLP sink in this process), loaded in turn, one run each per round, so that the drift of a shared
 * machine falls on all three alike. The median of the rounds is kept.
 */
async function observability(first: Target, env: Record<string, string>, all: readonly Scenario[]): Promise<Record<string, Record<string, number>>> {
  const sink = createHttpServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
  });
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
  const configurations: [string, Record<string, string>][] = [
    ['off', {}],
    ['metrics', { METRICS_TOKEN: randomBytes(32).toString('base64url') }],
    ['tracing', { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(sink.address() as AddressInfo).port}` }],
  ];
  const targets: Target[] = [];
  const out: Record<string, Record<string, number>> = {};
  try {
    for (const [name, extra] of configurations) {
      const server = await startOurs(`ours (Postgres, ${name})`, { ...env, DATABASE_URL: databaseUrl, SEED_DEMO: 'false', ...extra });
      // The same database, so the same clients and secrets.
      for (const [k, secret] of [...secrets]) if (k.startsWith(`${first.server.url} `)) secrets.set(k.replace(first.server.url, server.url), secret);
      targets.push({ name, column: 'postgres', server });
    }
    for (const scenario of all) {
      const runs = new Map<string, Run[]>(targets.map((t) => [t.name, []]));
      for (let round = 0; round < RUNS; round++) {
        for (const target of targets) runs.get(target.name)!.push((await measure(target, scenario, 1, false)).saturation);
      }
      out[scenario.name] = Object.fromEntries(targets.flatMap((t) => {
        const m = median(runs.get(t.name)!);
        return [[t.name, m.rps], [`${t.name} p99`, m.p99]];
      }));
      log(`observability ${scenario.name}: ${targets.map((t) => `${t.name} ${out[scenario.name]![t.name]!.toFixed(0)} rps`).join(', ')}`);
    }
  } finally {
    for (const target of targets) await target.server.stop();
    sink.close();
  }
  return out;
}

/** A figure for a table: '—' where there is none. */
const f = (v: number | undefined, d = 0): string => (v === undefined || !Number.isFinite(v) ? '—' : v.toFixed(d));

function toMarkdown(report: { meta: Record<string, unknown>; scenarios: Record<string, Record<string, unknown>>; rssMiB: Record<string, number | undefined>; startup: Record<string, ServerProcess['startup'] | undefined>; perToken?: unknown; growth?: unknown; scaling?: unknown; observability?: unknown }): string {
  const m = report.meta;
  const lines = [
    `# Benchmark ${String(m.commit)} (${String(m.date)})`,
    '',
    `${String(m.cpu)}, ${String(m.memoryGiB)} GiB; Node ${String(m.node)}; Postgres ${String(m.postgres)}. Each figure: median of ${String(m.runs)} runs of ${String(m.duration)} s at ${String(m.connections)} connections, after ${Number(m.warmup ?? 0)} s of unmeasured load on each server (launch flows: 8 concurrent browsers); PGlite: one run. Latency in ms.`,
    '',
    '| scenario | bare rps | bare+pg rps | ours rps | ÷ bare+pg | p50 | p90 | p99 | p99 @70% | server > 25 ms @70% | bare p99 @70% | bare+pg p99 @70% | errors | PGlite rps | PGlite p99 |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const [name, s] of Object.entries(report.scenarios)) {
    const bare = s.bare as Measured | undefined;
    const barePg = s['bare-pg'] as Measured | undefined;
    const ours = s.postgres as Measured | undefined;
    const lite = s.pglite as Measured | undefined;
    lines.push(
      `| ${name} | ${f(bare?.saturation.rps)} | ${f(barePg?.saturation.rps)} | ${f(ours?.saturation.rps)} | ${barePg && ours ? (ours.saturation.rps / barePg.saturation.rps).toFixed(2) : '—'} | ${f(ours?.saturation.p50, 1)} | ${f(ours?.saturation.p90, 1)} | ${f(ours?.saturation.p99, 1)} | ${f(ours?.at70?.p99, 1)} | ${ours?.at70?.serverOver25 === undefined ? '—' : `${(ours.at70.serverOver25 * 100).toFixed(2)} %`} | ${f(bare?.at70?.p99, 1)} | ${f(barePg?.at70?.p99, 1)} | ${ours ? ours.saturation.errors + (ours.at70?.errors ?? 0) : '—'} | ${f(lite?.saturation.rps)} | ${f(lite?.saturation.p99, 1)} |`,
    );
  }
  lines.push(
    '',
    '## What each operation costs: CPU and SQL',
    '',
    'CPU time of the server process, and of every Postgres process on the machine, per operation answered in the saturation run above, in µs (from /proc: the load generator is not in it); in brackets, the part of the Postgres backends serving connections (statements and their commits), the rest being the cluster\'s own work (WAL writer, checkpoints, autovacuum). On a machine shared with other tenants throughput moves from one minute to the next; CPU per operation moves much less, so **bare ÷ ours** (bare in memory against our server and Postgres together) is the steadier ratio. Statements and commits per operation: our server\'s own counters (smart_auth_db_statements_total, smart_auth_db_commits_total) over the same run, under load, so with concurrent requests\' writes grouped. WAL: bytes of write-ahead log the cluster wrote per operation (pg_current_wal_lsn), what the writes cost Postgres, counted rather than timed.',
    '',
    '| scenario | bare µs | bare+pg µs (server + Postgres) | ours server µs | ours Postgres µs | ours µs | bare ÷ ours | statements | commits | bare+pg WAL | ours WAL | PGlite µs |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  );
  for (const [name, s] of Object.entries(report.scenarios)) {
    const cost = (column: string) => (s[column] as Measured | undefined)?.saturation.cost;
    const total = (c: Cost | undefined) => (c ? c.serverUs + (c.postgresUs ?? 0) : undefined);
    const bare = total(cost('bare'));
    const ours = total(cost('postgres'));
    lines.push(
      `| ${name} | ${f(bare)} | ${f(total(cost('bare-pg')))} | ${f(cost('postgres')?.serverUs)} | ${f(cost('postgres')?.postgresUs)}${cost('postgres')?.postgresBackendsUs !== undefined ? ` (${f(cost('postgres')?.postgresBackendsUs)})` : ''} | ${f(ours)} | ${bare !== undefined && ours ? (bare / ours).toFixed(2) : '—'} | ${f(cost('postgres')?.statements, 2)} | ${f(cost('postgres')?.commits, 2)} | ${f(cost('bare-pg')?.walBytes)} | ${f(cost('postgres')?.walBytes)} | ${f(total(cost('pglite')))} |`,
    );
  }
  const gateway = Object.entries(report.scenarios).filter(([, s]) => s.direct);
  if (gateway.length) {
    lines.push(
      '',
      '## Gateway: the same FHIR request through the gateway and straight to the upstream',
      '',
      'The upstream is the embedded FHIR server (@medplum/fhir-router, in memory) in a process of its own on the same two cores. Goal: at least 0.8 × direct throughput for reads, added p50 under 1 ms.',
      '',
      '| scenario | direct rps | gateway rps (Postgres) | ÷ direct | direct p50 | gateway p50 | added p50 | gateway p99 | errors | gateway rps (PGlite) |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    );
    for (const [name, s] of gateway) {
      const direct = s.direct as Measured;
      const ours = s.postgres as Measured | undefined;
      const lite = s.pglite as Measured | undefined;
      lines.push(
        `| ${name} | ${f(direct.saturation.rps)} | ${f(ours?.saturation.rps)} | ${ours ? (ours.saturation.rps / direct.saturation.rps).toFixed(2) : '—'} | ${f(direct.saturation.p50, 1)} | ${f(ours?.saturation.p50, 1)} | ${ours ? (ours.saturation.p50 - direct.saturation.p50).toFixed(1) : '—'} | ${f(ours?.saturation.p99, 1)} | ${ours ? ours.saturation.errors + direct.saturation.errors : '—'} | ${f(lite?.saturation.rps)} |`,
      );
    }
  }
  lines.push('', '| process | start to ready (ms) | resident at ready (MiB) | resident at the end (MiB) |', '| --- | ---: | ---: | ---: |');
  for (const [name, start] of Object.entries(report.startup)) lines.push(`| ${name} | ${start?.ms ?? '—'} | ${start?.rssMiB.toFixed(0) ?? '—'} | ${report.rssMiB[name]?.toFixed(0) ?? '—'} |`);
  if (report.perToken) {
    const p = report.perToken as { rows: number; bytes: number };
    lines.push('', `Postgres growth per client_credentials token (token row + audit event): ${p.rows.toFixed(2)} rows, ${p.bytes.toFixed(0)} bytes (tables and indexes).`);
  }
  if (report.growth) {
    const g = report.growth as Record<string, Record<string, Run> | Record<string, string>>;
    lines.push('', '## Growth: the same scenarios with more live rows', '', '| live rows | cc-basic rps | introspect-valid rps | refresh rps |', '| ---: | ---: | ---: | ---: |');
    for (const [size, value] of Object.entries(g)) {
      if (size === 'explain') continue;
      const r = value as Record<string, Run>;
      lines.push(`| ${Number(size).toLocaleString('en')} | ${r['cc-basic']?.rps.toFixed(0) ?? '—'} | ${r['introspect-valid']?.rps.toFixed(0) ?? '—'} | ${r.refresh?.rps.toFixed(0) ?? '—'} |`);
    }
    lines.push('', 'Query plans at the largest size:', '');
    for (const [name, plan] of Object.entries(g.explain as Record<string, string>)) lines.push(`- ${name}:`, '', '```', plan, '```', '');
  }
  if (report.scaling) {
    const s = report.scaling as Record<string, { rps: number; p99: number; errors: number }>;
    lines.push('', '## Scaling: one, two and four server processes on the same Postgres', '', '| scenario | one process rps | two processes rps | four processes rps |', '| --- | ---: | ---: | ---: |');
    for (const name of ['cc-basic', 'introspect-valid']) {
      const one = (report.scenarios[name]?.postgres as Measured | undefined)?.saturation.rps;
      const at = (count: number): string => s[`${name} ×${count}`]?.rps.toFixed(0) ?? '—';
      lines.push(`| ${name} | ${one?.toFixed(0) ?? '—'} | ${at(2)} | ${at(4)} |`);
    }
  }
  if (report.observability) {
    const o = report.observability as Record<string, Record<string, number>>;
    lines.push('', '## Observability: no metrics or traces, metrics kept, traces sent (three processes, loaded in turn)', '', '| scenario | off rps | metrics rps | tracing rps | off p99 | metrics p99 | tracing p99 |', '| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const [name, r] of Object.entries(o)) {
      lines.push(`| ${name} | ${f(r.off)} | ${f(r.metrics)} | ${f(r.tracing)} | ${f(r['off p99'], 1)} | ${f(r['metrics p99'], 1)} | ${f(r['tracing p99'], 1)} |`);
    }
  }
  return lines.join('\n');
}

await main();
