import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { startFhirServer } from '../src/fhir/server.js';
import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE } from './helpers/app.js';
import { choices } from './helpers/browser.js';
import { createClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { AMY, DANIEL, GRACE, testRecords } from './helpers/fhir-data.js';
import { consent, exchange, login, pickPatient, REDIRECT_URI, startAuthorization, title } from './helpers/flow.js';

interface Representative {
  readonly id: string;
  readonly user_id: string;
  readonly patient_id: string;
  readonly status: string;
  readonly fhir_user: string | null;
}
interface TokenBody {
  readonly access_token: string;
  readonly patient?: string;
  readonly scope: string;
}
interface Bundle {
  readonly entry?: { readonly resource: { readonly resourceType: string; readonly id: string } }[];
}
interface AuditItem {
  readonly type: string;
  readonly user_id: string | null;
  readonly patient_id: string | null;
  readonly details: Record<string, unknown>;
}

const admin = { authorization: `Bearer ${TEST_ADMIN_TOKEN}` };
const PUBLIC = { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] };
/** CARIN Blue Button (v1 scopes, as CARIN BB 1.x and PDex list them) and their v2 equivalents. */
const CARIN_V1 = 'launch/patient openid fhirUser patient/ExplanationOfBenefit.read patient/Coverage.read patient/Patient.read';
const eob = (id: string, patient: string) => ({
  resourceType: 'ExplanationOfBenefit',
  id,
  status: 'active',
  type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/claim-type', code: 'professional' }] },
  use: 'claim',
  patient: { reference: `Patient/${patient}` },
  created: '2026-03-01',
  insurer: { display: 'Example Health Plan' },
  provider: { display: 'Example Clinic' },
  outcome: 'complete',
});

describeEachDatabase('Authorized representatives and CARIN Blue Button scopes', (ctx) => {
  let app: FastifyInstance;
  let upstream: Awaited<ReturnType<typeof startFhirServer>>;

  before(async () => {
    upstream = await startFhirServer();
    await upstream.fhir.load([...testRecords(), eob('eob-amy', AMY), eob('eob-daniel', DANIEL), eob('eob-grace', GRACE), { resourceType: 'Coverage', id: 'cov-daniel', status: 'active', beneficiary: { reference: `Patient/${DANIEL}` }, payor: [{ display: 'Example Health Plan' }] }] as never);
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN, FHIR_UPSTREAMS: `${TEST_FHIR_BASE}=${upstream.url}` });
    await createClient(app, { ...PUBLIC, client_id: 'bb-app', client_name: 'Blue Button App', payer_role: 'patient-access' });
    for (const user of [
      { id: 'rep', username: 'rep', password: 'rep-password-1', fhirUser: 'RelatedPerson/rel-1', name: 'Sam Shaw' },
      { id: 'doc', username: 'doc', password: 'doc-password-1', fhirUser: 'Practitioner/p-2', name: 'Dr. Who' },
    ]) {
      const res = await app.inject({ method: 'POST', url: '/admin/api/users', headers: admin, payload: user });
      assert.equal(res.statusCode, 201, res.body);
    }
  });
  after(async () => {
    await app.close();
    await upstream.close();
  });

  const designate = async (patient: string): Promise<Representative> => {
    const res = await app.inject({ method: 'POST', url: '/admin/api/representatives', headers: admin, payload: { user_id: 'rep', patient_id: patient } });
    assert.equal(res.statusCode, 201, res.body);
    return res.json<Representative>();
  };
  const get = (token: string, url: string) => app.inject({ method: 'GET', url: `/fhir${url}`, headers: { authorization: `Bearer ${token}` } });
  const ids = async (token: string, url: string): Promise<string[]> => {
    const res = await get(token, url);
    assert.equal(res.statusCode, 200, res.body);
    return (res.json<Bundle>().entry ?? []).map((e) => `${e.resource.resourceType}/${e.resource.id}`).sort();
  };

  it('CARIN BB v1 scopes are granted as asked and enforced: the member reads their own claims only', async () => {
    const flow = await startAuthorization(app, { client_id: 'bb-app', scope: CARIN_V1 });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json<TokenBody>();
    assert.equal(body.patient, AMY);
    assert.deepEqual(body.scope.split(' ').sort(), CARIN_V1.split(' ').sort());
    assert.deepEqual(await ids(body.access_token, '/ExplanationOfBenefit'), ['ExplanationOfBenefit/eob-amy']);
    assert.equal((await get(body.access_token, '/ExplanationOfBenefit/eob-daniel')).statusCode, 404);
    assert.equal((await get(body.access_token, '/Observation')).statusCode, 403, 'not granted: Observation');
  });

  it('the patient picker offers a representative exactly the patients designated to them (active); a clinician cannot be designated', async () => {
    const none = await startAuthorization(app, { client_id: 'bb-app', scope: CARIN_V1 });
    await login(none, 'rep', 'rep-password-1');
    assert.notEqual(title(none.page), 'Choose a patient', 'no one to act for: no picker');

    await designate(AMY);
    await designate(DANIEL);
    const twice = await app.inject({ method: 'POST', url: '/admin/api/representatives', headers: admin, payload: { user_id: 'rep', patient_id: AMY } });
    assert.equal(twice.statusCode, 409);
    assert.deepEqual(twice.json(), { error: 'conflict', error_description: `user rep already acts, or was asked to act, for patient ${AMY}: revoke that designation first` });
    const flow = await startAuthorization(app, { client_id: 'bb-app', scope: CARIN_V1 });
    await login(flow, 'rep', 'rep-password-1');
    assert.deepEqual(choices(flow.page.res.body, 'patient').map((c) => c.value).sort(), [AMY, DANIEL].sort());

    const doc = await app.inject({ method: 'POST', url: '/admin/api/representatives', headers: admin, payload: { user_id: 'doc', patient_id: AMY } });
    assert.equal(doc.statusCode, 400);
    assert.deepEqual(doc.json(), { error: 'invalid_request', error_description: 'user doc is Practitioner/p-2: a representative signs in as a RelatedPerson or a Person' });
  });

  it('consent is per patient; the token and the audit say who acted for whom; revocation ends that patient\'s grants at once and leaves the others', async () => {
    const launch = async (patient: string): Promise<TokenBody> => {
      const flow = await startAuthorization(app, { client_id: 'bb-app', scope: CARIN_V1 });
      await login(flow, 'rep', 'rep-password-1');
      await pickPatient(flow, patient);
      await consent(flow);
      const res = await exchange(app, flow);
      assert.equal(res.statusCode, 200, res.body);
      return res.json<TokenBody>();
    };
    const forDaniel = await launch(DANIEL);
    const forAmy = await launch(AMY);
    // user/ scopes (CARIN BB and PDex list them too): every patient the representative acts for, no one else.
    const userFlow = await startAuthorization(app, { client_id: 'bb-app', scope: 'openid fhirUser user/ExplanationOfBenefit.read' });
    await login(userFlow, 'rep', 'rep-password-1');
    await consent(userFlow);
    const userToken = (await exchange(app, userFlow)).json<TokenBody>().access_token;
    assert.deepEqual(await ids(userToken, '/ExplanationOfBenefit'), ['ExplanationOfBenefit/eob-amy', 'ExplanationOfBenefit/eob-daniel']);
    assert.equal(forDaniel.patient, DANIEL);
    assert.deepEqual(await ids(forDaniel.access_token, '/ExplanationOfBenefit'), ['ExplanationOfBenefit/eob-daniel']);
    assert.deepEqual(await ids(forDaniel.access_token, '/Coverage'), ['Coverage/cov-daniel']);
    assert.deepEqual(await ids(forAmy.access_token, '/ExplanationOfBenefit'), ['ExplanationOfBenefit/eob-amy']);
    assert.equal((await get(forDaniel.access_token, `/Patient/${GRACE}`)).statusCode, 404);

    await app.runtime.audit.flush();
    const audit = await app.inject({ method: 'GET', url: '/admin/api/audit?type=fhir.access&user=rep&limit=1000', headers: admin });
    const events = audit.json<{ items: AuditItem[] }>().items;
    assert.ok(events.some((e) => e.user_id === 'rep' && e.patient_id === DANIEL && e.details.payerRole === 'patient-access'), 'the representative (user) and the patient acted for');

    const listed = await app.inject({ method: 'GET', url: `/admin/api/representatives?patient=${DANIEL}`, headers: admin });
    const designation = listed.json<{ items: Representative[] }>().items.find((r) => r.status === 'active')!;
    assert.equal(designation.fhir_user, 'RelatedPerson/rel-1');
    const revoke = await app.inject({ method: 'POST', url: `/admin/api/representatives/${designation.id}/revoke`, headers: admin });
    assert.equal(revoke.statusCode, 200, revoke.body);
    assert.equal(revoke.json<Representative>().status, 'revoked');

    const after = await get(forDaniel.access_token, '/ExplanationOfBenefit');
    assert.equal(after.statusCode, 401, 'the grant for Daniel is gone');
    assert.deepEqual(await ids(forAmy.access_token, '/ExplanationOfBenefit'), ['ExplanationOfBenefit/eob-amy'], 'Amy\'s designation stands');
    assert.deepEqual(await ids(userToken, '/ExplanationOfBenefit'), ['ExplanationOfBenefit/eob-amy'], 'the user/ token reaches Daniel no more, at its next request');
    assert.equal((await get(userToken, '/ExplanationOfBenefit/eob-daniel')).statusCode, 404);
    const again = await app.inject({ method: 'POST', url: `/admin/api/representatives/${designation.id}/revoke`, headers: admin });
    assert.equal(again.statusCode, 404);

    const flow = await startAuthorization(app, { client_id: 'bb-app', scope: CARIN_V1 });
    await login(flow, 'rep', 'rep-password-1');
    const offered = choices(flow.page.res.body, 'patient').map((c) => c.value);
    assert.ok(!offered.includes(DANIEL), 'no longer offered');

    const trail = await app.inject({ method: 'GET', url: '/admin/api/audit?type=representative.&limit=100', headers: admin });
    assert.deepEqual(trail.json<{ items: AuditItem[] }>().items.map((e) => [e.type, e.patient_id, e.details.grants_revoked ?? null]), [
      ['representative.designated', AMY, null],
      ['representative.designated', DANIEL, null],
      ['representative.revoked', DANIEL, 1],
    ]);
  });

  it("a designation's period_end: what the database cannot keep is a 400 naming the instant and the range, on Postgres and PGlite alike", async () => {
    const user = await app.inject({ method: 'POST', url: '/admin/api/users', headers: admin, payload: { id: 'rep-until', username: 'rep-until', password: 'rep-password-2', fhirUser: 'Person/per-1', name: 'Kim Lee' } });
    assert.equal(user.statusCode, 201, user.body);
    const designateUntil = (patient: string, periodEnd: string) => app.inject({ method: 'POST', url: '/admin/api/representatives', headers: admin, payload: { user_id: 'rep-until', patient_id: patient, period_end: periodEnd } });
    const range = 'this server keeps instants from 0100-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z';
    for (const [periodEnd, status, message] of [
      ['9999-12-31T23:59:60Z', 400, `period_end 9999-12-31T23:59:60Z is out of range: ${range}`],
      ['9999-12-31T23:00:00-01:00', 400, `period_end 9999-12-31T23:00:00-01:00 is out of range: ${range}`],
      ['0000-01-01T00:00:00Z', 400, `period_end 0000-01-01T00:00:00Z is out of range: ${range}`],
      ['2020-06-30T23:59:60Z', 400, 'period_end is in the past'],
    ] as const) {
      const res = await designateUntil('dates-1', periodEnd);
      assert.equal(res.statusCode, status, periodEnd);
      assert.deepEqual(res.json(), { error: 'invalid_request', error_description: message });
    }
    const leap = await designateUntil('dates-1', '2040-12-31T23:59:60Z');
    assert.equal(leap.statusCode, 201, leap.body);
    const latest = await designateUntil('dates-2', '9999-12-31T23:59:59.999Z');
    assert.equal(latest.statusCode, 201, latest.body);
    const listed = await app.inject({ method: 'GET', url: '/admin/api/representatives?user=rep-until', headers: admin });
    assert.deepEqual(listed.json<{ items: (Representative & { period_end: string })[] }>().items.map((r) => [r.patient_id, r.period_end]).sort(), [
      ['dates-1', '2041-01-01T00:00:00.000Z'],
      ['dates-2', '9999-12-31T23:59:59.999Z'],
    ]);
  });
});
