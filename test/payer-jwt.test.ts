import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { decodeProtectedHeader } from 'jose';

import { startFhirServer } from '../src/fhir/server.js';
import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE } from './helpers/app.js';
import { basicAuth, createClient, form } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { AMY, DANIEL, testRecords } from './helpers/fhir-data.js';
import { NPI } from './helpers/payer.js';

const admin = { authorization: `Bearer ${TEST_ADMIN_TOKEN}` };

/** The payer rules hold for RFC 9068 JWT access tokens as for opaque ones: the client's population is read at each request. */
describeEachDatabase('CMS-0057-F Provider Access with JWT access tokens', (ctx) => {
  let app: FastifyInstance;
  let upstream: Awaited<ReturnType<typeof startFhirServer>>;
  let secret: string;

  before(async () => {
    upstream = await startFhirServer();
    await upstream.fhir.load(testRecords() as never);
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN, FHIR_UPSTREAMS: `${TEST_FHIR_BASE}=${upstream.url}`, JWT_ACCESS_TOKEN_AUDIENCES: TEST_FHIR_BASE });
    secret = (await createClient(app, { client_id: 'clinic', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'system/Patient.rs', payer_role: 'provider-access', organization_identifiers: [`${NPI}|1234567893`] })).client_secret!;
  });
  after(async () => {
    await app.close();
    await upstream.close();
  });

  it('a JWT of a provider organisation reaches the attributed members only, and an opt-out counts at its next request', async () => {
    const res = await app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('clinic', secret) }, payload: form({ grant_type: 'client_credentials', scope: 'system/Patient.rs' }) });
    assert.equal(res.statusCode, 200, res.body);
    const token = res.json<{ access_token: string }>().access_token;
    assert.equal(decodeProtectedHeader(token).typ, 'at+jwt');
    const status = async (patient: string) => (await app.inject({ method: 'GET', url: `/fhir/Patient/${patient}`, headers: { authorization: `Bearer ${token}` } })).statusCode;

    assert.deepEqual([await status(AMY), await status(DANIEL)], [404, 404], 'no attribution list yet');
    const group = { resourceType: 'Group', id: 'clinic', identifier: [{ system: NPI, value: '1234567893' }], member: [{ entity: { reference: `Patient/${AMY}` } }] };
    assert.equal((await app.inject({ method: 'POST', url: '/admin/api/attribution-lists', headers: { ...admin, 'content-type': 'application/fhir+json' }, payload: JSON.stringify(group) })).statusCode, 200);
    assert.deepEqual([await status(AMY), await status(DANIEL)], [200, 404]);
    const optOut = await app.inject({ method: 'POST', url: `/admin/api/members/${AMY}/consents`, headers: admin, payload: { kind: 'provider-access-opt-out' } });
    assert.equal(optOut.statusCode, 201, optOut.body);
    assert.equal(await status(AMY), 404);
  });
});
