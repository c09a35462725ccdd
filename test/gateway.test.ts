import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, it } from 'node:test';

import type { FastifyInstance, LightMyRequestResponse } from 'fastify';

import { startFhirServer } from '../src/fhir/server.js';
import { createLaunch } from '../src/launch/context.js';
import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { basicAuth, createClient, form, registerClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { AMY, CATEGORY, DANIEL, GRACE, LOINC, PRACTITIONER, testRecords } from './helpers/fhir-data.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization } from './helpers/flow.js';

interface Resource {
  readonly resourceType: string;
  readonly id?: string;
  readonly [member: string]: unknown;
}
interface Bundle extends Resource {
  readonly entry?: { readonly resource: Resource & Bundle; readonly fullUrl?: string; readonly response?: { readonly status: string } }[];
  readonly link?: { readonly relation: string; readonly url: string }[];
  readonly total?: number;
}
interface Outcome {
  readonly issue: { readonly severity: string; readonly code: string; readonly diagnostics: string }[];
}
interface Statement {
  readonly implementation: { readonly url: string };
  readonly rest: { readonly security: { readonly cors: boolean; readonly service: { readonly coding: unknown[] }[]; readonly extension: { readonly url: string; readonly extension: { readonly url: string; readonly valueUri: string }[] }[] } }[];
}
type Json = Record<string, unknown>;
const PUBLIC = { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] };
const LAB = `${CATEGORY}|laboratory`;
const REALM = `Bearer realm="${TEST_FHIR_BASE}"`;

/** The ids of a Bundle's entries, `Type/id`, in order; matches and includes alike. */
const ids = (bundle: Bundle): string[] => (bundle.entry ?? []).map((e) => `${e.resource.resourceType}/${e.resource.id ?? ''}`);
const outcome = (res: LightMyRequestResponse): string => res.json<Outcome>().issue[0]!.diagnostics;

describeEachDatabase('FHIR gateway', (ctx) => {
  let app: FastifyInstance;
  let upstream: Awaited<ReturnType<typeof startFhirServer>>;
  const secret = randomBytes(24).toString('base64url');

  before(async () => {
    upstream = await startFhirServer();
    await upstream.fhir.load(testRecords() as never);
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN, FHIR_UPSTREAMS: `${TEST_FHIR_BASE}=${upstream.url}` });
    await createClient(app, { ...PUBLIC, client_id: 'app', client_name: 'Chart App' });
    await registerClient(app, { client_id: 'backend', grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'client_secret_basic', client_secret: secret, scope: 'system/Observation.rs system/Patient.rs' });
  });
  after(async () => {
    await app.close();
    await upstream.close();
  });

  /** An access token from an EHR launch of `app` for the patient, the clinician signed in. */
  const launchToken = async (scope: string, patient = AMY): Promise<Json> => {
    const { launch } = await createLaunch(ctx.current.database.db, app.runtime.box, { patient });
    const flow = await startAuthorization(app, { client_id: 'app', scope: `launch ${scope}`, launch });
    await login(flow, 'clinician', 'clinician-demo');
    await consent(flow);
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    return res.json<Json>();
  };
  /** A standalone launch without patient context: `user/` scopes for whoever signs in. */
  const userToken = async (scope: string, username = 'clinician', password = 'clinician-demo'): Promise<Json> => {
    const flow = await startAuthorization(app, { client_id: 'app', scope });
    await login(flow, username, password);
    await consent(flow);
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    return res.json<Json>();
  };
  const backendToken = async (scope: string): Promise<string> => {
    const res = await app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('backend', secret) }, payload: form({ grant_type: 'client_credentials', scope }) });
    assert.equal(res.statusCode, 200, res.body);
    return res.json<Json>().access_token as string;
  };
  const fhir = (token: string | undefined, method: string, url: string, body?: unknown, headers: Record<string, string> = {}) =>
    app.inject({
      method: method as 'GET',
      url: `/fhir${url}`,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/fhir+json' } : {}), ...headers },
      ...(body !== undefined ? { payload: JSON.stringify(body) } : {}),
    });
  const get = (token: string | undefined, url: string) => fhir(token, 'GET', url);

  it('GET {fhir}/metadata needs no token: the upstream CapabilityStatement with the SMART security section', async () => {
    const res = await get(undefined, '/metadata');
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.headers['content-type'], 'application/fhir+json; charset=utf-8');
    assert.equal(res.headers['access-control-allow-origin'], '*');
    const statement = res.json<Statement & Resource>();
    assert.equal(statement.resourceType, 'CapabilityStatement');
    assert.equal(statement.implementation.url, TEST_FHIR_BASE, 'the upstream base is rewritten');
    const security = statement.rest[0]!.security;
    assert.deepEqual(security.service[0]!.coding[0], { system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR', display: 'SMART-on-FHIR' });
    assert.equal(security.cors, true);
    const uris = security.extension.find((e) => e.url === 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris');
    assert.deepEqual(Object.fromEntries((uris?.extension ?? []).map((e) => [e.url, e.valueUri])), {
      authorize: `${TEST_ISSUER}/auth`,
      token: `${TEST_ISSUER}/token`,
      revoke: `${TEST_ISSUER}/revoke`,
      introspect: `${TEST_ISSUER}/introspect`,
      register: `${TEST_ISSUER}/reg`,
      manage: `${TEST_ISSUER}/account/apps`,
    });
    assert.equal((await get(undefined, '/.well-known/smart-configuration')).json<Json>().token_endpoint, `${TEST_ISSUER}/token`, 'discovery as before');
  });

  it('401 without a token (realm only, RFC 6750 §3.1), and with an unknown, malformed or non-Bearer one (invalid_token); each with an OperationOutcome', async () => {
    const none = await get(undefined, `/Patient/${AMY}`);
    assert.equal(none.statusCode, 401);
    assert.equal(none.headers['www-authenticate'], REALM);
    assert.deepEqual(none.json(), { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'login', diagnostics: 'this FHIR server needs an access token: send Authorization: Bearer <token>' }] });

    const unknown = await get('never-issued-token', `/Patient/${AMY}`);
    assert.equal(unknown.statusCode, 401);
    assert.equal(unknown.headers['www-authenticate'], `${REALM}, error="invalid_token", error_description="the access token is unknown, expired or revoked"`);
    assert.equal(outcome(unknown), 'the access token is unknown, expired or revoked');

    const basic = await fhir(undefined, 'GET', `/Patient/${AMY}`, undefined, { authorization: basicAuth('app', 'x') });
    assert.equal(basic.statusCode, 401);
    assert.match(basic.headers['www-authenticate'] as string, /error="invalid_token", error_description="the Authorization header must be Bearer followed by the access token"$/);
    const malformed = await fhir(undefined, 'GET', `/Patient/${AMY}`, undefined, { authorization: 'Bearer a"b' });
    assert.equal(malformed.statusCode, 401);
    assert.equal(outcome(malformed), 'the access token is malformed');
  });

  it('patient/ scopes reach the patient in context only: another patient\'s resources are 404, searches are narrowed, naming another patient is 403', async () => {
    const token = (await launchToken('patient/*.rs')).access_token as string;
    const amy = await get(token, `/Patient/${AMY}`);
    assert.equal(amy.statusCode, 200, amy.body);
    assert.equal(amy.json<Resource>().id, AMY);
    assert.match(amy.headers.etag as string, /^W\/"/);

    for (const url of [`/Patient/${DANIEL}`, '/Observation/obs-daniel-lab', '/Condition/cond-daniel', `/Observation/obs-daniel-lab/_history`, '/Observation/no-such-id']) {
      const res = await get(token, url);
      assert.equal(res.statusCode, 404, `${url}: ${res.body}`);
      assert.equal(res.json<Outcome>().issue[0]!.code, 'not-found');
    }

    const search = await get(token, '/Observation');
    assert.equal(search.statusCode, 200, search.body);
    const bundle = search.json<Bundle>();
    assert.deepEqual(ids(bundle).sort(), ['Observation/obs-amy-contained', 'Observation/obs-amy-lab', 'Observation/obs-amy-social', 'Observation/obs-amy-vital']);
    assert.equal(bundle.total, 4);
    for (const link of bundle.link ?? []) assert.ok(link.url.startsWith(`${TEST_FHIR_BASE}/Observation?`), link.url);
    for (const entry of bundle.entry ?? []) assert.ok(entry.fullUrl?.startsWith(`${TEST_FHIR_BASE}/Observation/`), entry.fullUrl);
    assert.ok(!search.body.includes(upstream.url), 'the upstream base appears nowhere');

    assert.deepEqual(ids((await get(token, `/Patient?name=Okafor`)).json()), [], 'a Patient search is narrowed to the patient');
    const posted = await app.inject({ method: 'POST', url: '/fhir/Observation/_search', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ code: '2345-7' }) });
    assert.equal(posted.statusCode, 200, posted.body);
    assert.deepEqual(ids(posted.json()).sort(), ['Observation/obs-amy-contained', 'Observation/obs-amy-lab'], 'POST _search is narrowed too');
    const postedForeign = await app.inject({ method: 'POST', url: '/fhir/Observation/_search', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ patient: DANIEL }) });
    assert.equal(postedForeign.statusCode, 403);
    assert.deepEqual(ids((await get(token, `/Observation?patient=${AMY}&category=${encodeURIComponent(LAB)}`)).json()).sort(), ['Observation/obs-amy-contained', 'Observation/obs-amy-lab']);

    for (const url of [`/Observation?patient=${DANIEL}`, `/Observation?subject=Patient/${DANIEL}`, `/Observation?patient=${AMY},${DANIEL}`, `/Patient?_id=${DANIEL}`]) {
      const res = await get(token, url);
      assert.equal(res.statusCode, 403, `${url}: ${res.body}`);
      assert.match(outcome(res), /outside the records this token reaches/);
    }
  });

  it('_include, _revinclude and contained resources never bring in what no scope reaches', async () => {
    const token = (await launchToken('patient/Observation.rs patient/Patient.rs')).access_token as string;
    const included = (await get(token, '/Observation?_include=Observation:performer&_include=Observation:subject')).json<Bundle>();
    assert.ok(ids(included).includes(`Patient/${AMY}`), 'the patient is included');
    assert.ok(!ids(included).includes(`Practitioner/${PRACTITIONER}`), 'no Practitioner scope: not included');

    const contained = (await get(token, '/Observation/obs-amy-contained')).json<Resource>();
    assert.deepEqual(contained.contained ?? [], [], 'contained Practitioner and Condition dropped: no scope reads them');

    const wide = (await launchToken('patient/*.rs')).access_token as string;
    const revincluded = await get(wide, `/Practitioner?_id=${PRACTITIONER}&_revinclude=Observation:performer&_revinclude=Patient:general-practitioner`);
    assert.equal(revincluded.statusCode, 200, revincluded.body);
    const found = ids(revincluded.json());
    assert.ok(found.includes(`Practitioner/${PRACTITIONER}`));
    assert.ok(found.includes('Observation/obs-amy-lab'), 'Amy\'s observations are hers to see');
    assert.ok(!found.some((id) => id.includes('daniel') || id.includes('grace') || id === `Patient/${DANIEL}`), `no one else's record: ${found.join(', ')}`);
  });

  it('Patient/$everything, _history and batch are checked entry by entry', async () => {
    const token = (await launchToken('patient/*.rs')).access_token as string;
    const everything = await get(token, `/Patient/${AMY}/$everything`);
    assert.equal(everything.statusCode, 200, everything.body);
    const all = ids(everything.json());
    assert.ok(all.includes(`Patient/${AMY}`) && all.includes('Condition/cond-amy') && all.includes('Encounter/enc-amy'));
    assert.ok(!all.some((id) => /daniel|grace/.test(id)), all.join(', '));
    assert.equal((await get(token, `/Patient/${DANIEL}/$everything`)).statusCode, 404);

    const history = await get(token, '/Observation/obs-amy-lab/_history');
    assert.equal(history.statusCode, 200);
    assert.deepEqual(ids(history.json()), ['Observation/obs-amy-lab']);

    const batch = await fhir(token, 'POST', '', {
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { request: { method: 'GET', url: `Patient/${AMY}` } },
        { request: { method: 'GET', url: `Patient/${DANIEL}` } },
        { request: { method: 'GET', url: 'Observation/obs-daniel-lab' } },
        { request: { method: 'GET', url: 'Observation?code=2345-7' } },
        { request: { method: 'GET', url: `Observation?patient=${GRACE}` } },
      ],
    });
    assert.equal(batch.statusCode, 200, batch.body);
    const entries = batch.json<Bundle>().entry ?? [];
    assert.equal(entries.length, 5);
    assert.equal(entries[0]!.resource.id, AMY);
    assert.equal(entries[1]!.response?.status, '404 Not Found');
    assert.equal(entries[2]!.response?.status, '404 Not Found');
    assert.deepEqual(ids(entries[3]!.resource).sort(), ['Observation/obs-amy-contained', 'Observation/obs-amy-lab'], 'the search entry is narrowed');
    assert.equal(entries[4]!.response?.status, '403 Forbidden');
  });

  it('granular scopes: searches narrowed to the category, reads outside it 404', async () => {
    const token = (await launchToken(`patient/Observation.rs?category=${LAB}`)).access_token as string;
    const search = (await get(token, '/Observation')).json<Bundle>();
    assert.deepEqual(ids(search).sort(), ['Observation/obs-amy-contained', 'Observation/obs-amy-lab']);
    assert.equal(search.total, 2);
    assert.equal((await get(token, '/Observation/obs-amy-vital')).statusCode, 404);
    assert.equal((await get(token, '/Observation/obs-amy-lab')).statusCode, 200);
    assert.equal((await get(token, '/Observation?_summary=count')).json<Bundle>().total, 2, 'the count is of what the scope reaches');
  });

  it('insufficient scope: 403 with WWW-Authenticate error="insufficient_scope" and the scope that would do', async () => {
    const token = (await launchToken('patient/Observation.rs')).access_token as string;
    const res = await get(token, '/Condition');
    assert.equal(res.statusCode, 403);
    assert.equal(res.headers['www-authenticate'], `${REALM}, error="insufficient_scope", error_description="no granted scope permits search (s) on Condition", scope="patient/Condition.s"`);
    assert.deepEqual(res.json(), { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'forbidden', diagnostics: 'no granted scope permits search (s) on Condition' }] });
    const write = await fhir(token, 'POST', '/Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${AMY}` } });
    assert.equal(write.statusCode, 403);
    assert.match(write.headers['www-authenticate'] as string, /scope="patient\/Observation\.c"$/);
  });

  it('a revoked token is refused at the very next request', async () => {
    const token = (await launchToken('patient/*.rs')).access_token as string;
    assert.equal((await get(token, `/Patient/${AMY}`)).statusCode, 200);
    const revoke = await app.inject({ method: 'POST', url: '/revoke', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ token, client_id: 'app' }) });
    assert.equal(revoke.statusCode, 200, revoke.body);
    const after = await get(token, `/Patient/${AMY}`);
    assert.equal(after.statusCode, 401);
    assert.match(after.headers['www-authenticate'] as string, /error="invalid_token"/);
  });

  it('user/ scopes reach the patients the user may act for; system/ scopes every record of their types', async () => {
    const clinician = (await userToken('openid fhirUser user/Observation.rs')).access_token as string;
    const everyone = ids((await get(clinician, '/Observation?_count=100')).json());
    assert.ok(everyone.includes('Observation/obs-daniel-lab') && everyone.includes('Observation/obs-grace-vital'), 'a clinician reaches every patient');

    const amy = (await userToken('openid fhirUser user/Observation.rs', 'patient', 'patient-demo')).access_token as string;
    assert.deepEqual(ids((await get(amy, '/Observation?_count=100')).json()).sort(), ['Observation/obs-amy-contained', 'Observation/obs-amy-lab', 'Observation/obs-amy-social', 'Observation/obs-amy-vital']);
    assert.equal((await get(amy, '/Observation/obs-daniel-lab')).statusCode, 404);

    const backend = await backendToken('system/Observation.rs');
    const all = (await get(backend, '/Observation?_count=100')).json<Bundle>();
    assert.equal(all.total, 7);
    const refused = await get(backend, '/Patient');
    assert.equal(refused.statusCode, 403, 'the token carries only what was asked for');
  });

  it('writes: a create, update or patch may not land outside the compartment; a write to another patient\'s resource is 404', async () => {
    const token = (await launchToken('patient/Observation.cruds patient/Patient.r')).access_token as string;
    const mine = { resourceType: 'Observation', status: 'final', category: [{ coding: [{ system: CATEGORY, code: 'vital-signs' }] }], code: { coding: [{ system: LOINC, code: '8867-4' }] }, subject: { reference: `Patient/${AMY}` } };
    const created = await fhir(token, 'POST', '/Observation', { ...mine, id: 'obs-daniel-lab' });
    assert.equal(created.statusCode, 201, created.body);
    const id = created.json<Resource>().id!;
    assert.notEqual(id, 'obs-daniel-lab', 'an id sent with a create is dropped: it never overwrites another resource');
    assert.ok((created.headers.location as string).startsWith(`${TEST_FHIR_BASE}/Observation/${id}`), created.headers.location);

    const foreign = await fhir(token, 'POST', '/Observation', { ...mine, subject: { reference: `Patient/${DANIEL}` } });
    assert.equal(foreign.statusCode, 403);
    assert.match(outcome(foreign), /outside what this token reaches/);

    const moved = await fhir(token, 'PUT', `/Observation/${id}`, { ...mine, id, subject: { reference: `Patient/${DANIEL}` } });
    assert.equal(moved.statusCode, 403);
    const updated = await fhir(token, 'PUT', `/Observation/${id}`, { ...mine, id, status: 'amended' });
    assert.equal(updated.statusCode, 200, updated.body);
    assert.equal(updated.json<Resource>().status, 'amended');

    const overwrite = await fhir(token, 'PUT', '/Observation/obs-daniel-lab', { ...mine, id: 'obs-daniel-lab' });
    assert.equal(overwrite.statusCode, 404, 'Daniel\'s observation cannot be taken over');
    assert.equal((await fhir(token, 'DELETE', '/Observation/obs-daniel-lab')).statusCode, 404);
    assert.equal((await fhir(token, 'PATCH', '/Observation/obs-daniel-lab', [{ op: 'replace', path: '/status', value: 'amended' }], { 'content-type': 'application/json-patch+json' })).statusCode, 404);

    const patchAway = await fhir(token, 'PATCH', `/Observation/${id}`, [{ op: 'replace', path: '/subject/reference', value: `Patient/${DANIEL}` }], { 'content-type': 'application/json-patch+json' });
    assert.equal(patchAway.statusCode, 403);
    const patched = await fhir(token, 'PATCH', `/Observation/${id}`, [{ op: 'replace', path: '/status', value: 'final' }], { 'content-type': 'application/json-patch+json' });
    assert.equal(patched.statusCode, 200, patched.body);

    const transaction = await fhir(token, 'POST', '', { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: mine, request: { method: 'POST', url: 'Observation' } }, { resource: { ...mine, subject: { reference: `Patient/${DANIEL}` } }, request: { method: 'POST', url: 'Observation' } }] });
    assert.equal(transaction.statusCode, 403, transaction.body);
    assert.match(outcome(transaction), /^Bundle\.entry\[1\] \(POST Observation\): /);
    assert.equal((await get(token, '/Observation?_count=100')).json<Bundle>().total, 5, 'nothing of the refused transaction was written');

    assert.equal((await fhir(token, 'DELETE', `/Observation/${id}`)).statusCode, 200);
  });

  it('a body that is not the resource the interaction names is 400 invalid (FHIR R4 §http), after the scopes: a token without them still hears insufficient_scope', async () => {
    const token = (await launchToken('patient/Observation.cruds patient/Patient.r')).access_token as string;
    const mine = { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${AMY}` } };
    const invalid = (diagnostics: string) => ({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid', diagnostics }] });
    const cases: [method: string, url: string, body: unknown, diagnostics: string][] = [
      ['POST', '/Observation', [1, 2], 'the body must be a Observation resource'],
      ['POST', '/Observation', null, 'the body must be a Observation resource'],
      ['POST', '/Observation', undefined, 'the body must be a Observation resource'],
      ['POST', '/Observation', { resourceType: 'Condition', code: { text: 'x' }, subject: { reference: `Patient/${AMY}` } }, 'the body must be a Observation resource'],
      ['PUT', '/Observation/x', { ...mine, id: 'y' }, 'the body must be the Observation with id x'],
      ['PUT', '/Observation/x', mine, 'the body must be the Observation with id x'],
      ['PUT', '/Observation/x', { ...mine, resourceType: 'Condition', id: 'x' }, 'the body must be the Observation with id x'],
      ['POST', '', { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: { resourceType: 'Condition' }, request: { method: 'POST', url: 'Observation' } }] }, 'Bundle.entry[0] (POST Observation): the body must be a Observation resource'],
    ];
    for (const [method, url, body, diagnostics] of cases) {
      const res = body === undefined ? await fhir(token, method, url) : await app.inject({ method: method as 'POST', url: `/fhir${url}`, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/fhir+json' }, payload: JSON.stringify(body) });
      assert.equal(res.statusCode, 400, `${method} ${url} ${JSON.stringify(body)}: ${res.body}`);
      assert.equal(res.headers['www-authenticate'], undefined);
      assert.deepEqual(res.json(), invalid(diagnostics));
    }
    const batch = await fhir(token, 'POST', '', { resourceType: 'Bundle', type: 'batch', entry: [{ resource: { ...mine, id: 'y' }, request: { method: 'PUT', url: 'Observation/x' } }] });
    assert.equal(batch.statusCode, 200, batch.body);
    assert.deepEqual(batch.json<Json>().entry, [{ response: { status: '400 Bad Request', outcome: invalid('the body must be the Observation with id x') } }]);
    // A conditional update selects across every record: a clinician's user/ scopes may, with the resource it names.
    const clinician = (await userToken('user/Observation.cruds')).access_token as string;
    assert.deepEqual((await fhir(clinician, 'PUT', '/Observation?identifier=urn:x|1', { resourceType: 'Condition' })).json(), invalid('the body must be a Observation resource'));

    const reader = (await launchToken('patient/Observation.rs')).access_token as string;
    const refused = await fhir(reader, 'POST', '/Observation', [1, 2]);
    assert.equal(refused.statusCode, 403);
    assert.equal(refused.headers['www-authenticate'], `${REALM}, error="insufficient_scope", error_description="no granted scope permits create (c) on Observation", scope="patient/Observation.c"`);
  });

  it("writes by a patient's token: another patient named anywhere in the compartment, or a reference that cannot be told, is refused; shared records are read-only to it", async () => {
    const token = (await launchToken('patient/Observation.cruds patient/Condition.cruds patient/Practitioner.cruds patient/Patient.r')).access_token as string;
    const about = (subject: unknown, extra: Json = {}) => ({ resourceType: 'Observation', status: 'final', code: { text: 'a note' }, subject, ...extra });
    // About Daniel, with Amy named only as the performer (each reference alone would be in Amy's compartment).
    const injected = await fhir(token, 'POST', '/Observation', about({ reference: `Patient/${DANIEL}` }, { performer: [{ reference: `Patient/${AMY}` }] }));
    assert.equal(injected.statusCode, 403, injected.body);
    assert.match(outcome(injected), /outside what this token reaches/);
    const asserted = await fhir(token, 'POST', '/Condition', { resourceType: 'Condition', code: { text: 'x' }, subject: { reference: `Patient/${DANIEL}` }, asserter: { reference: `Patient/${AMY}` } });
    assert.equal(asserted.statusCode, 403, asserted.body);
    // References the FHIR server may resolve to anyone: conditional, a transaction's urn:uuid, contained, logical.
    for (const subject of [{ reference: 'Patient?identifier=MRN-1002' }, { reference: 'urn:uuid:0b5b6a0e-55ec-4b7a-9f3c-8c2f0c3f3a10' }, { reference: '#p' }, { identifier: { system: 'urn:mrn', value: 'MRN-1002' } }]) {
      const res = await fhir(token, 'POST', '/Observation', about(subject, { performer: [{ reference: `Patient/${AMY}` }] }));
      assert.equal(res.statusCode, 403, JSON.stringify(subject));
    }
    // Amy's own, naming her practitioner as performer: fine.
    const own = await fhir(token, 'POST', '/Observation', about({ reference: `Patient/${AMY}` }, { performer: [{ reference: `Practitioner/${PRACTITIONER}` }, { reference: `Patient/${AMY}` }] }));
    assert.equal(own.statusCode, 201, own.body);
    const id = own.json<Resource>().id!;
    const patchedIn = await fhir(token, 'PATCH', `/Observation/${id}`, [{ op: 'add', path: '/performer/-', value: { reference: `Patient/${DANIEL}` } }], { 'content-type': 'application/json-patch+json' });
    assert.equal(patchedIn.statusCode, 403, 'a patch may not bring another patient in');

    // Shared records: read with the scope, never written by a token that reaches one patient.
    assert.equal((await get(token, `/Practitioner/${PRACTITIONER}`)).statusCode, 200);
    const renamed = await fhir(token, 'PUT', `/Practitioner/${PRACTITIONER}`, { resourceType: 'Practitioner', id: PRACTITIONER, name: [{ family: 'PWNED' }] });
    assert.equal(renamed.statusCode, 403);
    assert.equal(outcome(renamed), "a Practitioner is shared by every patient's record: to update one needs a scope that reaches every patient (system/, or user/ for a user who may access every record)");
    assert.equal((await fhir(token, 'POST', '/Practitioner', { resourceType: 'Practitioner', name: [{ family: 'New' }] })).statusCode, 403);
    assert.equal((await fhir(token, 'DELETE', `/Practitioner/${PRACTITIONER}`)).statusCode, 403);
    assert.equal((await fhir(token, 'PATCH', `/Practitioner/${PRACTITIONER}`, [{ op: 'replace', path: '/name/0/family', value: 'X' }], { 'content-type': 'application/json-patch+json' })).statusCode, 403);
    assert.deepEqual((await get(token, `/Practitioner/${PRACTITIONER}`)).json<Json>().name, [{ family: 'Rivera', given: ['Alex'] }], 'unchanged');

    // A clinician's user/ scopes reach every record: the shared ones are theirs to write.
    const clinician = (await userToken('user/Practitioner.cruds')).access_token as string;
    const byClinician = await fhir(clinician, 'PUT', `/Practitioner/${PRACTITIONER}`, { resourceType: 'Practitioner', id: PRACTITIONER, name: [{ family: 'Rivera', given: ['Alex'] }] });
    assert.equal(byClinician.statusCode, 200, byClinician.body);
  });

  it('what the gateway cannot reason about is refused; XML and other media types are not passed on', async () => {
    const token = (await launchToken('patient/*.rs')).access_token as string;
    assert.equal((await get(token, '/Observation?_filter=status%20eq%20final')).statusCode, 403);
    assert.equal((await fhir(token, 'POST', '/Observation/$validate', { resourceType: 'Observation' })).statusCode, 403);
    assert.equal((await get(token, '/?_type=Observation')).statusCode, 403);
    assert.equal((await get(token, '/Observation?_format=xml')).statusCode, 406);
    assert.equal((await fhir(token, 'GET', `/Patient/${AMY}`, undefined, { accept: 'application/fhir+xml' })).statusCode, 406);
    const text = await app.inject({ method: 'POST', url: '/fhir/Observation', headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain' }, payload: 'hello' });
    assert.equal(text.statusCode, 415);
    assert.equal(text.json<Resource>().resourceType, 'OperationOutcome');
    const broken = await app.inject({ method: 'POST', url: '/fhir/Observation', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/fhir+json' }, payload: '{"resourceType":' });
    assert.equal(broken.statusCode, 400);
    assert.equal(broken.json<Resource>().resourceType, 'OperationOutcome');
    assert.equal((await get(token, '/NotAType/1')).statusCode, 404);
    const huge = await app.inject({ method: 'POST', url: '/fhir/Observation', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/fhir+json' }, payload: JSON.stringify({ resourceType: 'Observation', note: [{ text: 'x'.repeat(16 * 1024 * 1024) }] }) });
    assert.equal(huge.statusCode, 413);
    assert.equal(huge.json<Outcome>().issue[0]!.diagnostics, 'the body is larger than 16777216 bytes');
    const patchType = await fhir(token, 'PATCH', '/Observation', []);
    assert.equal(patchType.statusCode, 405);
    assert.equal(patchType.headers.allow, 'GET, HEAD, POST, PUT, DELETE');
  });

  it('a path the router cannot read (a bad percent-encoding): 400 with an OperationOutcome, whatever the Accept', async () => {
    for (const accept of ['application/fhir+json', 'text/html,application/xhtml+xml']) {
      const res = await app.inject({ method: 'GET', url: '/fhir/Patient/%E0%A4%A', headers: { accept } });
      assert.equal(res.statusCode, 400);
      assert.equal(res.headers['content-type'], 'application/fhir+json; charset=utf-8');
      assert.equal(res.headers['access-control-allow-origin'], '*');
      assert.deepEqual(res.json(), { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'invalid', diagnostics: 'the path has an invalid percent-encoding' }] });
    }
  });

  it('HEAD is the GET without its body (RFC 9110 §9.3.2): the same token check and access rules', async () => {
    const metadata = await fhir(undefined, 'HEAD', '/metadata');
    assert.equal(metadata.statusCode, 200);
    assert.equal(metadata.headers['content-type'], 'application/fhir+json; charset=utf-8');
    assert.equal(metadata.body, '');

    const none = await fhir(undefined, 'HEAD', `/Patient/${AMY}`);
    assert.equal(none.statusCode, 401);
    assert.equal(none.headers['www-authenticate'], REALM);
    assert.equal(none.body, '');
    const unknown = await fhir('never-issued-token', 'HEAD', `/Patient/${AMY}`);
    assert.equal(unknown.statusCode, 401);
    assert.match(unknown.headers['www-authenticate'] as string, /error="invalid_token"/);

    const token = (await launchToken('patient/Patient.rs')).access_token as string;
    const got = await get(token, `/Patient/${AMY}`);
    const head = await fhir(token, 'HEAD', `/Patient/${AMY}`);
    assert.equal(head.statusCode, 200);
    assert.equal(head.body, '');
    for (const name of ['content-type', 'content-length', 'etag', 'last-modified', 'access-control-allow-origin']) assert.equal(head.headers[name], got.headers[name], name);
    assert.equal((await fhir(token, 'HEAD', `/Patient/${DANIEL}`)).statusCode, 404, 'another patient is as unknown as by GET');
    const outside = await fhir(token, 'HEAD', '/Observation?category=laboratory');
    assert.equal(outside.statusCode, 403);
    assert.match(outside.headers['www-authenticate'] as string, /error="insufficient_scope"/);
  });

  it('CORS: browser apps may call from any origin', async () => {
    const preflight = await app.inject({ method: 'OPTIONS', url: '/fhir/Observation', headers: { origin: 'https://app.example', 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } });
    assert.equal(preflight.statusCode, 204);
    assert.equal(preflight.headers['access-control-allow-origin'], '*');
    assert.match(preflight.headers['access-control-allow-headers'] as string, /Authorization/);
    assert.match(preflight.headers['access-control-allow-methods'] as string, /PATCH/);
  });
});
