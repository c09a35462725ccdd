import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { createLaunch } from '../src/launch/context.js';
import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { createClient, form } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { callback, consent, exchange, login, pickPatient, REDIRECT_URI, startAuthorization, title, tokenRequest } from './helpers/flow.js';

/**
 * An app's attempts at crossing the boundaries of the authorization and token layer, each once a defect: a
 * server with two FHIR bases, as a deployment in front of two FHIR servers is.
 */
const OTHER_FHIR_BASE = 'http://localhost:3000/r4';
const PUBLIC = { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] };

describeEachDatabase('authorization and token layer, adversarial', (ctx) => {
  let app: FastifyInstance;
  const db = () => ctx.current.database.db;
  before(async () => {
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN, FHIR_BASE_URLS: `${TEST_FHIR_BASE},${OTHER_FHIR_BASE}` });
    await createClient(app, { ...PUBLIC, client_id: 'ehr-app', client_name: 'Clinic App' });
  });
  after(() => app.close());

  it("a resource indicator naming another FHIR server than aud is refused: a launch made for one server does not carry its patient to another's token", async () => {
    const launchFor = async () => (await createLaunch(db(), app.runtime.box, { client_id: 'ehr-app', fhir_base: TEST_FHIR_BASE, patient: 'demo-daniel-okafor' })).launch;
    const other = await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch patient/*.rs', launch: await launchFor(), resource: OTHER_FHIR_BASE });
    assert.deepEqual(callback(other), { error: 'invalid_target', error_description: `resource ${OTHER_FHIR_BASE} is not the FHIR server aud names (${TEST_FHIR_BASE})`, state: 'state-1', iss: TEST_ISSUER });

    // Two resources, the second another server: refused too (before, the consent page came back after every Allow).
    const both = await startAuthorization(app, { client_id: 'ehr-app', scope: 'patient/*.rs' }, {});
    both.page = await both.browser.go('GET', `/auth?${form({ client_id: 'ehr-app', response_type: 'code', redirect_uri: REDIRECT_URI, state: 'state-1', aud: TEST_FHIR_BASE, scope: 'launch/patient patient/*.rs', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' })}&${form({ resource: TEST_FHIR_BASE })}&${form({ resource: OTHER_FHIR_BASE })}`);
    assert.deepEqual(callback(both), { error: 'invalid_target', error_description: 'one resource at most: the FHIR server aud names', state: 'state-1', iss: TEST_ISSUER });

    const noAud = await startAuthorization(app, { client_id: 'ehr-app', scope: 'patient/*.rs', aud: '', resource: OTHER_FHIR_BASE });
    assert.deepEqual(callback(noAud), { error: 'invalid_request', error_description: 'aud is required: the base URL of the FHIR server the app wants to access', state: 'state-1', iss: TEST_ISSUER });

    // The FHIR server aud names, in another spelling: the token's aud and fhirUser would take that spelling.
    const spelled = await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch patient/*.rs', launch: await launchFor(), resource: `${TEST_FHIR_BASE}/` });
    assert.deepEqual(callback(spelled), { error: 'invalid_target', error_description: `resource ${TEST_FHIR_BASE}/: name the FHIR server by its base URL, ${TEST_FHIR_BASE}`, state: 'state-1', iss: TEST_ISSUER });

    // The resource aud names is the request without one: the launch's server, its patient.
    const same = await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch patient/*.rs', launch: await launchFor(), resource: TEST_FHIR_BASE });
    await login(same, 'clinician', 'clinician-demo');
    assert.match(title(same.page), /^Allow Clinic App to access Daniel Okafor/);
    await consent(same);
    const res = await exchange(app, same);
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.json<{ patient: string }>().patient, 'demo-daniel-okafor');
  });

  it("the id_token's fhirUser is under the FHIR base the token is for, as introspection says, at the exchange and at every refresh", async () => {
    const flow = await startAuthorization(app, { client_id: 'ehr-app', scope: 'openid fhirUser launch/patient patient/Observation.rs offline_access', aud: OTHER_FHIR_BASE });
    await login(flow, 'clinician', 'clinician-demo');
    await pickPatient(flow, 'demo-amy-shaw');
    await consent(flow);
    const expected = `${OTHER_FHIR_BASE}/Practitioner/demo-practitioner`;
    const claims = (idToken: string) => JSON.parse(Buffer.from(idToken.split('.')[1]!, 'base64url').toString()) as { fhirUser?: string };
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json<{ id_token: string; access_token: string; refresh_token: string }>();
    assert.equal(claims(body.id_token).fhirUser, expected);
    const introspected = await app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ token: body.access_token, client_id: 'ehr-app' }) });
    assert.deepEqual([introspected.json<{ aud: string }>().aud, introspected.json<{ fhirUser: string }>().fhirUser], [OTHER_FHIR_BASE, expected]);
    const refreshed = await tokenRequest(app, { grant_type: 'refresh_token', refresh_token: body.refresh_token, client_id: 'ehr-app' });
    assert.equal(refreshed.statusCode, 200, refreshed.body);
    assert.equal(claims(refreshed.json<{ id_token: string }>().id_token).fhirUser, expected);
  });

  it('a refresh naming another resource is invalid_target before the refresh token is used: the next refresh with it still works', async () => {
    const flow = await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch/patient patient/Observation.rs offline_access' });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    const { refresh_token: refreshToken } = res.json<{ refresh_token: string }>();
    const refresh = (more: Record<string, string>) => tokenRequest(app, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: 'ehr-app', ...more });
    for (const resource of [OTHER_FHIR_BASE, 'https://elsewhere.example/fhir']) {
      const wrong = await refresh({ resource });
      assert.equal(wrong.statusCode, 400, wrong.body);
      assert.deepEqual(wrong.json(), { error: 'invalid_target', error_description: `resource ${resource} is not the FHIR server this refresh token was issued for` });
    }
    const two = await app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: `${form({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: 'ehr-app', resource: TEST_FHIR_BASE })}&${form({ resource: OTHER_FHIR_BASE })}` });
    assert.deepEqual(two.json(), { error: 'invalid_target', error_description: 'only a single resource indicator value must be requested/resolved during Access Token Request' });
    // Before, the first refused refresh had used the token up: this one was "refresh token already used" and ended the grant.
    const right = await refresh({ resource: TEST_FHIR_BASE });
    assert.equal(right.statusCode, 200, right.body);
  });

  it('a code exchange naming another resource is invalid_target before the code is used: the exchange with the right one still works', async () => {
    const flow = await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch/patient patient/Observation.rs offline_access' });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    for (const resource of [OTHER_FHIR_BASE, 'https://elsewhere.example/fhir']) {
      const wrong = await exchange(app, flow, { resource });
      assert.equal(wrong.statusCode, 400, wrong.body);
      assert.deepEqual(wrong.json(), { error: 'invalid_target', error_description: `resource ${resource} is not the FHIR server this authorization code was issued for` });
    }
    const { code } = callback(flow);
    const two = await app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: `${form({ grant_type: 'authorization_code', code: code!, redirect_uri: REDIRECT_URI, client_id: 'ehr-app', code_verifier: flow.verifier, resource: TEST_FHIR_BASE })}&${form({ resource: OTHER_FHIR_BASE })}` });
    assert.deepEqual(two.json(), { error: 'invalid_target', error_description: 'only a single resource indicator value must be requested/resolved during Access Token Request' });
    // Before, the first refused exchange had used the code up: this one was "authorization code already consumed" and ended the grant.
    const right = await exchange(app, flow, { resource: TEST_FHIR_BASE });
    assert.equal(right.statusCode, 200, right.body);
    const again = await exchange(app, flow, { resource: TEST_FHIR_BASE });
    assert.deepEqual(again.json(), { error: 'invalid_grant', error_description: 'grant request is invalid: authorization code already consumed' });
  });

  it("an operator taking a record off a caregiver's links ends the caregiver's grants for it: refresh and introspection stop, grants for the others stay", async () => {
    const admin = (method: 'POST' | 'PATCH', url: string, payload: object) => app.inject({ method, url, headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` }, payload });
    const created = await admin('POST', '/admin/api/users', { id: 'carer', username: 'carer', password: 'carer-password', fhirUser: 'RelatedPerson/carer-1', name: 'Cary Carer', roles: ['patient'], patients: ['demo-grace-miller', 'demo-lucia-fernandez'] });
    assert.equal(created.statusCode, 201, created.body);
    const authorize = async (patient: string) => {
      const flow = await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch/patient patient/*.rs offline_access' });
      if (title(flow.page) === 'Sign in') await login(flow, 'carer', 'carer-password');
      await pickPatient(flow, patient);
      await consent(flow);
      const res = await exchange(app, flow);
      assert.equal(res.statusCode, 200, res.body);
      return res.json<{ access_token: string; refresh_token: string; patient: string }>();
    };
    const grace = await authorize('demo-grace-miller');
    const lucia = await authorize('demo-lucia-fernandez');
    assert.deepEqual([grace.patient, lucia.patient], ['demo-grace-miller', 'demo-lucia-fernandez']);

    const changed = await admin('PATCH', '/admin/api/users/carer', { patients: ['demo-lucia-fernandez'] });
    assert.equal(changed.statusCode, 200, changed.body);
    const introspect = (token: string) => app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ token, client_id: 'ehr-app' }) });
    assert.deepEqual((await introspect(grace.access_token)).json(), { active: false });
    const refused = await tokenRequest(app, { grant_type: 'refresh_token', refresh_token: grace.refresh_token, client_id: 'ehr-app' });
    assert.equal(refused.json<{ error: string }>().error, 'invalid_grant', refused.body);

    assert.equal((await introspect(lucia.access_token)).json<{ patient: string }>().patient, 'demo-lucia-fernandez');
    const refreshed = await tokenRequest(app, { grant_type: 'refresh_token', refresh_token: lucia.refresh_token, client_id: 'ehr-app' });
    assert.equal(refreshed.statusCode, 200, refreshed.body);
  });
});
