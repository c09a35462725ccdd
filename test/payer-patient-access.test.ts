import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { startFhirServer } from '../src/fhir/server.js';
import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { Browser, decodeEntities, inputValue } from './helpers/browser.js';
import { createClient, form } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { AMY, DANIEL, testRecords } from './helpers/fhir-data.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization } from './helpers/flow.js';

interface AppLine {
  readonly client_id: string;
  readonly client_name: string | null;
  readonly unique_patients: number;
  readonly patients_transferred_more_than_once: number;
  readonly transfers: number;
}
interface Report {
  readonly year: number;
  readonly unique_patients: number;
  readonly patients_transferred_more_than_once: number;
  readonly transfers: number;
  readonly apps: AppLine[];
}
interface ErrorBody {
  readonly error: string;
  readonly error_description: string;
}

const PUBLIC = { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] };
const admin = { authorization: `Bearer ${TEST_ADMIN_TOKEN}` };

describeEachDatabase('CMS-0057-F Patient Access metrics', (ctx) => {
  let app: FastifyInstance;
  let upstream: Awaited<ReturnType<typeof startFhirServer>>;

  before(async () => {
    upstream = await startFhirServer();
    await upstream.fhir.load(testRecords() as never);
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN, FHIR_UPSTREAMS: `${TEST_FHIR_BASE}=${upstream.url}` });
    await createClient(app, { ...PUBLIC, client_id: 'pa-app', client_name: 'Member App', payer_role: 'patient-access' });
    await createClient(app, { ...PUBLIC, client_id: 'pa-app-2', client_name: '=Second App', payer_role: 'patient-access' });
    await createClient(app, { ...PUBLIC, client_id: 'chart-app', client_name: 'Chart App' });
  });
  after(async () => {
    await app.close();
    await upstream.close();
  });

  /** The member (Amy) launches the app standalone and gets a token for her own record. */
  const memberToken = async (clientId: string): Promise<string> => {
    const flow = await startAuthorization(app, { client_id: clientId, scope: 'launch/patient patient/*.rs' });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json<{ access_token: string; patient: string }>();
    assert.equal(body.patient, AMY);
    return body.access_token;
  };
  const get = (token: string, url: string) => app.inject({ method: 'GET', url: `/fhir${url}`, headers: { authorization: `Bearer ${token}` } });
  const report = async (year: number): Promise<Report> => {
    const res = await app.inject({ method: 'GET', url: `/admin/api/reports/patient-access?year=${year}`, headers: admin });
    assert.equal(res.statusCode, 200, res.body);
    return res.json<Report>();
  };

  /** An access event as the gateway writes it, at a chosen time (a synthetic year of traffic). */
  const synthetic = async (at: string, clientId: string, patientId: string | null, status = 200, payerRole: string | null = 'patient-access') => {
    await ctx.current.database.db
      .insertInto('audit_events')
      .values({
        chain: 'synthetic',
        recorded_at: new Date(at),
        type: 'fhir.access',
        outcome: status < 400 ? 'success' : 'failure',
        actor_type: 'user',
        actor_id: 'demo-patient',
        user_id: 'demo-patient',
        client_id: clientId,
        patient_id: patientId,
        grant_id: null,
        scope: null,
        source_ip: '127.0.0.1',
        request_id: randomUUID(),
        details: JSON.stringify({ base: TEST_FHIR_BASE, interaction: 'read', resourceType: 'Patient', status, resources: status < 300 ? 1 : 0, ...(payerRole ? { payerRole } : {}) }),
        prev_hash: '0'.repeat(64),
        hash: randomBytes(32).toString('hex'),
      })
      .execute();
  };

  it('a payer_role is an operator\'s to set: a client registering itself cannot claim one, and a bad role or identifier is refused', async () => {
    const reg = await app.inject({ method: 'POST', url: '/reg', headers: { 'content-type': 'application/json' }, payload: { ...PUBLIC, payer_role: 'patient-access' } });
    assert.equal(reg.statusCode, 400, reg.body);
    assert.deepEqual(reg.json(), { error: 'invalid_client_metadata', error_description: 'payer_role can only be set by an operator' });

    const bad = await app.inject({ method: 'POST', url: '/admin/api/clients', headers: admin, payload: { ...PUBLIC, payer_role: 'broker' } });
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.json<ErrorBody>().error_description, 'payer_role: must be one of "patient-access", "provider-access", "payer-to-payer"');
    const noOrg = await app.inject({ method: 'POST', url: '/admin/api/clients', headers: admin, payload: { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', payer_role: 'provider-access' } });
    assert.equal(noOrg.statusCode, 400);
    assert.equal(noOrg.json<ErrorBody>().error_description, 'organization_identifiers: a provider-access client needs the identifier (NPI or TIN) of the organisation it acts for');
    const notBackend = await app.inject({ method: 'POST', url: '/admin/api/clients', headers: admin, payload: { ...PUBLIC, payer_role: 'payer-to-payer' } });
    assert.equal(notBackend.statusCode, 400);
    assert.equal(notBackend.json<ErrorBody>().error_description, 'payer_role: a payer-to-payer client is a backend service: it needs the client_credentials grant');

    const read = await app.inject({ method: 'GET', url: '/admin/api/clients/pa-app', headers: admin });
    assert.equal(read.json<{ payer_role: string }>().payer_role, 'patient-access');
  });

  it('counts each patient once per year, and those transferred more than once, per app; failures, other apps, no-patient requests and other years do not count', async () => {
    const [P1, P2, P3, P4, P5, P6, P7, P8] = ['p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7', 'p8'];
    await synthetic('2025-03-01T10:00:00Z', 'pa-app', P1);
    // Across New Year: once in 2025 and once in 2026, so more than once in neither.
    await synthetic('2025-12-31T23:59:59.999Z', 'pa-app', P2);
    await synthetic('2026-01-01T00:00:00Z', 'pa-app', P2);
    // The same patient through two apps: one unique patient, transferred more than once; once per app.
    await synthetic('2025-05-05T08:00:00Z', 'pa-app', P3);
    await synthetic('2025-06-05T08:00:00Z', 'pa-app-2', P3);
    // Three times through one app.
    await synthetic('2025-02-01T00:00:00Z', 'pa-app', P4);
    await synthetic('2025-02-02T00:00:00Z', 'pa-app', P4);
    await synthetic('2025-09-09T00:00:00Z', 'pa-app', P4);
    // Failed requests (refused, an upstream error) and a 304 transfer nothing.
    await synthetic('2025-04-01T00:00:00Z', 'pa-app', P5, 403);
    await synthetic('2025-04-02T00:00:00Z', 'pa-app', P5, 502);
    await synthetic('2025-04-03T00:00:00Z', 'pa-app', P5, 304);
    // An app that was a Patient Access app then and has since been revoked and deleted still counts.
    await synthetic('2025-07-07T00:00:00Z', 'gone-app', P6);
    // Not a Patient Access app (a clinician's chart), and a request with no patient.
    await synthetic('2025-08-08T00:00:00Z', 'chart-app', P7, 200, null);
    await synthetic('2025-08-09T00:00:00Z', 'pa-app', null);
    // Outside the year on either side.
    await synthetic('2024-12-31T23:59:59Z', 'pa-app', P8);
    await synthetic('2027-01-01T00:00:00Z', 'pa-app', P8);

    assert.deepEqual(await report(2025), {
      year: 2025,
      unique_patients: 5,
      patients_transferred_more_than_once: 2,
      transfers: 8,
      apps: [
        { client_id: 'gone-app', client_name: null, unique_patients: 1, patients_transferred_more_than_once: 0, transfers: 1 },
        { client_id: 'pa-app', client_name: 'Member App', unique_patients: 4, patients_transferred_more_than_once: 1, transfers: 6 },
        { client_id: 'pa-app-2', client_name: '=Second App', unique_patients: 1, patients_transferred_more_than_once: 0, transfers: 1 },
      ],
    });
    assert.deepEqual(await report(2024), { year: 2024, unique_patients: 1, patients_transferred_more_than_once: 0, transfers: 1, apps: [{ client_id: 'pa-app', client_name: 'Member App', unique_patients: 1, patients_transferred_more_than_once: 0, transfers: 1 }] });

    const csv = await app.inject({ method: 'GET', url: '/admin/api/reports/patient-access?year=2025&format=csv', headers: admin });
    assert.equal(csv.statusCode, 200);
    assert.equal(csv.headers['content-type'], 'text/csv; charset=utf-8');
    assert.equal(csv.headers['content-disposition'], 'attachment; filename="patient-access-2025.csv"');
    assert.equal(
      csv.body,
      [
        'year,client_id,client_name,unique_patients,patients_transferred_more_than_once,transfers',
        '2025,*,all Patient Access apps,5,2,8',
        '2025,gone-app,,1,0,1',
        '2025,pa-app,Member App,4,1,6',
        // A name that a spreadsheet would run as a formula is quoted as text.
        "2025,pa-app-2,'=Second App,1,0,1",
        '',
      ].join('\r\n'),
    );
  });

  it('through the gateway: a 2xx access by a Patient Access app counts, a refused one and one by another app do not, and a revoked token is not let in', async () => {
    const before2026 = await report(2026);
    const token = await memberToken('pa-app');
    assert.equal((await get(token, `/Patient/${AMY}`)).statusCode, 200);
    assert.equal((await get(token, '/Observation?category=laboratory')).statusCode, 200);
    assert.equal((await get(token, `/Patient/${DANIEL}`)).statusCode, 404, 'another patient: refused, not a transfer');
    const chart = await memberToken('chart-app');
    assert.equal((await get(chart, `/Patient/${AMY}`)).statusCode, 200);

    const revoke = await app.inject({ method: 'POST', url: '/revoke', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ token, client_id: 'pa-app' }) });
    assert.equal(revoke.statusCode, 200);
    assert.equal((await get(token, `/Patient/${AMY}`)).statusCode, 401, 'the revoked app gets nothing more');
    await app.runtime.audit.flush();

    const now = await report(2026);
    const line = (r: Report) => r.apps.find((a) => a.client_id === 'pa-app');
    assert.equal(now.unique_patients - before2026.unique_patients, 1, 'Amy is new in 2026 (only p2 was there)');
    assert.equal(now.transfers - before2026.transfers, 2, 'two successful reads; the 404, the 401 and the chart app do not count');
    assert.equal(now.patients_transferred_more_than_once, 1, 'Amy, twice');
    assert.deepEqual(line(now), { client_id: 'pa-app', client_name: 'Member App', unique_patients: 2, patients_transferred_more_than_once: 1, transfers: 3 });
    assert.equal(now.apps.some((a) => a.client_id === 'chart-app'), false);
  });

  it('the console shows the report for a year, to auditors too, with the CSV to send on', async () => {
    const browser = new Browser(app, TEST_ISSUER);
    const signIn = await browser.send('GET', '/admin/sign-in');
    const signedIn = await browser.send('POST', '/admin/sign-in/token', { csrf: inputValue(signIn.body, 'csrf'), admin_token: TEST_ADMIN_TOKEN });
    assert.equal(signedIn.statusCode, 303, signedIn.body);
    const page = await browser.send('GET', '/admin/payer?year=2025');
    assert.equal(page.statusCode, 200, page.body);
    const text = decodeEntities(page.body);
    assert.match(text, /<h2 id="patient-access-title">Patient Access API usage, 2025<\/h2>/);
    assert.match(text, /<tr><th scope="row">All Patient Access apps<\/th><td>5<\/td><td>2<\/td><td>8<\/td><\/tr>/);
    assert.match(text, /<tr><td>Member App <span class="muted">\(<code>pa-app<\/code>\)<\/span><\/td><td>4<\/td><td>1<\/td><td>6<\/td><\/tr>/);
    const csv = await browser.send('GET', '/admin/payer/patient-access.csv?year=2025');
    assert.equal(csv.statusCode, 200);
    assert.match(csv.body, /^year,client_id,client_name,unique_patients,patients_transferred_more_than_once,transfers\r\n2025,\*,all Patient Access apps,5,2,8\r\n/);
  });

  it('refuses a year not begun, a year out of range, and an unknown format, with the reason', async () => {
    const future = await app.inject({ method: 'GET', url: `/admin/api/reports/patient-access?year=${new Date().getUTCFullYear() + 1}`, headers: admin });
    assert.equal(future.statusCode, 400);
    assert.deepEqual(future.json(), { error: 'invalid_request', error_description: `year ${new Date().getUTCFullYear() + 1} has not begun` });
    const old = await app.inject({ method: 'GET', url: '/admin/api/reports/patient-access?year=1999', headers: admin });
    assert.equal(old.statusCode, 400);
    assert.equal(old.json<ErrorBody>().error_description, 'year: must be at least 2020');
    const xml = await app.inject({ method: 'GET', url: '/admin/api/reports/patient-access?year=2025&format=xml', headers: admin });
    assert.equal(xml.statusCode, 400);
    const none = await app.inject({ method: 'GET', url: '/admin/api/reports/patient-access', headers: admin });
    assert.equal(none.json<ErrorBody>().error_description, 'year: is required');
    assert.equal((await app.inject({ method: 'GET', url: '/admin/api/reports/patient-access?year=2025' })).statusCode, 401);
  });
});
