import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { createLaunch } from '../src/launch/context.js';
import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { createClient, form } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { callback, consent, exchange, login, REDIRECT_URI, startAuthorization, title } from './helpers/flow.js';

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

    // The resource aud names (in another spelling) is the request without one: the launch's server, its patient.
    const same = await startAuthorization(app, { client_id: 'ehr-app', scope: 'launch patient/*.rs', launch: await launchFor(), resource: `${TEST_FHIR_BASE}/` });
    await login(same, 'clinician', 'clinician-demo');
    assert.match(title(same.page), /^Allow Clinic App to access Daniel Okafor/);
    await consent(same);
    const res = await exchange(app, same);
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.json<{ patient: string }>().patient, 'demo-daniel-okafor');
  });

});
