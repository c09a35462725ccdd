import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { createLaunch } from '../src/launch/context.js';
import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { inputValue } from './helpers/browser.js';
import { createClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { callback, consent, exchange, login, REDIRECT_URI, startAuthorization, title } from './helpers/flow.js';

type Body = Record<string, unknown>;
const PUBLIC = { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] };

describeEachDatabase('EHR launch', (ctx) => {
  let app: FastifyInstance;
  const db = () => ctx.current.database.db;
  before(async () => {
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN });
    await createClient(app, { ...PUBLIC, client_id: 'ehr-app', client_name: 'Clinic App' });
    await createClient(app, { ...PUBLIC, client_id: 'trusted-app', client_name: 'Trusted App', consent: 'pre-approved' });
  });
  after(() => app.close());

  it('capability: launch-ehr, context-ehr-patient, context-ehr-encounter, context-banner, context-style, permission-user — the launch context arrives with the token, no picker', async () => {
    const fhirContext = [{ reference: 'DiagnosticReport/dr-1' }, { reference: 'ImagingStudy/is-1', role: 'https://example.org/roles/primary' }, { identifier: { system: 'urn:ehr:orders', value: 'ord-9' }, type: 'ServiceRequest' }];
    const { launch, expires_in } = await createLaunch(db(), app.runtime.box, {
      client_id: 'ehr-app',
      fhir_base: TEST_FHIR_BASE,
      patient: 'demo-daniel-okafor',
      encounter: 'demo-enc-daniel-1',
      fhirContext,
      intent: 'reconcile-medications',
      need_patient_banner: false,
      smart_style_url: 'https://ehr.example.org/smart-style.json',
      tenant: 'clinic-7',
    });
    assert.equal(expires_in, 300);
    const flow = await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch openid fhirUser user/Observation.rs patient/Patient.rs online_access', launch });
    await login(flow, 'clinician', 'clinician-demo');
    assert.equal(title(flow.page), 'Allow Clinic App to access Daniel Okafor&#39;s record and those of other patients you can access?', 'no picker: the EHR gave the patient; user/ scopes reach others too');
    await consent(flow);
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json<Body>();
    assert.equal(body.scope, 'launch openid fhirUser user/Observation.rs patient/Patient.rs online_access');
    assert.equal(body.patient, 'demo-daniel-okafor');
    assert.equal(body.encounter, 'demo-enc-daniel-1');
    assert.deepEqual(body.fhirContext, fhirContext);
    assert.equal(body.need_patient_banner, false);
    assert.equal(body.smart_style_url, 'https://ehr.example.org/smart-style.json');
    assert.equal(body.intent, 'reconcile-medications');
    assert.equal(body.tenant, 'clinic-7');
    assert.ok(body.refresh_token, 'online_access: a refresh token');
  });

  it('a pre-approved app skips the consent page; the launch decides the patient', async () => {
    const { launch } = await createLaunch(db(), app.runtime.box, { patient: 'demo-grace-miller' });
    const flow = await startAuthorization(app, { client_id: 'trusted-app', scope: 'launch launch/patient patient/*.rs', launch });
    await login(flow, 'clinician', 'clinician-demo');
    const body = (await exchange(app, flow)).json<Body>();
    assert.equal(body.scope, 'launch launch/patient patient/*.rs');
    assert.equal(body.patient, 'demo-grace-miller');
    assert.equal(body.need_patient_banner, true, 'the EHR did not say it shows a banner: the app should');
  });

  it('refuses unknown, expired, reused and foreign launches before any page, by redirect with the reason', async () => {
    const expect = async (launch: string, description: string, params: Record<string, string> = {}) => {
      const flow = await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch patient/*.rs', launch, ...params });
      assert.deepEqual(callback(flow), { error: 'invalid_request', error_description: description, state: 'state-1', iss: TEST_ISSUER });
    };
    await expect('no-such-launch', 'launch is unknown or expired: the EHR must create a new one');
    const expired = await createLaunch(db(), app.runtime.box, { patient: 'demo-amy-shaw' }, 1);
    await db().updateTable('launches').set({ expires_at: new Date(Date.now() - 1000) }).where('id', '=', app.runtime.box.bearerId(expired.launch)).execute();
    await expect(expired.launch, 'launch is unknown or expired: the EHR must create a new one');
    await expect((await createLaunch(db(), app.runtime.box, { client_id: 'another-app', patient: 'demo-amy-shaw' })).launch, 'launch was issued for another client');
    await expect((await createLaunch(db(), app.runtime.box, { fhir_base: 'https://other.example/fhir', patient: 'demo-amy-shaw' })).launch, 'launch was issued for another FHIR server (aud)');

    const used = await createLaunch(db(), app.runtime.box, { patient: 'demo-amy-shaw' });
    const first = await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch patient/*.rs', launch: used.launch });
    await login(first, 'clinician', 'clinician-demo');
    await consent(first);
    assert.ok(callback(first).code);
    await expect(used.launch, 'launch was already used: the EHR must create a new one for each launch');

    const scopeless = await startAuthorization(app, { client_id: 'ehr-app', scope: 'patient/*.rs', launch: (await createLaunch(db(), app.runtime.box, {})).launch });
    assert.deepEqual(callback(scopeless), { error: 'invalid_scope', error_description: 'the launch parameter needs the launch scope', scope: 'launch', state: 'state-1', iss: TEST_ISSUER });
  });

  it('a launch created for one user cannot be used by another', async () => {
    const { launch } = await createLaunch(db(), app.runtime.box, { user: 'demo-patient', patient: 'demo-amy-shaw' });
    const flow = await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch patient/*.rs', launch });
    await login(flow, 'clinician', 'clinician-demo');
    assert.deepEqual(callback(flow), { error: 'access_denied', error_description: 'the launch was created for another user than the one who signed in', state: 'state-1', iss: TEST_ISSUER });
  });

  it("a launch for a patient the signed-in user may not act for is refused; their own is accepted", async () => {
    const foreign = await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch patient/*.rs', launch: (await createLaunch(db(), app.runtime.box, { patient: 'demo-grace-miller' })).launch });
    await login(foreign, 'patient', 'patient-demo');
    assert.deepEqual(callback(foreign), { error: 'access_denied', error_description: "the signed-in user may not act for the launch's patient", state: 'state-1', iss: TEST_ISSUER });
    const own = await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch patient/*.rs', launch: (await createLaunch(db(), app.runtime.box, { patient: 'demo-amy-shaw' })).launch });
    await login(own, 'patient', 'patient-demo');
    await consent(own);
    assert.equal((await exchange(app, own)).json<{ patient: string }>().patient, 'demo-amy-shaw');
  });

  it("the EHR's encounter is the token's: an encounter form sent on the way (another visit of the patient, or none) changes nothing", async () => {
    for (const sent of ['demo-enc-amy-2', 'none']) {
      const { launch } = await createLaunch(db(), app.runtime.box, { client_id: 'ehr-app', patient: 'demo-amy-shaw', encounter: 'demo-enc-amy-1' });
      const flow = await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch launch/encounter patient/*.rs', launch });
      await login(flow, 'clinician', 'clinician-demo');
      assert.match(title(flow.page), /^Allow Clinic App to access Amy V. Shaw/, 'no encounter picker: the EHR gave the encounter');
      const consentPage = flow.page.res.body;
      const uid = /\/interaction\/([^/"]+)\/consent/.exec(consentPage)![1]!;
      const answer = await flow.browser.go('POST', `/interaction/${uid}/encounter`, { csrf: inputValue(consentPage, 'csrf'), encounter: sent });
      assert.match(title(answer), /^Allow Clinic App to access Amy V. Shaw/);
      await consent(flow);
      const body = (await exchange(app, flow)).json<Body>();
      assert.equal(body.encounter, 'demo-enc-amy-1', `sent ${sent}`);
    }
  });

  it('a launch that gives no patient puts none in the token: a patient form sent on the way is refused', async () => {
    const { launch } = await createLaunch(db(), app.runtime.box, { client_id: 'ehr-app' });
    const flow = await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch user/*.rs', launch });
    await login(flow, 'clinician', 'clinician-demo');
    const consentPage = flow.page.res.body;
    const uid = /\/interaction\/([^/"]+)\/consent/.exec(consentPage)![1]!;
    const answer = await flow.browser.send('POST', `/interaction/${uid}/patient`, { csrf: inputValue(consentPage, 'csrf'), patient: 'demo-amy-shaw' });
    assert.equal(answer.statusCode, 400);
    assert.match(answer.body, /That patient cannot be chosen here/);
    await consent(flow);
    const body = (await exchange(app, flow)).json<Body>();
    assert.equal(body.scope, 'launch user/*.rs');
    assert.equal(body.patient, undefined);
  });

  it('two tabs racing with one launch: only one authorization takes it', async () => {
    const { launch } = await createLaunch(db(), app.runtime.box, { patient: 'demo-amy-shaw' });
    const [a, b] = [await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch patient/*.rs', launch }), await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch patient/*.rs', launch })];
    await login(a, 'clinician', 'clinician-demo');
    await login(b, 'clinician', 'clinician-demo');
    assert.match(title(a.page), /^Allow /);
    assert.deepEqual(callback(b), { error: 'invalid_request', error_description: 'launch was already used or has expired: the EHR must create a new one', state: 'state-1', iss: TEST_ISSUER });
  });
});
