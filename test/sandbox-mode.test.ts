import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { testApp, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { describeEachDatabase } from './helpers/databases.js';
import { login, startAuthorization, title } from './helpers/flow.js';

/**
 * SANDBOX decides what a developer's sandbox has and a deployment never shows: demo data, the launcher, open
 * registration, the embedded FHIR server behind the FHIR base.
 */
const UNSET = { SEED_DEMO: '', REGISTRATION: '', REGISTRATION_STATUS: '' };

describeEachDatabase('sandbox mode on', (ctx) => {
  let sandbox: FastifyInstance;
  before(async () => {
    sandbox = await testApp(ctx.current.database, { ...UNSET, SANDBOX: 'true' });
  });
  after(() => sandbox.close());

  it('the launcher, open registration, demo logins, and the embedded FHIR server behind the FHIR base', async () => {
    assert.equal((await sandbox.inject({ method: 'GET', url: '/launcher' })).statusCode, 200);
    const registered = await sandbox.inject({ method: 'POST', url: '/reg', payload: { redirect_uris: ['https://app.example/cb'], token_endpoint_auth_method: 'none' } });
    assert.equal(registered.statusCode, 201, registered.body);
    const metadata = await sandbox.inject({ method: 'GET', url: '/fhir/metadata' });
    assert.equal(metadata.statusCode, 200);
    assert.equal(metadata.json<{ implementation: { url: string } }>().implementation.url, TEST_FHIR_BASE, 'the embedded server, through the gateway');
    const flow = await startAuthorization(sandbox, { client_id: 'demo-app', redirect_uri: `${TEST_ISSUER}/sample-app/`, scope: 'openid launch/patient patient/*.rs' });
    await login(flow, 'clinician', 'clinician-demo');
    assert.match(title(flow.page), /^Allow .* to access the record of the patient you choose\?$/, 'the demo app and the demo clinician are there');
  });
});

describeEachDatabase('sandbox mode off', (ctx) => {
  let deployment: FastifyInstance;
  before(async () => {
    deployment = await testApp(ctx.current.database, { ...UNSET, SANDBOX: 'false' });
  });
  after(() => deployment.close());

  it('none of them is reachable, and no demo data is seeded', async () => {
    assert.equal((await deployment.inject({ method: 'GET', url: '/launcher' })).statusCode, 404);
    const registered = await deployment.inject({ method: 'POST', url: '/reg', payload: { redirect_uris: ['https://app.example/cb'], token_endpoint_auth_method: 'none' } });
    assert.equal(registered.statusCode, 401, 'registration needs an initial access token');
    const metadata = await deployment.inject({ method: 'GET', url: '/fhir/metadata' });
    assert.equal(metadata.statusCode, 404, 'no FHIR server behind the base');
    const flow = await startAuthorization(deployment, { client_id: 'demo-app', redirect_uri: `${TEST_ISSUER}/sample-app/`, scope: 'openid' });
    assert.match(flow.page.res.body, /invalid_client/, 'no demo app');
    assert.equal(await deployment.runtime.database.db.selectFrom('users').select('id').where('username', '=', 'clinician').executeTakeFirst(), undefined, 'no demo users');
  });
});
