import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance, LightMyRequestResponse } from 'fastify';

import { clientKey } from './helpers/assertions.js';
import { testApp, TEST_FHIR_BASE } from './helpers/app.js';
import { basicAuth, form } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization, tokenRequest } from './helpers/flow.js';
import { expectOAuthError } from './helpers/oauth-error.js';

type Body = Record<string, unknown>;
const ADMIN_TOKEN = 'admin-token-for-tests-0123456789abcdef';

describeEachDatabase('admin API', (ctx) => {
  let app: FastifyInstance;
  before(async () => {
    app = await testApp(ctx.current.database, { ADMIN_TOKEN, SEED_DEMO: 'true' });
  });
  after(() => app.close());

  const call = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: unknown, token = ADMIN_TOKEN, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> =>
    app.inject({ method, url: `/admin/api${url}`, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers }, ...(payload === undefined ? {} : { payload: payload as string }) });

  it('authenticates before anything else: 401 without or with a wrong token, before any 400', async () => {
    const none = await call('POST', '/clients', { nonsense: true }, '');
    expectOAuthError(none, 401, 'invalid_token', 'send Authorization: Bearer with ADMIN_TOKEN or an access token carrying the admin scope');
    assert.match(String(none.headers['www-authenticate']), /^Bearer realm="admin", error="invalid_token"/);
    expectOAuthError(await call('GET', '/clients', undefined, 'wrong-token'), 401, 'invalid_token', 'the token is not ADMIN_TOKEN, nor an active access token of an active client of this server');
    expectOAuthError(await call('GET', '/users/nobody', undefined, ''), 401, 'invalid_token', /ADMIN_TOKEN/);
    assert.equal((await call('GET', '/clients')).headers['cache-control'], 'no-store');
  });

  it('serves its OpenAPI 3 document without authentication, covering every admin route', async () => {
    const res = await app.inject({ method: 'GET', url: '/admin/api/openapi.json' });
    assert.equal(res.statusCode, 200);
    const doc = res.json<{ openapi: string; paths: Record<string, Record<string, unknown>> }>();
    assert.equal(doc.openapi, '3.0.3');
    const routes = Object.entries(doc.paths).flatMap(([path, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`)).sort();
    assert.deepEqual(routes, [
      'DELETE /admin/api/attribution-lists/{id}',
      'DELETE /admin/api/clients/{client_id}',
      'DELETE /admin/api/grants/{grant_id}',
      'DELETE /admin/api/patients/{id}',
      'DELETE /admin/api/tiered-oauth/links',
      'GET /admin/api/attribution-lists',
      'GET /admin/api/attribution-lists/{id}',
      'GET /admin/api/audit',
      'GET /admin/api/audit/export',
      'GET /admin/api/clients',
      'GET /admin/api/clients/{client_id}',
      'GET /admin/api/grants',
      'GET /admin/api/keys',
      'GET /admin/api/members/{patient_id}/consents',
      'GET /admin/api/patients',
      'GET /admin/api/patients/{id}',
      'GET /admin/api/patients/{id}/encounters',
      'GET /admin/api/reports/patient-access',
      'GET /admin/api/representatives',
      'GET /admin/api/tiered-oauth/links',
      'GET /admin/api/users',
      'GET /admin/api/users/{id}',
      'PATCH /admin/api/clients/{client_id}',
      'PATCH /admin/api/users/{id}',
      'POST /admin/api/attribution-lists',
      'POST /admin/api/clients',
      'POST /admin/api/clients/{client_id}/approve',
      'POST /admin/api/clients/{client_id}/reject',
      'POST /admin/api/clients/{client_id}/secret',
      'POST /admin/api/keys/rotate',
      'POST /admin/api/launches',
      'POST /admin/api/members/{patient_id}/consents',
      'POST /admin/api/members/{patient_id}/consents/{id}/withdraw',
      'POST /admin/api/patients',
      'POST /admin/api/patients/$import',
      'POST /admin/api/patients/{id}/encounters',
      'POST /admin/api/registration-tokens',
      'POST /admin/api/representatives',
      'POST /admin/api/representatives/{id}/revoke',
      'POST /admin/api/tiered-oauth/links',
      'POST /admin/api/users',
      'POST /admin/api/users/{id}/password',
    ]);
  });

  it('clients: create (secret shown once), read, list with paging, change, suspend, rotate the secret, delete', async () => {
    const created = await call('POST', '/clients', { client_id: 'admin-made', client_name: 'Admin Made', redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code', 'refresh_token', 'client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'openid launch/patient patient/*.rs system/Patient.rs', contacts: ['ops@example.org'] });
    assert.equal(created.statusCode, 201, created.body);
    const client = created.json<Body>();
    assert.equal(client.client_id, 'admin-made');
    assert.match(client.client_secret as string, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(client.status, 'active');
    assert.deepEqual(client.response_types, ['code']);
    const secret = client.client_secret as string;

    const read = (await call('GET', '/clients/admin-made')).json<Body>();
    assert.equal(read.client_secret, undefined, 'never shown again');
    assert.equal(read.has_secret, true);
    assert.equal(read.scope, 'openid launch/patient patient/*.rs system/Patient.rs');

    const token = await tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, { authorization: basicAuth('admin-made', secret) });
    assert.equal(token.statusCode, 200, token.body);

    const page1 = (await call('GET', '/clients?limit=1')).json<{ items: Body[]; next: string | null }>();
    assert.equal(page1.items.length, 1);
    assert.ok(page1.next);
    const page2 = (await call('GET', `/clients?limit=1&after=${encodeURIComponent(page1.next)}`)).json<{ items: Body[] }>();
    assert.notEqual(page2.items[0]?.client_id, page1.items[0]?.client_id);

    const suspended = await call('PATCH', '/clients/admin-made', { status: 'suspended' });
    assert.equal(suspended.json<Body>().status, 'suspended');
    const refused = await tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, { authorization: basicAuth('admin-made', secret) });
    assert.equal(refused.statusCode, 401, 'a suspended client cannot authenticate');
    await call('PATCH', '/clients/admin-made', { status: 'active', client_name: 'Renamed' });
    assert.equal((await call('GET', '/clients/admin-made')).json<Body>().client_name, 'Renamed');

    const rotated = (await call('POST', '/clients/admin-made/secret')).json<Body>();
    assert.notEqual(rotated.client_secret, secret);
    assert.equal((await tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, { authorization: basicAuth('admin-made', secret) })).statusCode, 401, 'the old secret stops working');
    const fresh = await tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, { authorization: basicAuth('admin-made', rotated.client_secret as string) });
    assert.equal(fresh.statusCode, 200);
    // The scopes a registration allows are read anew once it changes (the answer for the same request was kept).
    assert.equal((await call('PATCH', '/clients/admin-made', { scope: 'system/Observation.rs' })).statusCode, 200);
    expectOAuthError(await tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, { authorization: basicAuth('admin-made', rotated.client_secret as string) }), 400, 'invalid_scope', 'system/Patient.rs: not within the scopes this client is pre-authorized for');
    await call('PATCH', '/clients/admin-made', { scope: 'openid launch/patient patient/*.rs system/Patient.rs' });

    assert.equal((await call('DELETE', '/clients/admin-made')).statusCode, 204);
    expectOAuthError(await call('GET', '/clients/admin-made'), 404, 'not_found', 'no client admin-made');
    expectOAuthError(await call('DELETE', '/clients/admin-made'), 404, 'not_found', 'no client admin-made');
    const introspected = await app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('admin-made', rotated.client_secret as string) }, payload: form({ token: fresh.json<Body>().access_token as string }) });
    assert.equal(introspected.statusCode, 401, 'the deleted client no longer exists');
    const rows = await ctx.current.database.db.selectFrom('oidc_payloads').select('id').where('id', '=', app.runtime.box.bearerId(fresh.json<Body>().access_token as string)).execute();
    assert.deepEqual(rows, [], 'its tokens are gone');
  });

  it('clients: a pending registration is approved or rejected with the reason, once; search by name or id', async () => {
    const pending = async (id: string) => {
      const res = await call('POST', '/clients', { client_id: id, client_name: `Waiting ${id}`, status: 'pending', grant_types: ['client_credentials'], scope: 'system/Patient.rs' });
      assert.equal(res.statusCode, 201, res.body);
    };
    await pending('wait-1');
    await pending('wait-2');
    // Approving needs the version reviewed; changing the status instead is not a way round it.
    expectOAuthError(await call('POST', '/clients/wait-1/approve', {}), 400, 'invalid_request', 'reviewed_updated_at: the updated_at of the registration reviewed is required to approve it');
    const bare = await app.inject({ method: 'POST', url: '/admin/api/clients/wait-1/approve', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expectOAuthError(bare, 400, 'invalid_request', 'reviewed_updated_at: the updated_at of the registration reviewed is required to approve it');
    for (const status of ['active', 'suspended']) {
      expectOAuthError(await call('PATCH', '/clients/wait-1', { status, client_name: 'Approved by a side door' }), 409, 'conflict', 'client wait-1 is pending: approve or reject it (POST /admin/api/clients/wait-1/approve or /reject, with the reviewed_updated_at of the registration reviewed), not by changing its status');
    }
    const untouched = (await call('GET', '/clients/wait-1')).json<Body>();
    assert.deepEqual([untouched.status, untouched.client_name], ['pending', 'Waiting wait-1'], 'the refused change changed nothing');
    assert.equal((await call('PATCH', '/clients/wait-1', { status: 'pending' })).statusCode, 200, 'staying pending is no decision');
    const approved = await call('POST', '/clients/wait-1/approve', { reviewed_updated_at: (await call('GET', '/clients/wait-1')).json<Body>().updated_at as string });
    assert.equal(approved.statusCode, 200, approved.body);
    assert.equal(approved.json<Body>().status, 'active');
    expectOAuthError(await call('POST', '/clients/wait-1/approve', { reviewed_updated_at: untouched.updated_at as string }), 409, 'conflict', 'client wait-1 is active, not pending: only a pending registration is approved or rejected');
    // Bound to the version reviewed (updated_at): a registration changed since is a 409, not decided.
    const seen = (await call('GET', '/clients/wait-2')).json<Body>().updated_at as string;
    await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal((await call('PATCH', '/clients/wait-2', { client_name: 'Waiting wait-2, renamed' })).statusCode, 200);
    const stale = await call('POST', '/clients/wait-2/reject', { reason: 'no contract', reviewed_updated_at: seen });
    assert.equal(stale.statusCode, 409, stale.body);
    assert.match(stale.json<Body>().error_description as string, /^client wait-2 changed its registration at .+, after the version reviewed \(.+\): review it again$/);
    assert.equal((await call('GET', '/clients/wait-2')).json<Body>().status, 'pending');
    expectOAuthError(await call('POST', '/clients/wait-2/approve', { reviewed_updated_at: 'now' }), 400, 'invalid_request', 'reviewed_updated_at: must be a valid date-time');
    expectOAuthError(await call('POST', '/clients/wait-2/reject', {}), 400, 'invalid_request', 'reason: is required');
    expectOAuthError(await call('POST', '/clients/wait-2/reject', { reason: '   ' }), 400, 'invalid_request', 'reason: say why the registration is rejected');
    const rejected = await call('POST', '/clients/wait-2/reject', { reason: 'no contract', reviewed_updated_at: (await call('GET', '/clients/wait-2')).json<Body>().updated_at as string });
    assert.equal(rejected.json<Body>().status, 'suspended');
    expectOAuthError(await call('POST', '/clients/nobody/approve', {}), 404, 'not_found', 'no client nobody');
    const audit = (await call('GET', '/audit?type=client.&client=wait-2')).json<{ items: Body[] }>().items.map((e) => [e.type, e.details]);
    assert.deepEqual(audit.map(([type]) => type), ['client.created', 'client.updated', 'client.rejected'], 'the refused stale decision recorded nothing');
    assert.deepEqual([audit[0], audit[2]], [['client.created', { status: 'pending', token_endpoint_auth_method: 'client_secret_basic', grant_types: ['client_credentials'], scope: 'system/Patient.rs' }], ['client.rejected', { status: 'suspended', reason: 'no contract' }]]);
    const found = (await call('GET', '/clients?q=WAITING%20WAIT-')).json<{ items: Body[] }>().items.map((c) => c.client_id);
    assert.deepEqual(found, ['wait-1', 'wait-2']);
  });

  it('clients: refuses bad metadata, naming what is wrong', async () => {
    expectOAuthError(await call('POST', '/clients', { client_name: 'x', grant_types: ['authorization_code'], token_endpoint_auth_method: 'none' }), 400, 'invalid_request', 'redirect_uris: at least one is required for the authorization_code grant');
    expectOAuthError(await call('POST', '/clients', { redirect_uris: ['http://app.example/cb'] }), 400, 'invalid_request', 'redirect_uris: http://app.example/cb must use https (http only on localhost)');
    expectOAuthError(await call('POST', '/clients', { grant_types: ['client_credentials'], token_endpoint_auth_method: 'none' }), 400, 'invalid_request', 'token_endpoint_auth_method: none cannot be used with client_credentials; backend services authenticate with private_key_jwt');
    expectOAuthError(await call('POST', '/clients', { grant_types: ['client_credentials'], token_endpoint_auth_method: 'private_key_jwt' }), 400, 'invalid_request', 'jwks or jwks_uri is required for private_key_jwt');
    const key = await clientKey('ES384');
    expectOAuthError(await call('POST', '/clients', { grant_types: ['client_credentials'], token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [{ ...key.jwk, d: 'secret' }] } }), 400, 'invalid_request', 'jwks: publish public keys only (a key holds private or symmetric material)');
    expectOAuthError(await call('POST', '/clients', { redirect_uris: [REDIRECT_URI], scope: 'patient/Observation.dus' }), 400, 'invalid_request', 'scope: patient/Observation.dus: permissions ".dus" must each appear once and in the order c, r, u, d, s');
    expectOAuthError(await call('POST', '/clients', { redirect_uris: [REDIRECT_URI], unknown_field: 1 }), 400, 'invalid_request', 'unknown_field: is not a known property');
    expectOAuthError(await call('POST', '/clients', { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'client_secret_jwt' }), 400, 'invalid_request', /^token_endpoint_auth_method: must be one of "none", /);
    expectOAuthError(await call('POST', '/clients', { client_id: 'urn:smart-auth:account', redirect_uris: [REDIRECT_URI] }), 400, 'invalid_request', 'client_id: the urn:smart-auth: prefix is reserved');
    assert.equal((await call('POST', '/clients', { client_id: 'taken', redirect_uris: [REDIRECT_URI] })).statusCode, 201);
    expectOAuthError(await call('POST', '/clients', { client_id: 'taken', redirect_uris: [REDIRECT_URI] }), 409, 'conflict', 'client_id taken is taken');
    expectOAuthError(await call('PATCH', '/clients/taken', {}), 400, 'invalid_request', 'the request body must have at least 1 property');
    expectOAuthError(await call('PATCH', '/clients/nobody', { client_name: 'x' }), 404, 'not_found', 'no client nobody');
    assert.equal((await call('POST', '/clients', { client_id: 'public-one', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none' })).statusCode, 201);
    expectOAuthError(await call('POST', '/clients/public-one/secret'), 400, 'invalid_request', 'client public-one authenticates with none: it has no secret');
  });

  it('users: create, read, list, change, disable (ends their access), reset the password', async () => {
    const created = await call('POST', '/users', { id: 'u-admin', username: 'nurse.jo', password: 'correct horse battery', fhirUser: 'Practitioner/nurse-jo', name: 'Jo Nurse', roles: ['clinician'] });
    assert.equal(created.statusCode, 201, created.body);
    const user = created.json<Body>();
    assert.deepEqual(Object.keys(user).sort(), ['created_at', 'disabled', 'fhirUser', 'id', 'last_login_at', 'name', 'patients', 'roles', 'updated_at', 'username']);
    assert.ok(!JSON.stringify(user).includes('correct horse'), 'no password, no hash');
    expectOAuthError(await call('POST', '/users', { username: 'nurse.jo', fhirUser: 'Practitioner/x', name: 'Dup' }), 409, 'conflict', 'username nurse.jo or id is taken');
    expectOAuthError(await call('POST', '/users', { username: 'x', fhirUser: 'Organization/1', name: 'X' }), 400, 'invalid_request', /^fhirUser: must match the pattern \^\(Practitioner\|/);
    expectOAuthError(await call('POST', '/users', { username: 'y', password: 'short', fhirUser: 'Patient/1', name: 'Y' }), 400, 'invalid_request', 'password: must have at least 10 characters');
    expectOAuthError(await call('POST', '/users', { username: 'z', fhirUser: 'RelatedPerson/z', name: 'Z', patients: ['not-in-directory'] }), 400, 'invalid_request', 'patients: not in the directory: not-in-directory');
    assert.equal((await call('GET', '/users/u-admin')).json<Body>().username, 'nurse.jo');
    expectOAuthError(await call('GET', '/users/nobody'), 404, 'not_found', 'no user nobody');
    assert.deepEqual((await call('GET', '/users?q=nurse')).json<{ items: Body[] }>().items.map((u) => u.id), ['u-admin']);

    await registerPublic();
    const flow = await startAuthorization(app, { client_id: 'admin-public', scope: 'launch/patient patient/Patient.rs offline_access' });
    await login(flow, 'nurse.jo', 'correct horse battery');
    assert.match(flow.page.res.body, /the record of the patient you choose/, 'the picker');

    const disabled = await call('PATCH', '/users/u-admin', { disabled: true, name: 'Jo N.' });
    assert.equal(disabled.json<Body>().disabled, true);
    const again = await startAuthorization(app, { client_id: 'admin-public', scope: 'openid' });
    await login(again, 'nurse.jo', 'correct horse battery');
    assert.equal(again.page.res.statusCode, 401, 'a disabled user cannot sign in');

    await call('PATCH', '/users/u-admin', { disabled: false });
    assert.equal((await call('POST', '/users/u-admin/password', { password: 'a new long password' })).statusCode, 204);
    const third = await startAuthorization(app, { client_id: 'admin-public', scope: 'openid' });
    await login(third, 'nurse.jo', 'a new long password');
    assert.match(third.page.res.body, /Allow /);
    expectOAuthError(await call('POST', '/users/nobody/password', { password: 'long enough password' }), 404, 'not_found', 'no user nobody');
  });

  it('a user changed through the admin API: the next launch of a user already signed in carries the change at once', async () => {
    assert.equal((await call('POST', '/users', { id: 'u-renamed', username: 'dr.renamed', password: 'correct horse battery', fhirUser: 'Practitioner/before', name: 'Before', roles: ['clinician'] })).statusCode, 201);
    await registerPublic();
    /** The fhirUser of the launch context the consent recorded (what introspection and JWT access tokens say). */
    const launchFhirUser = async (flow: Awaited<ReturnType<typeof startAuthorization>>): Promise<unknown> => {
      await consent(flow);
      const token = await exchange(app, flow);
      assert.equal(token.statusCode, 200, token.body);
      const row = await ctx.current.database.db.selectFrom('grant_contexts').select('fhir_user').where('account_id', '=', 'u-renamed').orderBy('created_at', 'desc').limit(1).executeTakeFirstOrThrow();
      return row.fhir_user;
    };
    const first = await startAuthorization(app, { client_id: 'admin-public', scope: 'openid fhirUser' });
    await login(first, 'dr.renamed', 'correct horse battery');
    assert.equal(await launchFhirUser(first), `${TEST_FHIR_BASE}/Practitioner/before`);
    assert.equal((await call('PATCH', '/users/u-renamed', { fhirUser: 'Practitioner/after' })).statusCode, 200);
    // The same browser, still signed in: its user is read again, not served from this process's user cache.
    const second = await startAuthorization(app, { client_id: 'admin-public', scope: 'openid fhirUser' }, { browser: first.browser });
    assert.equal(await launchFhirUser(second), `${TEST_FHIR_BASE}/Practitioner/after`);
  });

  async function registerPublic(): Promise<void> {
    if ((await call('GET', '/clients/admin-public')).statusCode === 200) return;
    const res = await call('POST', '/clients', { client_id: 'admin-public', client_name: 'Admin Public', redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none' });
    assert.equal(res.statusCode, 201, res.body);
  }

  it('patients: FHIR R4 Patient and Encounter in, searchable out, Bundle and NDJSON import all or nothing', async () => {
    const patient = { resourceType: 'Patient', id: 'adm-p1', name: [{ family: 'Rossi', given: ['Maria'] }], birthDate: '1980-05-06', gender: 'female', identifier: [{ system: 'urn:mrn', value: 'R-77' }] };
    assert.equal((await call('POST', '/patients', patient)).statusCode, 201);
    assert.deepEqual((await call('GET', '/patients/adm-p1')).json(), patient);
    assert.deepEqual((await call('GET', '/patients?q=rossi')).json<{ items: Body[] }>().items, [{ id: 'adm-p1', name: 'Maria Rossi', birthDate: '1980-05-06', gender: 'female', identifiers: ['R-77'] }]);
    expectOAuthError(await call('POST', '/patients', { resourceType: 'Patient', name: [] }), 400, 'invalid_request', 'Patient.id is required: 1–64 characters of A–Z, a–z, 0–9, - and .');
    expectOAuthError(await call('POST', '/patients', { resourceType: 'Observation', id: 'o' }), 400, 'invalid_request', 'expected a FHIR R4 Patient resource (resourceType "Patient")');
    expectOAuthError(await call('POST', '/patients', { resourceType: 'Patient', id: 'p', birthDate: '05/06/1980' }), 400, 'invalid_request', 'Patient/p: birthDate must be a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)');

    const encounter = { resourceType: 'Encounter', id: 'adm-e1', status: 'finished', class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' }, period: { start: '2026-01-02T10:00:00Z' } };
    const added = await call('POST', '/patients/adm-p1/encounters', encounter);
    assert.equal(added.statusCode, 201, added.body);
    assert.deepEqual(added.json<Body>().subject, { reference: 'Patient/adm-p1' });
    assert.deepEqual((await call('GET', '/patients/adm-p1/encounters')).json<{ items: Body[] }>().items.map((e) => e.id), ['adm-e1']);
    expectOAuthError(await call('POST', '/patients/adm-p1/encounters', { ...encounter, subject: { reference: 'Patient/other' } }), 400, 'invalid_request', 'Encounter/adm-e1: subject.reference is Patient/other, not Patient/adm-p1');
    expectOAuthError(await call('POST', '/patients/adm-p1/encounters', { ...encounter, status: 'done' }), 400, 'invalid_request', /^Encounter\/adm-e1: status must be one of planned/);
    expectOAuthError(await call('POST', '/patients/nobody/encounters', encounter), 404, 'not_found', 'no patient nobody');

    const bundle = { resourceType: 'Bundle', type: 'collection', entry: [{ resource: { resourceType: 'Patient', id: 'adm-p2', name: [{ text: 'Kim Lee' }] } }, { resource: { ...encounter, id: 'adm-e2', subject: { reference: 'Patient/adm-p2' } } }] };
    assert.deepEqual((await call('POST', '/patients/$import', JSON.stringify(bundle), ADMIN_TOKEN, { 'content-type': 'application/fhir+json' })).json(), { patients: 1, encounters: 1 });
    const ndjson = `${JSON.stringify({ resourceType: 'Patient', id: 'adm-p3', name: [{ family: 'Ng' }] })}\n${JSON.stringify({ ...encounter, id: 'adm-e3', subject: { reference: 'Patient/adm-p3' } })}\n`;
    assert.deepEqual((await call('POST', '/patients/$import', ndjson, ADMIN_TOKEN, { 'content-type': 'application/fhir+ndjson' })).json(), { patients: 1, encounters: 1 });
    const bad = `${JSON.stringify({ resourceType: 'Patient', id: 'adm-p4' })}\n${JSON.stringify({ resourceType: 'Observation', id: 'x' })}\n`;
    expectOAuthError(await call('POST', '/patients/$import', bad, ADMIN_TOKEN, { 'content-type': 'application/fhir+ndjson' }), 400, 'invalid_request', 'resource 2: only Patient and Encounter resources are imported, not Observation');
    expectOAuthError(await call('POST', '/patients/$import', `${JSON.stringify({ resourceType: 'Patient', id: 'adm-p4' })}\nnull\n`, ADMIN_TOKEN, { 'content-type': 'application/fhir+ndjson' }), 400, 'invalid_request', 'line 2 is not a FHIR resource (a JSON object)');
    expectOAuthError(await call('GET', '/patients/adm-p4'), 404, 'not_found', 'no patient adm-p4');
    expectOAuthError(await call('POST', '/patients/$import', '{"resourceType":"Bundle"}', ADMIN_TOKEN, { 'content-type': 'application/fhir+json' }), 400, 'invalid_request', 'expected a FHIR Bundle with entry[]');

    assert.equal((await call('DELETE', '/patients/adm-p3')).statusCode, 204);
    expectOAuthError(await call('GET', '/patients/adm-p3/encounters'), 404, 'not_found', 'no patient adm-p3');
  });

  it('launches: created by the admin token or an EHR client with ehr-launch, and used by an EHR launch', async () => {
    const created = await call('POST', '/launches', { patient: 'demo-amy-shaw', encounter: 'demo-enc-amy-1', intent: 'summary', need_patient_banner: false, fhirContext: [{ reference: 'DiagnosticReport/1' }], aud: TEST_FHIR_BASE });
    assert.equal(created.statusCode, 201, created.body);
    assert.equal(created.json<Body>().expires_in, 300);
    expectOAuthError(await call('POST', '/launches', { fhirContext: [{ role: 'x' }] }), 400, 'invalid_request', 'fhirContext[0]: matches none of the allowed forms');
    expectOAuthError(await call('POST', '/launches', { encounter: 'e1' }), 400, 'invalid_request', 'encounter needs patient');
    // SMART 2.2 §fhirContext: what the spec forbids never reaches a token response.
    expectOAuthError(await call('POST', '/launches', { patient: 'demo-amy-shaw', fhirContext: [{ reference: 'Patient/demo-amy-shaw' }] }), 400, 'invalid_request', 'fhirContext[0]: a Patient in the launch role is given as patient, not in fhirContext; give it another role to include it');
    expectOAuthError(await call('POST', '/launches', { fhirContext: [{ reference: 'DiagnosticReport/1' }, { type: 'Encounter', identifier: { value: 'v1' }, role: 'launch' }] }), 400, 'invalid_request', 'fhirContext[1]: a Encounter in the launch role is given as encounter, not in fhirContext; give it another role to include it');
    expectOAuthError(await call('POST', '/launches', { fhirContext: [{ reference: 'DiagnosticReport/1', role: 'primary' }] }), 400, 'invalid_request', 'fhirContext[0].role "primary" must be an absolute URI (or "launch")');
    expectOAuthError(await call('POST', '/launches', { fhirContext: [{ reference: 'https://attacker.example/fhir/DiagnosticReport/1' }] }), 400, 'invalid_request', 'fhirContext[0].reference "https://attacker.example/fhir/DiagnosticReport/1" must be a relative reference such as Observation/123');
    expectOAuthError(await call('POST', '/launches', { fhirContext: [{ reference: 'Observation/1', type: 'DiagnosticReport' }] }), 400, 'invalid_request', "fhirContext[0].type DiagnosticReport does not match the reference's type Observation");
    const otherRole = await call('POST', '/launches', { patient: 'demo-amy-shaw', fhirContext: [{ reference: 'Patient/demo-grace-miller', role: 'https://example.org/roles/mother' }, { reference: 'Observation/1/_history/2', role: 'launch' }] });
    assert.equal(otherRole.statusCode, 201, 'a Patient in a role of its own, and a version reference, are fine');
    expectOAuthError(await call('POST', '/launches', { client_id: 'nobody' }), 400, 'invalid_request', 'no client nobody');
    expectOAuthError(await call('POST', '/launches', { aud: 'https://other.example/fhir' }), 400, 'invalid_request', "aud https://other.example/fhir is not one of this server's FHIR base URLs");

    const ehr = await clientKey('ES384');
    await call('POST', '/clients', { client_id: 'the-ehr', client_name: 'The EHR', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_post', scope: 'ehr-launch' });
    const secret = (await call('POST', '/clients/the-ehr/secret')).json<Body>().client_secret as string;
    const token = (await tokenRequest(app, { grant_type: 'client_credentials', scope: 'ehr-launch', client_id: 'the-ehr', client_secret: secret })).json<Body>().access_token as string;
    assert.ok(token, `an ehr-launch token (key ${ehr.kid} unused)`);
    const byEhr = await call('POST', '/launches', { patient: 'demo-daniel-okafor' }, token);
    assert.equal(byEhr.statusCode, 201);
    expectOAuthError(await call('GET', '/clients', undefined, token), 403, 'insufficient_scope', 'this request needs an access token with the admin scope');

    await registerPublic();
    const flow = await startAuthorization(app, { client_id: 'admin-public', scope: 'launch patient/*.rs', launch: byEhr.json<Body>().launch as string });
    await login(flow, 'clinician', 'clinician-demo');
    await consent(flow);
    assert.equal((await exchange(app, flow)).json<Body>().patient, 'demo-daniel-okafor');
  });

  it('grants: listed by user, client and patient; revoking one ends its tokens', async () => {
    await registerPublic();
    const flow = await startAuthorization(app, { client_id: 'admin-public', scope: 'launch/patient patient/Patient.rs offline_access' });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    const tokens = (await exchange(app, flow)).json<Body>();
    const byUser = (await call('GET', '/grants?user=demo-patient&client=admin-public')).json<{ items: Body[] }>().items;
    assert.equal(byUser.length, 1);
    const grant = byUser[0]!;
    assert.equal(grant.patient, 'demo-amy-shaw');
    assert.equal(grant.scope, 'launch/patient patient/Patient.rs offline_access');
    assert.ok(grant.last_used_at, 'the code exchange used it');
    assert.equal((await call('GET', '/grants?patient=demo-amy-shaw')).json<{ items: Body[] }>().items.some((g) => g.grant_id === grant.grant_id), true);
    assert.equal((await call('DELETE', `/grants/${String(grant.grant_id)}`)).statusCode, 204);
    assert.equal((await tokenRequest(app, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token as string, client_id: 'admin-public' })).statusCode, 400);
    expectOAuthError(await call('DELETE', `/grants/${String(grant.grant_id)}`), 404, 'not_found', `no grant ${String(grant.grant_id)}`);
  });

  it('keys: listed; rotation refused while the next key is new, forced otherwise, then published', async () => {
    const keys = (await call('GET', '/keys')).json<{ items: Body[] }>().items;
    assert.equal(keys.filter((k) => k.state === 'active').length, 4);
    expectOAuthError(await call('POST', '/keys/rotate', { algs: ['RS256'] }), 409, 'conflict', /^the next RS256 key \(.+\) has been published for \d+ s, less than the 360 s/);
    const rotated = (await call('POST', '/keys/rotate', { algs: ['RS256'], force: true })).json<{ rotated: Body[] }>().rotated;
    assert.equal(rotated.length, 1);
    const jwks = (await app.inject({ method: 'GET', url: '/jwks' })).json<{ keys: Body[] }>().keys;
    assert.equal(jwks.find((k) => k.alg === 'RS256')?.kid, rotated[0]!.activated, 'this process signs with the promoted key at once');
    expectOAuthError(await call('POST', '/keys/rotate', { algs: ['HS256'] }), 400, 'invalid_request', 'algs[0]: must be one of "RS256", "RS384", "ES256", "ES384"');
  });
});
