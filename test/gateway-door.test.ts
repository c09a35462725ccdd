import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, it } from 'node:test';

import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { decodeJwt, decodeProtectedHeader } from 'jose';

import { startFhirServer } from '../src/fhir/server.js';
import { createLaunch } from '../src/launch/context.js';
import { freePort, testApp, TEST_ADMIN_TOKEN, TEST_ISSUER } from './helpers/app.js';
import { Browser, formAction, inputValue } from './helpers/browser.js';
import { basicAuth, createClient, form, registerClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { AMY, DANIEL, testRecords } from './helpers/fhir-data.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization } from './helpers/flow.js';

interface Resource {
  readonly resourceType: string;
  readonly id?: string;
  readonly [member: string]: unknown;
}
interface Bundle extends Resource {
  readonly entry?: { readonly resource: Resource }[];
  readonly link?: { readonly relation: string; readonly url: string }[];
  readonly total?: number;
}
interface Outcome {
  readonly resourceType: 'OperationOutcome';
  readonly issue: { readonly severity: string; readonly code: string; readonly diagnostics: string }[];
}

const FHIR = `${TEST_ISSUER}/fhir`;
const JWT_FHIR = `${TEST_ISSUER}/jwt-fhir`;
const CAPTURE = `${TEST_ISSUER}/capture`;
const SLOW = `${TEST_ISSUER}/slow`;
const DOWN = `${TEST_ISSUER}/down`;
const UPSTREAM_AUTHORIZATION = 'Basic dXBzdHJlYW06c2VjcmV0';
const PUBLIC = { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] };

/** An upstream that records what it is sent and answers what the test sets; `/hang` never answers. */
class CaptureServer {
  readonly requests: { method: string; url: string; headers: IncomingHttpHeaders; body: string }[] = [];
  answer: { status: number; headers: Record<string, string>; body: string } = { status: 200, headers: {}, body: '{}' };
  readonly #server: Server;
  url = '';

  constructor() {
    this.#server = createServer((request, response) => {
      let body = '';
      request.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
      request.on('end', () => {
        this.requests.push({ method: request.method ?? '', url: request.url ?? '', headers: request.headers, body });
        if (request.url?.includes('/hang')) return;
        response.writeHead(this.answer.status, this.answer.headers);
        response.end(this.answer.body);
      });
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/base/r4`;
    return this;
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

describeEachDatabase('FHIR gateway: the door, the upstream, the audit', (ctx, kind) => {
  let app: FastifyInstance;
  let upstream: Awaited<ReturnType<typeof startFhirServer>>;
  let capture: CaptureServer;
  const secret = randomBytes(24).toString('base64url');

  before(async () => {
    upstream = await startFhirServer();
    await upstream.fhir.load(testRecords() as never);
    capture = await new CaptureServer().start();
    const downPort = await freePort();
    app = await testApp(ctx.current.database, {
      SEED_DEMO: 'true',
      ADMIN_TOKEN: TEST_ADMIN_TOKEN,
      FHIR_BASE_URLS: [FHIR, JWT_FHIR, CAPTURE, SLOW, DOWN].join(','),
      FHIR_UPSTREAMS: [`${FHIR}=${upstream.url}`, `${JWT_FHIR}=${upstream.url}`, `${CAPTURE}=${capture.url}`, `${SLOW}=${capture.url}`, `${DOWN}=http://127.0.0.1:${downPort}/fhir`].join(','),
      FHIR_UPSTREAM_HEADERS: JSON.stringify({ [CAPTURE]: { Authorization: UPSTREAM_AUTHORIZATION } }),
      FHIR_UPSTREAM_OPTIONS: JSON.stringify({ [SLOW]: { timeoutSeconds: 1 } }),
      JWT_ACCESS_TOKEN_AUDIENCES: JWT_FHIR,
    });
    await createClient(app, { ...PUBLIC, client_id: 'app', client_name: 'Chart App' });
    await registerClient(app, { client_id: 'backend', grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'client_secret_basic', client_secret: secret, scope: 'system/*.cruds' });
  });
  after(async () => {
    await app.close();
    await upstream.close();
    await capture.close();
  });

  const launchToken = async (scope: string, aud = FHIR, username = 'clinician', password = 'clinician-demo'): Promise<string> => {
    const { launch } = await createLaunch(ctx.current.database.db, app.runtime.box, { patient: AMY });
    const flow = await startAuthorization(app, { client_id: 'app', scope: `launch ${scope}`, launch, aud });
    await login(flow, username, password);
    await consent(flow);
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    return res.json<{ access_token: string }>().access_token;
  };
  const backendToken = async (scope: string, resource?: string): Promise<string> => {
    const res = await app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('backend', secret) }, payload: form({ grant_type: 'client_credentials', scope, ...(resource ? { resource } : {}) }) });
    assert.equal(res.statusCode, 200, res.body);
    return res.json<{ access_token: string }>().access_token;
  };
  const get = (token: string | undefined, url: string, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> =>
    app.inject({ method: 'GET', url: new URL(url, TEST_ISSUER).pathname + new URL(url, TEST_ISSUER).search, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers } });
  const diagnostics = (res: LightMyRequestResponse): string => res.json<Outcome>().issue[0]!.diagnostics;

  it('a token is good only at the FHIR base it was issued for (aud)', async () => {
    const opaque = await launchToken('patient/*.rs');
    assert.equal((await get(opaque, `${FHIR}/Patient/${AMY}`)).statusCode, 200);
    const elsewhere = await get(opaque, `${JWT_FHIR}/Patient/${AMY}`);
    assert.equal(elsewhere.statusCode, 401);
    assert.equal(elsewhere.headers['www-authenticate'], `Bearer realm="${JWT_FHIR}", error="invalid_token", error_description="the access token was issued for another FHIR server (${FHIR}), not ${JWT_FHIR}"`);
  });

  it('JWT access tokens: checked by signature, audience and the grant they belong to; revoking the grant refuses them at the next request', async () => {
    const jwt = await launchToken('patient/*.rs', JWT_FHIR);
    assert.equal(decodeProtectedHeader(jwt).typ, 'at+jwt');
    const claims = decodeJwt(jwt);
    assert.equal(claims.aud, JWT_FHIR);
    assert.equal(typeof claims.grant_id, 'string');
    assert.equal((await get(jwt, `${JWT_FHIR}/Patient/${AMY}`)).statusCode, 200);
    assert.equal((await get(jwt, `${JWT_FHIR}/Observation/obs-daniel-lab`)).statusCode, 404, 'the same rules as opaque tokens');
    const foreign = await get(jwt, `${FHIR}/Patient/${AMY}`);
    assert.equal(foreign.statusCode, 401);
    assert.equal(diagnostics(foreign), 'the access token was issued for another FHIR server');

    const [header, payload] = jwt.split('.');
    const tampered = `${header!}.${Buffer.from(JSON.stringify({ ...claims, patient: 'demo-daniel-okafor' })).toString('base64url')}.${jwt.split('.')[2]!}`;
    assert.equal((await get(tampered, `${JWT_FHIR}/Patient/${AMY}`)).statusCode, 401, 'a changed payload fails the signature');
    assert.ok(payload);

    const revoke = await app.inject({ method: 'DELETE', url: `/admin/api/grants/${String(claims.grant_id)}`, headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
    assert.equal(revoke.statusCode, 204, revoke.body);
    const after = await get(jwt, `${JWT_FHIR}/Patient/${AMY}`);
    assert.equal(after.statusCode, 401);
    assert.equal(diagnostics(after), 'the access token is unknown, expired or revoked');
  });

  it('the door reads the tokens of concurrent requests together, each request answered for its own token', { skip: kind === 'pglite' ? 'PGlite runs statements one at a time on this thread' : false }, async () => {
    const patient = await launchToken('patient/*.rs', FHIR, 'patient', 'patient-demo');
    const backend = await backendToken('system/Observation.rs');
    const clinicianJwt = await launchToken('patient/*.rs', JWT_FHIR);
    const patientJwt = await launchToken('patient/*.rs', JWT_FHIR, 'patient', 'patient-demo');
    const asks: [string, string, number][] = [
      ...Array.from({ length: 4 }, (): [string, string, number] => [patient, `${FHIR}/Patient/${AMY}`, 200]),
      ...Array.from({ length: 4 }, (): [string, string, number] => [patient, `${FHIR}/Observation/obs-daniel-lab`, 404]),
      ...Array.from({ length: 4 }, (): [string, string, number] => [backend, `${FHIR}/Observation/obs-daniel-lab`, 200]),
      ...Array.from({ length: 4 }, (): [string, string, number] => [randomBytes(32).toString('base64url'), `${FHIR}/Patient/${AMY}`, 401]),
      ...Array.from({ length: 2 }, (): [string, string, number] => [clinicianJwt, `${JWT_FHIR}/Patient/${AMY}`, 200]),
      ...Array.from({ length: 2 }, (): [string, string, number] => [patientJwt, `${JWT_FHIR}/Observation/obs-daniel-lab`, 404]),
    ];
    const answers = await Promise.all(asks.map(([token, url]) => get(token, url)));
    assert.deepEqual(answers.map((a) => a.statusCode), asks.map(([, , status]) => status));

    // Requests the door refuses write nothing: what they cost is their lookups alone. One by one, one each.
    await app.runtime.audit.flush();
    const counts = app.runtime.database.statementCounts!()!;
    let was = counts.statements;
    assert.equal((await get(randomBytes(32).toString('base64url'), `${FHIR}/Patient/${AMY}`)).statusCode, 401);
    assert.equal((await get(randomBytes(32).toString('base64url'), `${FHIR}/Patient/${AMY}`)).statusCode, 401);
    await app.runtime.audit.flush();
    assert.equal(counts.statements - was, 2, 'one lookup per request, one at a time');
    was = counts.statements;
    const refused = await Promise.all(Array.from({ length: 20 }, () => get(randomBytes(32).toString('base64url'), `${FHIR}/Patient/${AMY}`)));
    assert.deepEqual(new Set(refused.map((r) => r.statusCode)), new Set([401]));
    await app.runtime.audit.flush();
    // Twenty at once: those that arrive while a lookup is in flight go together in the next.
    assert.ok(counts.statements - was <= 4, `${counts.statements - was} statements for twenty requests at once`);
  });

  it('a backend token stops working when its client is suspended', async () => {
    const token = await backendToken('system/Observation.rs');
    assert.equal((await get(token, `${FHIR}/Observation/obs-daniel-lab`)).statusCode, 200);
    const jwt = await backendToken('system/Observation.rs', JWT_FHIR);
    assert.equal((await get(jwt, `${JWT_FHIR}/Observation/obs-daniel-lab`)).statusCode, 200);
    const suspend = await app.inject({ method: 'PATCH', url: '/admin/api/clients/backend', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` }, payload: { status: 'suspended' } });
    assert.equal(suspend.statusCode, 200, suspend.body);
    assert.equal((await get(token, `${FHIR}/Observation/obs-daniel-lab`)).statusCode, 401);
    assert.equal((await get(jwt, `${JWT_FHIR}/Observation/obs-daniel-lab`)).statusCode, 401);
    await app.inject({ method: 'PATCH', url: '/admin/api/clients/backend', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` }, payload: { status: 'active' } });
  });

  it('upstream down: 502, slow: 504, each with an OperationOutcome and never a hang', async () => {
    const token = await backendToken('system/*.rs', DOWN);
    const down = await get(token, `${DOWN}/Observation/x`);
    assert.equal(down.statusCode, 502);
    assert.deepEqual(down.json(), { resourceType: 'OperationOutcome', issue: [{ severity: 'fatal', code: 'transient', diagnostics: 'the FHIR server could not be reached' }] });

    const slowToken = await backendToken('system/*.rs', SLOW);
    const started = Date.now();
    const slow = await get(slowToken, `${SLOW}/Observation/hang`);
    const took = Date.now() - started;
    assert.equal(slow.statusCode, 504);
    assert.deepEqual(slow.json(), { resourceType: 'OperationOutcome', issue: [{ severity: 'fatal', code: 'timeout', diagnostics: 'the FHIR server did not answer in time' }] });
    assert.ok(took >= 900 && took < 5000, `answered after the 1 s timeout, not much later (${took} ms)`);
  });

  it('forwards the FHIR headers and the configured upstream credentials, never the client\'s Authorization or cookies; rewrites the upstream\'s URLs', async () => {
    const token = await backendToken('system/*.cruds', CAPTURE);
    capture.requests.length = 0;
    capture.answer = {
      status: 201,
      headers: { 'content-type': 'application/fhir+json', location: `${capture.url}/Observation/new-1/_history/1`, etag: 'W/"1"', 'set-cookie': 'upstream=1' },
      body: JSON.stringify({ resourceType: 'Observation', id: 'new-1', status: 'final', code: { text: 'x' }, meta: { versionId: '1', source: `${capture.url}/Device/d` } }),
    };
    const res = await app.inject({
      method: 'POST',
      url: '/capture/Observation',
      headers: { authorization: `Bearer ${token}`, cookie: 'session=secret', 'content-type': 'application/fhir+json', prefer: 'return=representation', 'if-none-exist': 'identifier=abc', 'x-request-id': 'req-42', connection: 'keep-alive, x-private', 'x-private': 'no' },
      payload: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'x' }, focus: [{ reference: `${CAPTURE}/Device/d` }] }),
    });
    assert.equal(res.statusCode, 201, res.body);
    assert.equal(res.headers.location, `${CAPTURE}/Observation/new-1/_history/1`);
    assert.equal(res.headers.etag, 'W/"1"');
    assert.equal(res.headers['set-cookie'], undefined, 'no upstream cookie reaches the client');
    assert.equal((res.json<Resource>().meta as { source: string }).source, `${CAPTURE}/Device/d`);

    const sent = capture.requests.at(-1)!;
    assert.equal(sent.url, '/base/r4/Observation');
    assert.equal(sent.headers.authorization, UPSTREAM_AUTHORIZATION);
    assert.equal(sent.headers.cookie, undefined);
    assert.equal(sent.headers['x-private'], undefined);
    assert.equal(sent.headers.prefer, 'return=representation');
    assert.equal(sent.headers['if-none-exist'], 'identifier=abc');
    assert.equal(sent.headers['x-request-id'], 'req-42');
    assert.equal(sent.headers.accept, 'application/fhir+json');
    assert.equal((JSON.parse(sent.body) as { focus: { reference: string }[] }).focus[0]!.reference, `${capture.url}/Device/d`, 'the public base in a body becomes the upstream\'s');
  });

  it('an upstream that fails or answers with something other than FHIR JSON is a 502', async () => {
    const token = await backendToken('system/*.rs', CAPTURE);
    capture.answer = { status: 500, headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', diagnostics: 'disk full' }] }) };
    const failed = await get(token, `${CAPTURE}/Observation/x`);
    assert.equal(failed.statusCode, 502);
    assert.equal(diagnostics(failed), 'the FHIR server failed (500): disk full');
    capture.answer = { status: 200, headers: { 'content-type': 'text/html' }, body: '<html>login</html>' };
    const html = await get(token, `${CAPTURE}/Observation/x`);
    assert.equal(html.statusCode, 502);
    assert.equal(diagnostics(html), 'the FHIR server answered 200 with something that is not a FHIR resource in JSON');
    capture.answer = { status: 200, headers: {}, body: '{}' };
  });

  it('paging links lead through the gateway, and a link with the confinement taken out is confined again', async () => {
    const token = await launchToken('patient/*.rs');
    const first = (await get(token, `${FHIR}/Observation?_count=2`)).json<Bundle>();
    assert.equal(first.entry?.length, 2);
    const next = first.link?.find((l) => l.relation === 'next')?.url ?? '';
    assert.ok(next.startsWith(`${FHIR}/Observation?`), next);
    const second = (await get(token, next)).json<Bundle>();
    assert.ok((second.entry ?? []).every((e) => (e.resource.subject as { reference: string }).reference === `Patient/${AMY}`));
    const stripped = new URL(next);
    for (const name of [...stripped.searchParams.keys()]) if (name !== '_count' && name !== '_offset') stripped.searchParams.delete(name);
    const tampered = (await get(token, stripped.href)).json<Bundle>();
    assert.ok((tampered.entry ?? []).length > 0);
    assert.ok((tampered.entry ?? []).every((e) => (e.resource.subject as { reference: string }).reference === `Patient/${AMY}`), 'narrowed again');
  });

  it('HEAD is the GET without its body (RFC 9110 §9.3.2): the upstream is sent a GET, and each HEAD is audited as the read it is', async () => {
    // Patient reads by the clinician: the connected-apps test below counts the patient's Conditions.
    const token = await launchToken('patient/*.rs');
    const head = (url: string, bearer = token) => app.inject({ method: 'HEAD', url: new URL(url).pathname, headers: { authorization: `Bearer ${bearer}` } });
    await app.runtime.audit.flush();
    const before = await ctx.current.database.db.selectFrom('audit_events').select((eb) => eb.fn.countAll<string>().as('n')).where('type', '=', 'fhir.access').executeTakeFirstOrThrow();
    const read = await head(`${FHIR}/Patient/${AMY}`);
    assert.equal(read.statusCode, 200);
    assert.equal(read.body, '');
    assert.equal(read.headers['content-length'], String(Buffer.byteLength((await get(token, `${FHIR}/Patient/${AMY}`)).body)), 'the length of the GET\'s body');
    const denied = await head(`${FHIR}/Patient/${DANIEL}`);
    assert.equal(denied.statusCode, 404);
    assert.equal(denied.body, '');
    await app.runtime.audit.flush();
    const rows = await ctx.current.database.db.selectFrom('audit_events').selectAll().where('type', '=', 'fhir.access').orderBy('seq', 'desc').limit(3).execute();
    const count = await ctx.current.database.db.selectFrom('audit_events').select((eb) => eb.fn.countAll<string>().as('n')).where('type', '=', 'fhir.access').executeTakeFirstOrThrow();
    assert.equal(Number(count.n) - Number(before.n), 3, 'one event per HEAD, as per GET');
    const [refused, , allowed] = rows;
    assert.deepEqual(
      { outcome: allowed!.outcome, user: allowed!.user_id, patient: allowed!.patient_id, details: allowed!.details },
      { outcome: 'success', user: 'demo-clinician', patient: AMY, details: { base: FHIR, interaction: 'read', resourceType: 'Patient', id: AMY, status: 200, resources: 1 } },
    );
    assert.equal(refused!.outcome, 'failure');
    assert.deepEqual(refused!.details, { base: FHIR, interaction: 'read', resourceType: 'Patient', id: DANIEL, status: 404, resources: 0, reason: `Patient/${DANIEL} is not known` });

    const backend = await backendToken('system/*.rs', CAPTURE);
    capture.requests.length = 0;
    capture.answer = { status: 200, headers: { 'content-type': 'application/fhir+json', etag: 'W/"3"' }, body: JSON.stringify({ resourceType: 'Observation', id: 'x', status: 'final', code: { text: 'x' } }) };
    const upstreamRead = await head(`${CAPTURE}/Observation/x`, backend);
    assert.equal(upstreamRead.statusCode, 200);
    assert.equal(upstreamRead.headers.etag, 'W/"3"');
    assert.deepEqual(capture.requests.map((r) => `${r.method} ${r.url}`), ['GET /base/r4/Observation/x']);
    capture.answer = { status: 200, headers: {}, body: '{}' };
  });

  it('one audit event per FHIR interaction, exported as a BALP-style AuditEvent; the patient sees which app read what on the connected-apps page', async () => {
    const token = await launchToken('patient/*.rs', FHIR, 'patient', 'patient-demo');
    await app.runtime.audit.flush();
    const before = await ctx.current.database.db.selectFrom('audit_events').select((eb) => eb.fn.countAll<string>().as('n')).where('type', '=', 'fhir.access').executeTakeFirstOrThrow();
    assert.equal((await get(token, `${FHIR}/Observation?category=laboratory`)).statusCode, 200);
    assert.equal((await get(token, `${FHIR}/Condition/cond-amy`)).statusCode, 200);
    assert.equal((await get(token, `${FHIR}/Condition/cond-daniel`)).statusCode, 404);
    await app.runtime.audit.flush();
    const rows = await ctx.current.database.db.selectFrom('audit_events').selectAll().where('type', '=', 'fhir.access').orderBy('seq', 'desc').limit(3).execute();
    const count = await ctx.current.database.db.selectFrom('audit_events').select((eb) => eb.fn.countAll<string>().as('n')).where('type', '=', 'fhir.access').executeTakeFirstOrThrow();
    assert.equal(Number(count.n) - Number(before.n), 3, 'one event per interaction');
    const [denied, read, search] = rows;
    assert.deepEqual(
      { outcome: search!.outcome, client: search!.client_id, user: search!.user_id, patient: search!.patient_id, details: search!.details },
      { outcome: 'success', client: 'app', user: 'demo-patient', patient: AMY, details: { base: FHIR, interaction: 'search-type', resourceType: 'Observation', status: 200, resources: 2 } },
    );
    assert.deepEqual(read!.details, { base: FHIR, interaction: 'read', resourceType: 'Condition', id: 'cond-amy', status: 200, resources: 1 });
    assert.equal(denied!.outcome, 'failure');
    assert.deepEqual(denied!.details, { base: FHIR, interaction: 'read', resourceType: 'Condition', id: 'cond-daniel', status: 404, resources: 0, reason: 'Condition/cond-daniel is not known' });

    const exported = await app.inject({ method: 'GET', url: '/admin/api/audit/export?type=fhir.access&format=bundle&limit=10000', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
    assert.equal(exported.statusCode, 200, exported.body);
    const event = (exported.json<Bundle>().entry ?? []).map((e) => e.resource).find((r) => r.id === String(read!.seq))!;
    assert.deepEqual(event.type, { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest', display: 'RESTful Operation' });
    assert.deepEqual((event.subtype as unknown[])[1], { system: 'http://hl7.org/fhir/restful-interaction', code: 'read' });
    assert.equal(event.action, 'R');
    assert.equal(event.outcome, '0');
    const entities = event.entity as { what: { reference?: string }; role?: { code: string } }[];
    assert.ok(entities.some((e) => e.what.reference === `Patient/${AMY}` && e.role?.code === '1'), 'the patient');
    assert.ok(entities.some((e) => e.what.reference === 'Condition/cond-amy' && e.role?.code === '4'), 'the resource read');

    const browser = new Browser(app, TEST_ISSUER);
    const signIn = await browser.go('GET', '/account/apps');
    const page = await browser.go('POST', formAction(signIn.res.body, '/login'), { csrf: inputValue(signIn.res.body, 'csrf'), username: 'patient', password: 'patient-demo' });
    assert.equal(page.res.statusCode, 200, page.res.body);
    const history = page.res.body.slice(page.res.body.indexOf('<h2 id="history">'));
    assert.match(history, /<h3 id="history-0">Chart App<\/h3>/);
    assert.match(history, /<td>Observations \(lab results, vital signs, assessments\)<\/td><td>\d+<\/td><td>\d{4}-\d{2}-\d{2} \d{2}:\d{2}<\/td>/);
    assert.match(history, /<td>Conditions[^<]*<\/td><td>1<\/td>/, 'the refused read is not counted');
  });
});
