import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { sql } from 'kysely';

import { startFhirServer } from '../src/fhir/server.js';
import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE } from './helpers/app.js';
import { basicAuth, createClient, form } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { AMY, DANIEL, testRecords } from './helpers/fhir-data.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization, tokenRequest } from './helpers/flow.js';
import { backendToken, NPI, SENSITIVE } from './helpers/payer.js';

const CLINIC_NPI = '1234567893';
const admin = { authorization: `Bearer ${TEST_ADMIN_TOKEN}` };
const BACKEND = { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'system/Patient.rs system/Observation.rs system/Condition.rs' };

describeEachDatabase('payer pack, adversarial', (ctx) => {
  let app: FastifyInstance;
  let upstream: Awaited<ReturnType<typeof startFhirServer>>;
  const secrets = new Map<string, string>();

  before(async () => {
    upstream = await startFhirServer();
    await upstream.fhir.load([
      ...testRecords(),
      { resourceType: 'Condition', id: 'cond-amy-sensitive', meta: { security: [SENSITIVE] }, subject: { reference: `Patient/${AMY}` }, code: { text: 'Depression' } },
    ] as never);
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN, FHIR_UPSTREAMS: `${TEST_FHIR_BASE}=${upstream.url}` });
    for (const [id, extra] of [
      ['clinic', { payer_role: 'provider-access', organization_identifiers: [`${NPI}|${CLINIC_NPI}`] }],
      ['new-payer', { payer_role: 'payer-to-payer', organization_identifiers: ['http://example.org/payer-ids|NEWPAYER'] }],
    ] as const) {
      secrets.set(id, (await createClient(app, { ...BACKEND, client_id: id, ...extra })).client_secret!);
    }
  });
  after(async () => {
    await app.close();
    await upstream.close();
  });

  const token = (clientId: string): Promise<string> => backendToken(app, clientId, secrets.get(clientId)!, BACKEND.scope);
  const get = (bearer: string, url: string): Promise<LightMyRequestResponse> => app.inject({ method: 'GET', url: `/fhir${url}`, headers: { authorization: `Bearer ${bearer}` } });
  const adminCall = (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: unknown, contentType = 'application/json') =>
    app.inject({ method, url: `/admin/api${url}`, headers: { ...admin, ...(payload === undefined ? {} : { 'content-type': contentType }) }, ...(payload === undefined ? {} : { payload: JSON.stringify(payload) }) });

  it("a member's withheld sensitive data is not counted either: no total tells a payer client it exists (_summary=count is 403, a total is dropped)", async () => {
    assert.equal((await adminCall('POST', `/members/${AMY}/consents`, { kind: 'payer-to-payer-opt-in' })).statusCode, 201);
    assert.equal((await adminCall('POST', `/members/${DANIEL}/consents`, { kind: 'payer-to-payer-opt-in' })).statusCode, 201);
    const bearer = await token('new-payer');
    const total = async (url: string) => {
      const res = await get(bearer, url);
      assert.equal(res.statusCode, 200, res.body);
      return res.json<{ total?: number }>().total;
    };
    assert.equal(await total(`/Condition?patient=${AMY}&_summary=count`), 2, 'nothing withheld yet');
    assert.equal((await adminCall('POST', `/members/${AMY}/consents`, { kind: 'exclude-sensitive' })).statusCode, 201);

    // Before, the upstream's count went through: 2 Conditions, of which the client is shown 1.
    const count = await get(bearer, `/Condition?patient=${AMY}&_summary=count`);
    assert.equal(count.statusCode, 403, count.body);
    assert.equal(count.json<{ issue: { diagnostics: string }[] }>().issue[0]!.diagnostics, '_summary=count would count Condition resources withheld from this client; search without it');
    assert.equal((await get(bearer, '/Condition?_summary=count')).statusCode, 403, 'a search of every member reached counts the withheld too');
    assert.equal(await total(`/Condition?patient=${AMY}&_count=0`), undefined);
    assert.equal(await total(`/Condition?patient=${AMY}&code:text=Depression`), undefined);
    // A member who withheld nothing is counted as before.
    assert.equal(await total(`/Condition?patient=${DANIEL}&_summary=count`), 1);
  });
});

describeEachDatabase('payer pack, adversarial: representatives', (ctx) => {
  let app: FastifyInstance;
  let upstream: Awaited<ReturnType<typeof startFhirServer>>;
  let rsSecret: string;

  before(async () => {
    upstream = await startFhirServer();
    await upstream.fhir.load(testRecords() as never);
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN, FHIR_UPSTREAMS: `${TEST_FHIR_BASE}=${upstream.url}` });
    await createClient(app, { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'], client_id: 'bb-app', payer_role: 'patient-access' });
    rsSecret = (await createClient(app, { client_id: 'resource-server', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'introspect' })).client_secret!;
    const user = await app.inject({ method: 'POST', url: '/admin/api/users', headers: admin, payload: { id: 'rep', username: 'rep', password: 'rep-password-1', fhirUser: 'RelatedPerson/rel-1', name: 'Sam Shaw' } });
    assert.equal(user.statusCode, 201, user.body);
  });
  after(async () => {
    await app.close();
    await upstream.close();
  });

  it("a representative whose designation ended gets no new token for that patient, and introspection no longer calls the token active", async () => {
    const designated = await app.inject({ method: 'POST', url: '/admin/api/representatives', headers: admin, payload: { user_id: 'rep', patient_id: DANIEL } });
    assert.equal(designated.statusCode, 201, designated.body);
    const flow = await startAuthorization(app, { client_id: 'bb-app', scope: 'launch/patient openid fhirUser patient/*.rs offline_access' });
    await login(flow, 'rep', 'rep-password-1');
    await consent(flow);
    const issued = await exchange(app, flow);
    assert.equal(issued.statusCode, 200, issued.body);
    const body = issued.json<{ access_token: string; refresh_token: string; patient: string }>();
    assert.equal(body.patient, DANIEL);
    const introspect = (value: string) =>
      app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('resource-server', rsSecret) }, payload: form({ token: value }) });
    assert.deepEqual([(await introspect(body.access_token)).json<{ active: boolean; patient?: string }>()].map((r) => [r.active, r.patient]), [[true, DANIEL]]);

    // The designation's period ends (as an end date passing does); it is not revoked, so the grant stands.
    await sql`update representatives set period_end = now() - interval '1 second' where user_id = 'rep'`.execute(ctx.current.database.db);
    assert.equal((await app.inject({ method: 'GET', url: `/fhir/Patient/${DANIEL}`, headers: { authorization: `Bearer ${body.access_token}` } })).statusCode, 403, 'the gateway: the grant reaches no one');
    // Before, introspection answered active with patient Daniel, and a refresh issued new tokens for Daniel.
    assert.deepEqual((await introspect(body.access_token)).json(), { active: false });
    const refreshed = await tokenRequest(app, { grant_type: 'refresh_token', refresh_token: body.refresh_token, client_id: 'bb-app' });
    assert.equal(refreshed.statusCode, 400, refreshed.body);
    assert.deepEqual(refreshed.json(), {
      error: 'invalid_grant',
      error_description: `grant request is invalid: the user may no longer act for patient ${DANIEL} (a representative's designation ended, or the link to the record was removed): launch the app again`,
    });

    // Designated again: the same grant works again, as at the gateway.
    await sql`update representatives set status = 'revoked' where user_id = 'rep'`.execute(ctx.current.database.db);
    assert.equal((await app.inject({ method: 'POST', url: '/admin/api/representatives', headers: admin, payload: { user_id: 'rep', patient_id: DANIEL } })).statusCode, 201);
    assert.equal((await introspect(body.access_token)).json<{ active: boolean }>().active, true);
  });
});

describeEachDatabase('payer pack, adversarial: attribution lists', (ctx) => {
  let app: FastifyInstance;

  before(async () => {
    app = await testApp(ctx.current.database, { ADMIN_TOKEN: TEST_ADMIN_TOKEN });
  });
  after(async () => {
    await app.close();
  });

  const importGroup = (id: string, npi: string, patients: string[], query = '') =>
    app.inject({
      method: 'POST',
      url: `/admin/api/attribution-lists${query}`,
      headers: { ...admin, 'content-type': 'application/fhir+json' },
      payload: JSON.stringify({ resourceType: 'Group', id, type: 'person', actual: true, identifier: [{ system: NPI, value: npi }], member: patients.map((p) => ({ entity: { reference: `Patient/${p}` } })) }),
    });

  it("a Group imported under another organisation does not take over an existing list: 409, the list stays its organisation's", async () => {
    assert.equal((await importGroup('shared-id', CLINIC_NPI, [AMY, DANIEL])).statusCode, 200);
    // Before, this moved the whole list (Amy and Daniel) to the other organisation.
    const taken = await importGroup('shared-id', '1987654321', [AMY]);
    assert.equal(taken.statusCode, 409, taken.body);
    assert.deepEqual(taken.json(), {
      error: 'conflict',
      error_description: `attribution list shared-id is the list of ${NPI}|${CLINIC_NPI}, not of ${NPI}|1987654321: delete it first to import it for another organisation, or give the Group another id`,
    });
    const overridden = await importGroup('shared-id', CLINIC_NPI, [AMY], `?organization=${encodeURIComponent(`${NPI}|1987654321`)}`);
    assert.equal(overridden.statusCode, 409, overridden.body);
    const list = await app.inject({ method: 'GET', url: '/admin/api/attribution-lists/shared-id', headers: admin });
    assert.deepEqual([list.json<{ organization: string }>().organization, list.json<{ members: unknown[] }>().members.length], [`${NPI}|${CLINIC_NPI}`, 2]);
    // Its own organisation replaces it as before; deleted, the id is free for another.
    const replaced = await importGroup('shared-id', CLINIC_NPI, [AMY]);
    assert.deepEqual(replaced.json(), { id: 'shared-id', organization: `${NPI}|${CLINIC_NPI}`, members: 1, created: false });
    assert.equal((await app.inject({ method: 'DELETE', url: '/admin/api/attribution-lists/shared-id', headers: admin })).statusCode, 204);
    assert.equal((await importGroup('shared-id', '1987654321', [AMY])).statusCode, 200);
  });
});
