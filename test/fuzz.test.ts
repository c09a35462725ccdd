import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, it } from 'node:test';

import type { FastifyInstance, InjectOptions } from 'fastify';
import fc from 'fast-check';

import { startFhirServer } from '../src/fhir/server.js';
import { createLogger } from '../src/http/logger.js';
import { createLaunch } from '../src/launch/context.js';
import { testApp, TEST_FHIR_BASE } from './helpers/app.js';
import { inputValue } from './helpers/browser.js';
import { basicAuth, createClient, form } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { AMY, DANIEL, testRecords } from './helpers/fhir-data.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization, tokenRequest } from './helpers/flow.js';

/**
 * No input gets a 5xx. Requests built from every endpoint, method, parameter name and body shape the server
 * knows, filled with hostile values (NUL, unpaired surrogates, huge numbers, leap seconds, deep nesting,
 * bad encodings, garbage credentials), some aimed at live state (a real interaction, client or token) so that
 * they get past the first checks, the FHIR gateway among them (in front of the embedded FHIR server, with a
 * backend's and a patient's token). After the run the server still answers and still issues tokens.
 *
 * FUZZ_RUNS sets the number of requests per database (default 1,500, which keeps CI fast); FUZZ_SEED replays
 * a run. The status histogram is printed as a test diagnostic.
 */
const RUNS = Number(process.env.FUZZ_RUNS ?? 1500);
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
const ADMIN_TOKEN = 'fuzz-admin-token-0123456789abcdefghij';

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'OPTIONS' | 'HEAD';

/** Percent-encoding of any string: an unpaired surrogate becomes the bytes a careless client would send for it. */
const escape = (value: string): string => (value.isWellFormed() ? encodeURIComponent(value) : `%ED%A0%80${encodeURIComponent(value.toWellFormed())}`);

describeEachDatabase('fuzzing every endpoint', (ctx) => {
  let app: FastifyInstance;
  let upstream: Awaited<ReturnType<typeof startFhirServer>>;
  let secret: string;
  const live: Record<string, string> = {};

  /** What the server logged at error level, for the message of a failure. */
  const errors: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      errors.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      if (errors.length > 20) errors.splice(0, errors.length - 20);
      done();
    },
  });
  before(async () => {
    upstream = await startFhirServer();
    await upstream.fhir.load(testRecords() as never);
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN, REGISTRATION: 'open', SANDBOX: 'true', OUTBOUND_ALLOW_PRIVATE: 'false', FHIR_UPSTREAMS: `${TEST_FHIR_BASE}=${upstream.url}` }, { logger: createLogger('error', sink) });
    await createClient(app, { client_id: 'fuzz-app', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] });
    secret = (await createClient(app, { client_id: 'fuzz-backend', grant_types: ['client_credentials'], scope: 'system/*.rs introspect' })).client_secret!;
    const flow = await startAuthorization(app, { client_id: 'fuzz-app', scope: 'openid launch/patient patient/*.rs' });
    live.uid = /\/interaction\/([^/"]+)\/login/.exec(flow.page.res.body)?.[1] ?? 'none';
    live.csrf = inputValue(flow.page.res.body, 'csrf');
    live.cookie = ['smart_interaction', 'smart_interaction.sig', 'smart_resume', 'smart_resume.sig'].map((name) => `${name}=${flow.browser.cookie(name) ?? ''}`).join('; ');
    live.token = (await tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, { authorization: basicAuth('fuzz-backend', secret) })).json<{ access_token: string }>().access_token;
    // A patient's app token for the FHIR gateway: Amy's record, read and write.
    const { launch } = await createLaunch(ctx.current.database.db, app.runtime.box, { patient: AMY });
    const patientFlow = await startAuthorization(app, { client_id: 'fuzz-app', scope: 'launch patient/*.cruds', launch });
    await login(patientFlow, 'clinician', 'clinician-demo');
    await consent(patientFlow);
    live.patientToken = (await exchange(app, patientFlow)).json<{ access_token: string }>().access_token;
  });
  after(async () => {
    await app.close();
    await upstream.close();
  });

  it('no request gets a 5xx, and the server still works afterwards', async (t) => {
    const statuses = new Map<number, number>();
    const upstreamFailures: string[] = [];
    const hostile = fc.oneof(
      fc.constantFrom('\u0000', 'a\u0000b', '\ud800', 'x\udc00y', '\ud83d', '%00', '%E0%A4%A', '9999999999999999999', '-1', '0', '1e308', 'NaN', '2026-12-31T23:59:60Z', '2026-02-30T00:00:00Z', '../../etc/passwd', '<script>alert(1)</script>', "' or 1=1 --", 'null', '[]', '{}', ''),
      fc.constantFrom('fuzz-app', 'fuzz-backend', 'demo-app', 'urn:smart-auth:account', TEST_FHIR_BASE, REDIRECT_URI, 'openid launch/patient patient/*.rs offline_access', 'system/*.cruds', 'authorization_code', 'client_credentials', 'refresh_token', 'code', 'S256', 'demo-amy-shaw', 'clinician', 'clinician-demo', 'approve', 'deny'),
      fc.constant(live.token ?? ''),
      fc.constant(live.patientToken ?? ''),
      fc.constantFrom(AMY, DANIEL, 'obs-amy-lab', 'obs-daniel-lab', 'Patient/demo-daniel-okafor', `Patient/${AMY}`, 'Observation:subject', 'Observation:performer', 'Patient:general-practitioner', 'laboratory', 'count', 'json', 'xml', 'Observation,Patient'),
      fc.constant(live.csrf ?? ''),
      fc.string({ unit: 'binary', maxLength: 40 }),
      fc.string({ maxLength: 20 }),
      fc.constant('x'.repeat(70_000)),
    );
    const names = fc.constantFrom(
      'client_id', 'redirect_uri', 'response_type', 'scope', 'state', 'aud', 'launch', 'code_challenge', 'code_challenge_method', 'nonce', 'prompt', 'resource',
      'grant_type', 'code', 'code_verifier', 'refresh_token', 'client_secret', 'client_assertion', 'client_assertion_type', 'token', 'token_type_hint',
      'id_token_hint', 'post_logout_redirect_uri', 'username', 'password', 'csrf', 'patient', 'encounter', 'decision', 'q', 'revoked', 'fhir_base', 'intent',
      'need_patient_banner', 'limit', 'after', 'from', 'to', 'type', 'client', 'user', 'outcome', 'format', 'status', 'expires_in', 'request', 'request_uri',
      '_include', '_revinclude', '_include:iterate', 'subject', 'subject:Patient', '_has:Observation:patient:code', 'subject:Patient.name', '_count', '_offset', '_summary', '_elements', '_format', '_type', '_id', '_sort', '_filter', '_getpages', 'category', 'code', '_lastUpdated',
    );
    const params = fc.dictionary(names, hostile, { maxKeys: 8 });
    // JSON text, the deepest written out directly: no serializer here or there should have to recurse.
    const deep = fc.integer({ min: 1, max: 20_000 }).map((depth) => `${'{"resourceType":"Bundle","entry":[{"resource":'.repeat(depth)}{"resourceType":"Patient","id":"p"}${'}]}'.repeat(depth)}`);
    const json = fc.oneof(
      fc.oneof(fc.jsonValue({ maxDepth: 4 }), params, fc.record({ resourceType: fc.constant('Bundle'), entry: fc.array(fc.record({ resource: fc.record({ resourceType: fc.constantFrom('Patient', 'Encounter'), id: hostile, name: fc.array(fc.record({ family: hostile })) }) }), { maxLength: 3 }) })).map((v) => JSON.stringify(v)),
      deep,
    );
    const uid = fc.oneof(fc.constant(live.uid ?? 'none'), hostile.map(escape));
    const path = fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom('/auth', '/token', '/introspect', '/revoke', '/reg', `/interaction/${live.uid ?? 'none'}`, `/interaction/${live.uid ?? 'none'}/login`, `/interaction/${live.uid ?? 'none'}/consent`, '/admin/api/clients', '/admin/api/launches', '/admin/api/audit', '/admin/api/patients/$import') },
      fc.constantFrom('/auth', '/token', '/introspect', '/revoke', '/reg', '/logout', '/logout/confirm', '/logout/success', '/jwks', '/userinfo', '/par', '/.well-known/openid-configuration', '/.well-known/oauth-authorization-server', '/.well-known/smart-configuration', '/fhir/.well-known/smart-configuration', '/fhir/metadata', '/account/apps', '/account/apps/revoke', '/account/callback', '/launcher', '/healthz', '/readyz', '/smart-style.json', '/sample-app/', '/sample-app/launch.html', '/static/style.css', '/', '/nope'),
      fc.constantFrom('/admin/api/clients', '/admin/api/users', '/admin/api/patients', '/admin/api/patients/$import', '/admin/api/launches', '/admin/api/grants', '/admin/api/audit', '/admin/api/audit/export', '/admin/api/keys', '/admin/api/registration-tokens', '/admin/api/openapi.json'),
      fc.tuple(fc.constantFrom('/admin/api/clients/', '/admin/api/users/', '/admin/api/patients/', '/reg/', '/auth/'), hostile).map(([p, id]) => p + escape(id)),
      fc.tuple(uid, fc.constantFrom('', '/login', '/patient', '/encounter', '/consent', '/abort')).map(([u, step]) => `/interaction/${u}${step}`),
      // The FHIR gateway: types, ids, operations, history, the base (batch, transaction, system search).
      { weight: 3, arbitrary: fc.tuple(fc.constantFrom('', '/Patient', '/Observation', '/Condition', '/Practitioner', '/Binary', '/NotAType', '/_history', '/_search', '/$everything', '/metadata'), fc.constantFrom('', `/${AMY}`, `/${DANIEL}`, '/obs-amy-lab', '/obs-daniel-lab', '/_search', '/_history', '/$everything', '/$validate', `/${AMY}/$everything`, `/${AMY}/_history/1`, '/obs-amy-lab/_history'), fc.oneof(fc.constant(''), hostile.map((h) => `/${escape(h)}`))).map(([type, rest, tail]) => `/fhir${type}${rest}${tail}`) },
    );
    const authorization = fc.oneof(
      fc.constant(undefined),
      fc.constant(`Bearer ${live.patientToken ?? ''}`),
      fc.constant(`Bearer ${live.token ?? ''}`),
      fc.constant(`Bearer ${ADMIN_TOKEN}`),
      fc.constant(basicAuth('fuzz-backend', secret)),
      hostile.map((v) => `Bearer ${v.replace(/[^\x21-\x7e]/g, 'x') || 'x'}`),
      hostile.map((v) => `Basic ${Buffer.from(`${v}:${v}`).toString('base64')}`),
      fc.constant('Basic !!!not-base64'),
    );
    const request = fc.record({
      method: fc.constantFrom<Method>('GET', 'GET', 'POST', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD'),
      path,
      query: params,
      body: fc.oneof(fc.constant(undefined), params.map((p) => ({ type: 'application/x-www-form-urlencoded', payload: form(p) })), fc.tuple(json, fc.constantFrom('application/json', 'application/fhir+json', 'application/json; charset=utf-16')).map(([payload, type]) => ({ type, payload })), fc.uint8Array({ maxLength: 200 }).map((b) => ({ type: 'application/octet-stream', payload: Buffer.from(b).toString('latin1') })), json.map((j) => ({ type: 'application/fhir+ndjson', payload: `${j}\n{"resourceType":"Patient","id":"\\u0000"}` }))),
      authorization,
      accept: fc.constantFrom('application/json', 'text/html', '*/*', undefined),
      cookie: fc.oneof(fc.constant(undefined), fc.constant(live.cookie), hostile.map((v) => `smart_session=${escape(v)}; smart_interaction=${escape(v)}`)),
    });

    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        const query = new URLSearchParams(r.query).toString();
        const url = `${r.path}${query ? `?${query}` : ''}`;
        const options: InjectOptions = {
          method: r.method,
          url,
          headers: {
            ...(r.authorization ? { authorization: r.authorization } : {}),
            ...(r.accept ? { accept: r.accept } : {}),
            ...(r.cookie ? { cookie: r.cookie } : {}),
            ...(r.body ? { 'content-type': r.body.type } : {}),
          },
          ...(r.body && r.method !== 'GET' && r.method !== 'HEAD' ? { payload: r.body.payload } : {}),
        };
        const res = await app.inject(options);
        statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
        // The upstream FHIR server failing on what the gateway passed on is its 5xx, answered as 502: not ours.
        if (res.statusCode === 502 && url.startsWith('/fhir') && /"diagnostics":"the FHIR server failed \(5\d\d\)/.test(res.body)) {
          upstreamFailures.push(`${r.method} ${url.slice(0, 200)} → ${res.body.slice(0, 300)}`);
          return;
        }
        assert.ok(res.statusCode < 500, `${r.method} ${url.slice(0, 300)} → ${res.statusCode} ${res.body.slice(0, 300)}; logged: ${errors.join('\n').slice(-3000)}`);
      }),
      { numRuns: RUNS, ...(SEED === undefined ? {} : { seed: SEED }), endOnFailure: true },
    );
    t.diagnostic(`statuses over ${RUNS} requests: ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}`);
    if (upstreamFailures.length) t.diagnostic(`the upstream FHIR server failed ${upstreamFailures.length} times (answered 502): ${upstreamFailures.slice(0, 5).join(' | ')}`);

    assert.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200, 'still ready');
    // The run may have changed any client through the admin API (its secret rotated, say): a new one proves it.
    const after = await createClient(app, { client_id: 'after-the-fuzz', grant_types: ['client_credentials'], scope: 'system/Patient.rs' });
    const token = await tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, { authorization: basicAuth(after.client_id, after.client_secret!) });
    assert.equal(token.statusCode, 200, 'still issues tokens');
  });
});
