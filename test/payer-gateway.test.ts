import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { sql } from 'kysely';

import { startFhirServer } from '../src/fhir/server.js';
import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE } from './helpers/app.js';
import { createClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { AMY, DANIEL, GRACE, testRecords } from './helpers/fhir-data.js';
import { backendToken, NPI, SENSITIVE } from './helpers/payer.js';

interface Resource {
  readonly resourceType: string;
  readonly id?: string;
}
interface Bundle extends Resource {
  readonly entry?: { readonly resource: Resource }[];
}
interface Outcome {
  readonly issue: { readonly diagnostics: string }[];
}
interface Consent {
  readonly id: string;
  readonly kind: string;
  readonly active: boolean;
  readonly withdrawn_at: string | null;
  readonly resource: { readonly resourceType: string; readonly status: string; readonly provision: { readonly type: string } };
}
interface AuditItem {
  readonly patient_id: string | null;
  readonly details: { readonly status: number; readonly payerRole?: string; readonly b2b?: { readonly subjectId?: string; readonly organizationId?: string; readonly purposeOfUse?: string[] } };
}
interface ErrorBody {
  readonly error: string;
  readonly error_description: string;
}

const CLINIC_NPI = '1234567893';
const OTHER_NPI = '1987654321';
const NEW_PAYER = 'http://example.org/payer-ids|NEWPAYER';
const admin = { authorization: `Bearer ${TEST_ADMIN_TOKEN}` };
const METRICS_TOKEN = 'metrics-token-0123456789abcdefghijklmn';
const BACKEND = { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'system/Patient.rs system/Observation.rs system/Condition.rs' };

const ids = (res: LightMyRequestResponse): string[] => (res.json<Bundle>().entry ?? []).map((e) => `${e.resource.resourceType}/${e.resource.id ?? ''}`).sort();
const diagnostics = (res: LightMyRequestResponse): string => res.json<Outcome>().issue[0]!.diagnostics;
const day = (offset: number): string => new Date(Date.now() + offset * 86_400_000).toISOString().slice(0, 10);

/** A Da Vinci ATR member attribution list. */
const group = (id: string, npi: string, members: Record<string, unknown>[]) => ({
  resourceType: 'Group',
  id,
  type: 'person',
  actual: true,
  name: `Attribution of ${npi}`,
  identifier: [{ system: NPI, value: npi }],
  member: members,
});
const member = (patient: string, extra: Record<string, unknown> = {}) => ({ entity: { reference: `Patient/${patient}` }, ...extra });

describeEachDatabase('CMS-0057-F Provider Access and Payer-to-Payer through the gateway', (ctx) => {
  let app: FastifyInstance;
  let upstream: Awaited<ReturnType<typeof startFhirServer>>;
  const secrets = new Map<string, string>();

  before(async () => {
    upstream = await startFhirServer();
    await upstream.fhir.load([
      ...testRecords(),
      { resourceType: 'Condition', id: 'cond-amy-sensitive', meta: { security: [SENSITIVE] }, subject: { reference: `Patient/${AMY}` }, code: { text: 'Depression' } },
    ] as never);
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN, METRICS_TOKEN, FHIR_UPSTREAMS: `${TEST_FHIR_BASE}=${upstream.url}` });
    for (const [id, extra] of [
      ['clinic', { payer_role: 'provider-access', organization_identifiers: [`${NPI}|${CLINIC_NPI}`] }],
      ['other-clinic', { payer_role: 'provider-access', organization_identifiers: [`${NPI}|${OTHER_NPI}`] }],
      ['new-payer', { payer_role: 'payer-to-payer', organization_identifiers: [NEW_PAYER] }],
      ['third-payer', { payer_role: 'payer-to-payer', organization_identifiers: ['http://example.org/payer-ids|THIRD'] }],
      ['plain-backend', {}],
    ] as const) {
      secrets.set(id, (await createClient(app, { ...BACKEND, client_id: id, ...extra })).client_secret!);
    }
  });
  after(async () => {
    await app.close();
    await upstream.close();
  });

  const token = (clientId: string): Promise<string> => backendToken(app, clientId, secrets.get(clientId)!, BACKEND.scope);
  const get = (bearer: string, url: string) => app.inject({ method: 'GET', url: `/fhir${url}`, headers: { authorization: `Bearer ${bearer}` } });
  const adminCall = async (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: unknown, contentType = 'application/json') => {
    return app.inject({ method, url: `/admin/api${url}`, headers: { ...admin, ...(payload === undefined ? {} : { 'content-type': contentType }) }, ...(payload === undefined ? {} : { payload: JSON.stringify(payload) }) });
  };
  const importGroup = async (body: unknown) => {
    const res = await adminCall('POST', '/attribution-lists', body, 'application/fhir+json');
    assert.equal(res.statusCode, 200, res.body);
    return res.json<{ id: string; organization: string; members: number; created: boolean }>();
  };
  const recordConsent = async (patient: string, body: Record<string, unknown>): Promise<Consent> => {
    const res = await adminCall('POST', `/members/${patient}/consents`, body);
    assert.equal(res.statusCode, 201, res.body);
    return res.json<Consent>();
  };
  const withdraw = async (patient: string, id: string): Promise<Consent> => {
    const res = await adminCall('POST', `/members/${patient}/consents/${id}/withdraw`);
    assert.equal(res.statusCode, 200, res.body);
    return res.json<Consent>();
  };
  /** Which of the three patients a token reaches: each read answered 200 (the rest are 404). */
  const reached = async (bearer: string): Promise<string[]> => {
    const out: string[] = [];
    for (const patient of [AMY, DANIEL, GRACE]) {
      const res = await get(bearer, `/Patient/${patient}`);
      assert.ok(res.statusCode === 200 || res.statusCode === 404, `${patient}: ${res.statusCode} ${res.body}`);
      if (res.statusCode === 200) out.push(patient);
    }
    return out;
  };

  it('a provider organisation with no attribution list reaches no one: reads are 404, searches 403', async () => {
    const bearer = await token('clinic');
    assert.deepEqual(await reached(bearer), []);
    const search = await get(bearer, '/Observation');
    assert.equal(search.statusCode, 403);
    assert.equal(diagnostics(search), 'this token reaches no patient record');
    // A backend without a payer role is not confined (system/ scopes reach every record).
    assert.deepEqual(await reached(await token('plain-backend')), [AMY, DANIEL, GRACE]);
  });

  it('ATR Group import: only members attributed now (active, within their period) are reached, searches are narrowed to them, another organisation\'s list counts for nothing', async () => {
    const imported = await importGroup(
      group('clinic-2026', CLINIC_NPI, [member(AMY, { period: { start: '2020-01-01' } }), member(DANIEL, { period: { start: '2020-01-01', end: day(-2) } }), member(GRACE, { inactive: true })]),
    );
    assert.deepEqual(imported, { id: 'clinic-2026', organization: `${NPI}|${CLINIC_NPI}`, members: 3, created: true });
    await importGroup(group('other-2026', OTHER_NPI, [member(DANIEL)]));

    const bearer = await token('clinic');
    assert.deepEqual(await reached(bearer), [AMY]);
    const observations = await get(bearer, '/Observation');
    assert.equal(observations.statusCode, 200, observations.body);
    assert.deepEqual(ids(observations), ['Observation/obs-amy-contained', 'Observation/obs-amy-lab', 'Observation/obs-amy-social', 'Observation/obs-amy-vital']);
    const other = await get(bearer, `/Observation?patient=${DANIEL}`);
    assert.equal(other.statusCode, 403);
    assert.equal(diagnostics(other), `the search names Patient/${DANIEL}, outside the records this token reaches`);
    assert.equal((await get(bearer, '/Observation/obs-daniel-lab')).statusCode, 404);
    assert.deepEqual(await reached(await token('other-clinic')), [DANIEL]);

    const list = await adminCall('GET', '/attribution-lists');
    assert.deepEqual(list.json<{ items: { id: string; members: number; attributed_now: number }[] }>().items.map((l) => [l.id, l.members, l.attributed_now]), [
      ['clinic-2026', 3, 1],
      ['other-2026', 1, 1],
    ]);
  });

  it('attribution that ends, and a member removed from the Group, are honoured at the next request with the same token', async () => {
    const bearer = await token('clinic');
    assert.deepEqual(await reached(bearer), [AMY]);
    const replaced = await importGroup(group('clinic-2026', CLINIC_NPI, [member(AMY, { period: { start: '2020-01-01', end: day(-1) } }), member(DANIEL)]));
    assert.equal(replaced.created, false);
    assert.deepEqual(await reached(bearer), [DANIEL], 'Amy\'s attribution ended yesterday (the end day is inclusive); Daniel is attributed now');
    await importGroup(group('clinic-2026', CLINIC_NPI, [member(AMY, { period: { start: day(-30), end: day(0) } })]));
    assert.deepEqual(await reached(bearer), [AMY], 'through the end of today; Daniel left the Group');
  });

  it('a member who opted out of Provider Access is refused to every provider organisation until the opt-out is withdrawn', async () => {
    const bearer = await token('clinic');
    const optOut = await recordConsent(AMY, { kind: 'provider-access-opt-out' });
    assert.equal(optOut.active, true);
    assert.deepEqual([optOut.resource.resourceType, optOut.resource.status, optOut.resource.provision.type], ['Consent', 'active', 'deny']);
    assert.deepEqual(await reached(bearer), []);
    assert.equal((await get(bearer, '/Condition')).statusCode, 403);
    const withdrawn = await withdraw(AMY, optOut.id);
    assert.equal(withdrawn.active, false);
    assert.ok(withdrawn.withdrawn_at);
    assert.deepEqual(await reached(bearer), [AMY]);
    const again = await adminCall('POST', `/members/${AMY}/consents/${optOut.id}/withdraw`);
    assert.equal(again.statusCode, 404);
    assert.equal(again.json<ErrorBody>().error_description, `no consent ${optOut.id} of patient ${AMY} still in force`);
  });

  it('records the rendering provider of an hl7-b2b token (subject_id) and the payer role with each access', async () => {
    const bearer = await token('clinic');
    // The UDAP B2B extension as the token endpoint keeps it with a client-credentials token (the UDAP work puts it there).
    await sql`update oidc_payloads set payload = jsonb_set(payload, '{extra}', ${JSON.stringify({ extensions: { 'hl7-b2b': { version: '1', subject_id: '1112223339', organization_id: `${NPI}|${CLINIC_NPI}`, purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#TREAT'] } } })}::jsonb) where model = 'ClientCredentials' and payload->>'clientId' = 'clinic'`.execute(ctx.current.database.db);
    assert.equal((await get(bearer, `/Patient/${AMY}`)).statusCode, 200);
    await app.runtime.audit.flush();
    const res = await adminCall('GET', '/audit?type=fhir.access&client=clinic&limit=1000');
    const last = res.json<{ items: AuditItem[] }>().items.at(-1)!;
    assert.equal(last.patient_id, AMY);
    assert.deepEqual(last.details.b2b, { subjectId: '1112223339', organizationId: `${NPI}|${CLINIC_NPI}`, purposeOfUse: ['urn:oid:2.16.840.1.113883.5.8#TREAT'] });
    assert.equal(last.details.payerRole, 'provider-access');
    const exported = await adminCall('GET', '/audit/export?type=fhir.access&client=clinic&format=bundle&limit=10000');
    const events = exported.json<{ entry: { resource: { agent: { type: { coding: { code: string }[] }; who: unknown; purposeOfUse?: unknown }[] } }[] }>().entry;
    const performer = events.at(-1)!.resource.agent.find((a) => a.type.coding[0]!.code === 'PPRF');
    assert.deepEqual(performer && { who: performer.who, purposeOfUse: performer.purposeOfUse }, { who: { identifier: { system: NPI, value: '1112223339' } }, purposeOfUse: [{ coding: [{ system: 'urn:oid:2.16.840.1.113883.5.8', code: 'TREAT' }] }] });
  });

  it('Payer-to-Payer: refused before the member opts in, reached after, for the payer named (or any), refused again after withdrawal or when the opt-in has ended', async () => {
    const bearer = await token('new-payer');
    const third = await token('third-payer');
    assert.deepEqual(await reached(bearer), []);
    const optIn = await recordConsent(DANIEL, { kind: 'payer-to-payer-opt-in', organization: NEW_PAYER });
    assert.deepEqual([optIn.resource.provision.type, optIn.kind], ['permit', 'payer-to-payer-opt-in']);
    await recordConsent(GRACE, { kind: 'payer-to-payer-opt-in', period_start: new Date(Date.now() - 7 * 86_400_000).toISOString(), period_end: new Date(Date.now() - 86_400_000).toISOString() });
    await recordConsent(AMY, { kind: 'payer-to-payer-opt-in' });
    assert.deepEqual(await reached(bearer), [AMY, DANIEL], 'Grace\'s opt-in ended yesterday');
    assert.deepEqual(await reached(third), [AMY], 'Daniel opted in for the new payer only');
    assert.deepEqual(ids(await get(bearer, '/Observation?category=vital-signs')), ['Observation/obs-amy-vital', 'Observation/obs-daniel-vital']);
    await withdraw(DANIEL, optIn.id);
    assert.deepEqual(await reached(bearer), [AMY]);

    const wrong = await adminCall('POST', `/members/${AMY}/consents`, { kind: 'provider-access-opt-out', organization: NEW_PAYER });
    assert.equal(wrong.statusCode, 400);
    assert.equal(wrong.json<ErrorBody>().error_description, 'organization: only a payer-to-payer-opt-in names a payer');
  });

  it("a consent's period: what the database cannot keep is a 400 naming the instant and the range, on Postgres and PGlite alike", async () => {
    const range = 'this server keeps instants from 0100-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z';
    for (const [body, message] of [
      [{ period_start: '0000-01-01T00:00:00Z' }, `period_start 0000-01-01T00:00:00Z is out of range: ${range}`],
      // PGlite would read the year 1 back as 2001.
      [{ period_start: '0001-01-01T00:00:00Z' }, `period_start 0001-01-01T00:00:00Z is out of range: ${range}`],
      [{ period_start: '0100-01-01T00:00:00+01:00' }, `period_start 0100-01-01T00:00:00+01:00 is out of range: ${range}`],
      // A leap second is the instant after 23:59:59: here, the year 10000.
      [{ period_end: '9999-12-31T23:59:60Z' }, `period_end 9999-12-31T23:59:60Z is out of range: ${range}`],
      [{ period_end: '9999-12-31T23:59:59-00:01' }, `period_end 9999-12-31T23:59:59-00:01 is out of range: ${range}`],
    ] as const) {
      const res = await adminCall('POST', '/members/dates-1/consents', { kind: 'exclude-sensitive', ...body });
      assert.equal(res.statusCode, 400, JSON.stringify(body));
      assert.deepEqual(res.json(), { error: 'invalid_request', error_description: message });
    }
    const widest = await recordConsent('dates-1', { kind: 'exclude-sensitive', period_start: '0100-01-01T00:00:00Z', period_end: '9999-12-31T23:59:59.999Z' });
    const leap = await recordConsent('dates-1', { kind: 'exclude-sensitive', period_start: '2016-12-31T23:59:60Z', period_end: '2030-06-30T23:59:60Z' });
    assert.deepEqual(
      (await adminCall('GET', '/members/dates-1/consents')).json<{ items: { id: string; period_start: string; period_end: string }[] }>().items.map((c) => [c.id, c.period_start, c.period_end]).sort(),
      [
        [widest.id, '0100-01-01T00:00:00.000Z', '9999-12-31T23:59:59.999Z'],
        [leap.id, '2017-01-01T00:00:00.000Z', '2030-07-01T00:00:00.000Z'],
      ].sort(),
    );
  });

  it('a member who excludes sensitive data: resources with a sensitive security label are withheld from payer clients, the rest still flow', async () => {
    const bearer = await token('new-payer');
    assert.deepEqual(ids(await get(bearer, `/Condition?patient=${AMY}`)), ['Condition/cond-amy', 'Condition/cond-amy-sensitive']);
    const exclusion = await recordConsent(AMY, { kind: 'exclude-sensitive' });
    assert.deepEqual(ids(await get(bearer, `/Condition?patient=${AMY}`)), ['Condition/cond-amy']);
    assert.equal((await get(bearer, '/Condition/cond-amy-sensitive')).statusCode, 404);
    assert.equal((await get(bearer, '/Condition/cond-amy')).statusCode, 200);
    // A backend that is not a payer client is not held to the member's choice (it is not an exchange under CMS-0057-F).
    assert.equal((await get(await token('plain-backend'), '/Condition/cond-amy-sensitive')).statusCode, 200);
    await withdraw(AMY, exclusion.id);
    assert.equal((await get(bearer, '/Condition/cond-amy-sensitive')).statusCode, 200);
  });

  it('a payer client costs the gateway no more database statements than any backend: the one statement at the door', async () => {
    const statements = async (bearer: string): Promise<number> => {
      const count = async () => {
        await app.runtime.audit.flush();
        const res = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
        const line = res.body.split('\n').find((l) => l.startsWith('smart_auth_db_query_duration_seconds_count{outcome="ok"}'));
        return Number(line?.split(' ')[1] ?? 0);
      };
      await get(bearer, `/Patient/${AMY}`);
      const idle = await count();
      const before = await count();
      assert.equal((await get(bearer, `/Patient/${AMY}`)).statusCode, 200);
      // Less what a scrape costs on its own (none or the same each time).
      return (await count()) - before - (before - idle);
    };
    const plain = await statements(await token('plain-backend'));
    const payer = await statements(await token('new-payer'));
    // The door's statement, and the audit write of the access event.
    assert.equal(plain, 2);
    assert.equal(payer, plain);
  });

  it("an ATR Group's periods: each kept as written (an end of 9999-12-31 included); what the database cannot keep is a 400 naming it", async () => {
    const range = 'this server keeps instants from 0100-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z';
    for (const [period, message] of [
      [{ start: '0000-01-01' }, `Group.member[0].period.start 0000-01-01 is out of range: ${range}`],
      // Not the year 1950, which JavaScript's two-digit years would make of it.
      [{ start: '0050-01-01' }, `Group.member[0].period.start 0050-01-01 is out of range: ${range}`],
      [{ start: '0100-01-01T00:30:00+01:00' }, `Group.member[0].period.start 0100-01-01T00:30:00+01:00 is out of range: ${range}`],
      [{ end: '0099-12-31' }, `Group.member[0].period.end 0099-12-31 is out of range: ${range}`],
      [{ end: '9999-12-31T23:00:00-01:00' }, `Group.member[0].period.end 9999-12-31T23:00:00-01:00 is out of range: ${range}`],
    ] as const) {
      const res = await adminCall('POST', '/attribution-lists', group('dates', '1112223339', [member('dates-1', { period })]), 'application/fhir+json');
      assert.equal(res.statusCode, 400, JSON.stringify(period));
      assert.deepEqual(res.json(), { error: 'invalid_request', error_description: message });
    }
    await importGroup(
      group('dates', '1112223339', [
        member('dates-1', { period: { start: '0100', end: '0150-06' } }),
        member('dates-2', { period: { start: '0999-12-31', end: '9999-12-31' } }),
        member('dates-3', { period: { end: '9999' } }),
        member('dates-4', { period: { start: '2026-03-01T10:00:00+02:00', end: '9999-12-31T23:59:59Z' } }),
      ]),
    );
    const kept = await adminCall('GET', '/attribution-lists/dates');
    assert.deepEqual(kept.json<{ members: { patient_id: string; period_start: string | null; period_end: string | null }[] }>().members.map((m) => [m.patient_id, m.period_start, m.period_end]), [
      ['dates-1', '0100-01-01T00:00:00.000Z', '0150-07-01T00:00:00.000Z'],
      // The year 10000, where the end lasts to, is past what the database keeps: the last instant it keeps.
      ['dates-2', '0999-12-31T00:00:00.000Z', '9999-12-31T23:59:59.999Z'],
      ['dates-3', null, '9999-12-31T23:59:59.999Z'],
      ['dates-4', '2026-03-01T08:00:00.000Z', '9999-12-31T23:59:59.999Z'],
    ]);
    assert.equal((await adminCall('DELETE', '/attribution-lists/dates')).statusCode, 204);
  });

  it('refuses a Group that is not an attribution list, naming what is wrong', async () => {
    const cases: [unknown, string][] = [
      [{ resourceType: 'Patient', id: 'x' }, 'the body must be a FHIR R4 Group (Da Vinci ATR member attribution list)'],
      [{ ...group('g1', CLINIC_NPI, []), id: undefined }, 'Group.id is required: it names the attribution list (1-64 of A-Z a-z 0-9 - .)'],
      [{ ...group('g1', CLINIC_NPI, []), identifier: [{ system: 'urn:example', value: 'x' }] }, `Group.identifier must hold the organisation's NPI (${NPI}) or TIN (urn:oid:2.16.840.1.113883.4.4)`],
      [group('g1', CLINIC_NPI, [{ entity: { reference: 'Practitioner/1' } }]), 'Group.member[0].entity.reference must be Patient/<id>'],
      [group('g1', CLINIC_NPI, [member(AMY, { period: { start: '2026-13-01' } })]), 'Group.member[0].period.start is not a valid date'],
      [group('g1', CLINIC_NPI, [member(AMY, { period: { start: '2026-05-01', end: '2026-04-01' } })]), 'Group.member[0].period ends before it starts'],
      [group('g1', CLINIC_NPI, [member(AMY), member(AMY)]), `Group.member[1]: Patient/${AMY} is listed twice`],
    ];
    for (const [body, message] of cases) {
      const res = await adminCall('POST', '/attribution-lists', body, 'application/fhir+json');
      assert.equal(res.statusCode, 400, JSON.stringify(body));
      assert.deepEqual(res.json(), { error: 'invalid_request', error_description: message });
    }
    const notJson = await app.inject({ method: 'POST', url: '/admin/api/attribution-lists', headers: { ...admin, 'content-type': 'application/fhir+json' }, payload: '{' });
    assert.equal(notJson.statusCode, 400);
    assert.equal((await adminCall('DELETE', '/attribution-lists/no-such-list')).statusCode, 404);
  });
});
