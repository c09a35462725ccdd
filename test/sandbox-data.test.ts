import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { globalSchema } from '@medplum/core';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';

import { createFhirServer, startFhirServer } from '../src/fhir/server.js';
import { fhirResourceStore } from '../src/fhir-store/resources.js';
import { DEMO_ENCOUNTERS, DEMO_PATIENTS } from '../src/seed/demo.js';
import { generateSandboxPack, PACK_PATIENTS, SANDBOX_PACK_SEED } from '../src/seed/sandbox-pack.js';
import { resetSandboxPack } from '../src/seed/sandbox.js';
import { createLaunch } from '../src/launch/context.js';
import { testApp, TEST_ADMIN_TOKEN } from './helpers/app.js';
import { createClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { AMY, CATEGORY, DANIEL } from './helpers/fhir-data.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization, title } from './helpers/flow.js';

interface Resource {
  readonly resourceType: string;
  readonly id?: string;
}
interface Coded {
  readonly coding?: readonly { readonly system?: string; readonly code?: string }[];
}
interface Observation extends Resource {
  readonly subject: { readonly reference: string };
  readonly category: readonly Coded[];
  readonly code: Coded;
  readonly valueQuantity?: { readonly system?: string; readonly code?: string };
  readonly referenceRange?: readonly unknown[];
}
interface Bundle extends Resource {
  readonly total?: number;
  readonly entry?: readonly { readonly resource: Resource; readonly search?: { readonly mode: string }; readonly response?: { readonly status: string } }[];
}

const pack = generateSandboxPack();
const refs = (value: unknown): string[] => {
  const found: string[] = [];
  JSON.stringify(value, (key, v: unknown) => {
    if (key === 'reference' && typeof v === 'string') found.push(v);
    return v;
  });
  return found;
};
const key = (r: Resource): string => `${r.resourceType}/${r.id ?? ''}`;
const ofAmy = (r: Resource): boolean => refs(r).includes(`Patient/${AMY}`) && !refs(r).some((x) => x.startsWith('Patient/') && x !== `Patient/${AMY}`);
const codes = (c: Coded | readonly Coded[]): string[] => [c].flat().flatMap((x) => x.coding?.map((k) => k.code ?? '') ?? []);

describe('the synthetic data pack', () => {
  it('is deterministic: the same seed gives the same pack, another seed another', () => {
    assert.deepEqual(generateSandboxPack(SANDBOX_PACK_SEED), pack);
    assert.notDeepEqual(generateSandboxPack(SANDBOX_PACK_SEED + 1).resources, pack.resources);
  });

  it('holds these resources (counts pinned: a change to the generator shows here)', () => {
    const counts: Record<string, number> = {};
    for (const r of pack.resources) counts[r.resourceType] = (counts[r.resourceType] ?? 0) + 1;
    assert.deepEqual(counts, {
      Organization: 2,
      Location: 2,
      Practitioner: 4,
      PractitionerRole: 4,
      Patient: 30,
      Encounter: 164,
      Condition: 70,
      MedicationRequest: 63,
      Goal: 38,
      AllergyIntolerance: 21,
      Coverage: 30,
      Observation: 2853,
      DiagnosticReport: 241,
      Immunization: 197,
      DocumentReference: 164,
      ExplanationOfBenefit: 162,
      Procedure: 61,
      CareTeam: 30,
      CarePlan: 23,
      Provenance: 30,
      Device: 3,
    });
    assert.equal(pack.patients.length, PACK_PATIENTS);
  });

  it('every reference resolves, and no two resources share a type and id', () => {
    const all = new Set(pack.resources.map((r) => key(r)));
    assert.equal(all.size, pack.resources.length);
    const dangling = refs(pack.resources).filter((r) => !all.has(r));
    assert.deepEqual(dangling, []);
  });

  it('the demo patients and encounters keep their ids, names and periods; the directory gets every patient and encounter', () => {
    for (const demo of DEMO_PATIENTS) {
      const patient = pack.patients.find((p) => p.id === demo.id);
      assert.ok(patient, demo.id);
      assert.deepEqual([patient.name, patient.birthDate, patient.gender, patient.identifier], [demo.name, demo.birthDate, demo.gender, demo.identifier]);
    }
    for (const demo of DEMO_ENCOUNTERS) {
      const encounter = pack.encounters.find((e) => e.id === demo.id);
      assert.ok(encounter, demo.id);
      assert.deepEqual([encounter.status, encounter.period, encounter.subject.reference], [demo.status, demo.period, demo.subject.reference]);
    }
    assert.deepEqual(pack.patients.map((p) => key(p as Resource)), pack.resources.filter((r) => r.resourceType === 'Patient').map((r) => key(r)));
    assert.deepEqual(pack.encounters.map((e) => key(e as Resource)).sort(), pack.resources.filter((r) => r.resourceType === 'Encounter').map((r) => key(r)).sort());
    for (const patient of pack.patients) assert.deepEqual((patient.generalPractitioner as { reference: string }[])[0]!.reference, 'Practitioner/demo-practitioner', 'the demo clinician is everyone\'s primary care physician');
  });

  it('observations in the four USCDI categories, coded with LOINC and UCUM; labs with reference ranges; notes in base64 text', () => {
    const observations = pack.resources.filter((r) => r.resourceType === 'Observation') as unknown as Observation[];
    const categories = new Set(observations.flatMap((o) => codes(o.category)));
    assert.deepEqual([...categories].sort(), ['laboratory', 'social-history', 'survey', 'vital-signs']);
    for (const o of observations) {
      assert.equal(o.code.coding?.[0]?.system, 'http://loinc.org');
      if (o.valueQuantity) assert.equal(o.valueQuantity.system, 'http://unitsofmeasure.org', o.id);
      if (codes(o.category).includes('laboratory')) assert.equal(o.referenceRange?.length, 1, o.id);
    }
    const systemsOf = (type: string, field: string): string[] => [...new Set(pack.resources.filter((r) => r.resourceType === type).flatMap((r) => ((r as unknown as Record<string, Coded>)[field]!.coding ?? []).map((c) => c.system ?? '')))];
    assert.deepEqual(systemsOf('MedicationRequest', 'medicationCodeableConcept'), ['http://www.nlm.nih.gov/research/umls/rxnorm']);
    assert.deepEqual(systemsOf('Immunization', 'vaccineCode'), ['http://hl7.org/fhir/sid/cvx']);
    assert.deepEqual(systemsOf('Procedure', 'code').sort(), ['http://snomed.info/sct', 'http://www.ama-assn.org/go/cpt']);
    const note = pack.resources.find((r) => r.resourceType === 'DocumentReference') as unknown as { content: { attachment: { contentType: string; data: string } }[] };
    assert.equal(note.content[0]!.attachment.contentType, 'text/plain; charset=utf-8');
    assert.match(Buffer.from(note.content[0]!.attachment.data, 'base64').toString('utf8'), /^Encounter for check up - Amy Shaw, \d{4}-\d{2}-\d{2}\n/);
  });
});

describeEachDatabase('the embedded FHIR server on the database', (ctx) => {
  const observation = { resourceType: 'Observation', status: 'final', code: { text: 'pulse' }, subject: { reference: 'Patient/p1' } };
  const stored = async (): Promise<string[]> => (await ctx.current.database.db.selectFrom('fhir_resources').select(['resource_type', 'id']).orderBy('resource_type').orderBy('id').execute()).map((r) => `${r.resource_type}/${r.id}`);
  const send = (url: string, method: string, body?: unknown): Promise<Response> => fetch(url, { method, headers: { 'content-type': 'application/fhir+json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });

  it('records each write before answering, loads them at start; a failed transaction leaves nothing behind', async () => {
    const first = await startFhirServer({ persistence: fhirResourceStore(ctx.current.database.db) });
    try {
      assert.equal((await send(`${first.url}/Patient/p1`, 'PUT', { resourceType: 'Patient', id: 'p1', name: [{ family: 'One' }] })).status, 200);
      const created = await send(`${first.url}/Observation`, 'POST', observation);
      assert.equal(created.status, 201);
      const id = ((await created.json()) as Resource).id!;
      assert.deepEqual(await stored(), [`Observation/${id}`, 'Patient/p1'], 'in the database when answered');
      const failed = await send(first.url, 'POST', { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: observation, request: { method: 'POST', url: 'Observation' } }, { resource: { resourceType: 'Patient', id: 'p1' }, request: { method: 'PUT', url: 'Patient/p1', ifMatch: 'W/"stale"' } }] });
      assert.equal(failed.status, 412, 'the second entry fails after the first was made');
      assert.equal(((await (await send(`${first.url}/Observation`, 'GET')).json()) as Bundle).total, 1, 'the first entry was undone in memory');
      assert.deepEqual(await stored(), [`Observation/${id}`, 'Patient/p1'], 'and never written');
      assert.equal((await send(`${first.url}/Observation/${id}`, 'DELETE')).status, 200);
      assert.deepEqual(await stored(), ['Patient/p1']);
    } finally {
      await first.close();
    }
    const second = await startFhirServer({ persistence: fhirResourceStore(ctx.current.database.db) });
    try {
      const patient = await send(`${second.url}/Patient/p1`, 'GET');
      assert.equal(patient.status, 200);
      assert.deepEqual(((await patient.json()) as { name: unknown }).name, [{ family: 'One' }]);
      assert.equal(((await (await send(`${second.url}/Observation`, 'GET')).json()) as Bundle).total, 0);
    } finally {
      await second.close();
    }
  });

  it('each type searches with its own branch of a shared parameter\'s expression (all forty evaluated made Observation?patient= take seconds)', () => {
    createFhirServer({ baseUrl: 'http://fhir.test/fhir' });
    const expression = (type: string, code: string): string | undefined => (globalSchema.types[type]?.searchParams ?? {})[code]?.expression;
    assert.equal(expression('Observation', 'patient'), 'Observation.subject.where(resolve() is Patient)');
    assert.equal(expression('Observation', 'code'), 'Observation.code');
    assert.equal(expression('Condition', 'patient'), 'Condition.subject.where(resolve() is Patient)');
    assert.equal(expression('AllergyIntolerance', 'patient'), 'AllergyIntolerance.patient');
  });

  it('a write the database refuses is undone and answered 500', async () => {
    const store = fhirResourceStore(ctx.current.database.db);
    const server = await startFhirServer({ persistence: { loadAll: () => store.loadAll(), record: () => Promise.reject(new Error('disk full')) } });
    try {
      const res = await send(`${server.url}/Patient/p1`, 'PUT', { resourceType: 'Patient', id: 'p1', name: [{ family: 'Changed' }] });
      assert.equal(res.status, 500);
      assert.deepEqual(await res.json(), { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', details: { text: 'Internal server error' }, diagnostics: 'Error: the change could not be stored' }] });
      const patient = await send(`${server.url}/Patient/p1`, 'GET');
      assert.deepEqual(((await patient.json()) as { name: unknown }).name, [{ family: 'One' }], 'memory holds what the database does');
    } finally {
      await server.close();
    }
  });
});

describeEachDatabase('sandbox FHIR data', (ctx) => {
  const SANDBOX = { SANDBOX: 'true', SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN };
  let app: FastifyInstance;
  let token: string;

  const start = async (): Promise<void> => {
    app = await testApp(ctx.current.database, SANDBOX);
  };
  before(async () => {
    await start();
    await createClient(app, { client_id: 'chart', client_name: 'Chart', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'] });
    const { launch } = await createLaunch(ctx.current.database.db, app.runtime.box, { patient: AMY });
    const flow = await startAuthorization(app, { client_id: 'chart', scope: 'launch patient/*.rs patient/Observation.cud', launch });
    await login(flow, 'clinician', 'clinician-demo');
    await consent(flow);
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json<{ access_token: string; patient: string }>();
    assert.equal(body.patient, AMY);
    token = body.access_token;
  });
  after(() => app.close());

  const fhir = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown): Promise<LightMyRequestResponse> =>
    app.inject({ method, url: `/fhir${path}`, headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/fhir+json' }) }, ...(body === undefined ? {} : { payload: JSON.stringify(body) }) });
  const get = async (path: string): Promise<Bundle> => {
    const res = await fhir('GET', path);
    assert.equal(res.statusCode, 200, `${path}: ${res.body}`);
    return res.json<Bundle>();
  };
  const restart = async (): Promise<void> => {
    await app.close();
    await start();
  };

  it('first start in sandbox mode writes the pack: the FHIR resources and every patient and encounter in the directory', async () => {
    const { db } = ctx.current.database;
    const stored = await db.selectFrom('fhir_resources').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
    assert.equal(Number(stored.n), pack.resources.length);
    const patients = await db.selectFrom('patients').select('id').orderBy('id').execute();
    assert.deepEqual(patients.map((p) => p.id), pack.patients.map((p) => p.id).sort());
    const encounters = await db.selectFrom('encounters').select('id').orderBy('id').execute();
    assert.deepEqual(encounters.map((e) => e.id), pack.encounters.map((e) => e.id).sort());
  });

  it('reads and searches through the gateway: only the launch patient\'s data', async () => {
    const patient = await fhir('GET', `/Patient/${AMY}`);
    assert.equal(patient.statusCode, 200, patient.body);
    assert.deepEqual(patient.json<{ name: unknown }>().name, DEMO_PATIENTS[0]!.name);
    assert.equal((await fhir('GET', `/Patient/${DANIEL}`)).statusCode, 404, 'another patient is out of reach');

    const vitals = await get(`/Observation?patient=${AMY}&category=vital-signs&_count=1000`);
    const expected = pack.resources.filter((r) => r.resourceType === 'Observation' && ofAmy(r as Resource) && codes((r as unknown as Observation).category).includes('vital-signs'));
    assert.ok(expected.length > 10);
    assert.equal(vitals.total, expected.length);
    assert.deepEqual((vitals.entry ?? []).map((e) => key(e.resource)).sort(), expected.map((r) => key(r)).sort());
    for (const { resource } of vitals.entry ?? []) assert.equal((resource as Observation).subject.reference, `Patient/${AMY}`);

    const reports = await get(`/DiagnosticReport?patient=${AMY}&_include=DiagnosticReport:result&_count=1000`);
    const matches = (reports.entry ?? []).filter((e) => e.search?.mode === 'match');
    const included = (reports.entry ?? []).filter((e) => e.search?.mode === 'include').map((e) => key(e.resource));
    assert.ok(matches.length > 0);
    assert.deepEqual(included.sort(), matches.flatMap((e) => refs(e.resource).filter((r) => r.startsWith('Observation/'))).sort(), '_include brings each report\'s results');

    const chained = await get(`/Observation?subject:Patient.name=Shaw&category=${CATEGORY}|laboratory&_count=1000`);
    const labs = pack.resources.filter((r) => r.resourceType === 'Observation' && ofAmy(r as Resource) && codes((r as unknown as Observation).category).includes('laboratory'));
    assert.equal(chained.total, labs.length, 'a chained search on the patient\'s name');

    const everything = await get(`/Patient/${AMY}/$everything`);
    const everyKey = (everything.entry ?? []).map((e) => key(e.resource));
    assert.ok(everyKey.includes(`Patient/${AMY}`));
    for (const type of ['Encounter', 'Condition', 'Observation', 'AllergyIntolerance', 'MedicationRequest', 'Immunization', 'DiagnosticReport', 'DocumentReference', 'CarePlan', 'CareTeam', 'Goal', 'Coverage', 'ExplanationOfBenefit']) {
      assert.ok(everyKey.some((k) => k.startsWith(`${type}/`)), `$everything has her ${type}`);
    }
    assert.ok(!refs(everything).some((r) => r.startsWith('Patient/') && r !== `Patient/${AMY}`), 'and nothing of anyone else');
  });

  it('the demo patient signs in to her own record: Amy Shaw\'s labs, and nobody else\'s', async () => {
    const flow = await startAuthorization(app, { client_id: 'chart', scope: 'launch/patient patient/*.rs' });
    await login(flow, 'patient', 'patient-demo');
    assert.match(title(flow.page), /^Allow Chart to access Amy V\. Shaw/, 'her own record, no picker');
    await consent(flow);
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json<{ access_token: string; patient: string }>();
    assert.equal(body.patient, AMY);
    const labs = await app.inject({ method: 'GET', url: `/fhir/Observation?category=laboratory&_count=1000`, headers: { authorization: `Bearer ${body.access_token}` } });
    assert.equal(labs.statusCode, 200, labs.body);
    const expected = pack.resources.filter((r) => r.resourceType === 'Observation' && ofAmy(r as Resource) && codes((r as unknown as Observation).category).includes('laboratory'));
    assert.ok(expected.length > 0);
    assert.deepEqual(((labs.json<Bundle>().entry ?? []).map((e) => key(e.resource))).sort(), expected.map((r) => key(r)).sort());
  });

  it('writes survive a restart; a transaction is all or nothing; the pack is not written again over them', async () => {
    const observation = { resourceType: 'Observation', status: 'final', category: [{ coding: [{ system: CATEGORY, code: 'vital-signs' }] }], code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] }, subject: { reference: `Patient/${AMY}` }, valueQuantity: { value: 161, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' } };
    const created = await fhir('POST', '/Observation', observation);
    assert.equal(created.statusCode, 201, created.body);
    const id = created.json<Resource>().id!;
    const amyVital = pack.resources.find((r) => r.resourceType === 'Observation' && ofAmy(r as Resource))!;
    const updated = await fhir('PUT', `/Observation/${amyVital.id!}`, { ...amyVital, status: 'amended' });
    assert.equal(updated.statusCode, 200, updated.body);
    const amyLab = pack.resources.filter((r) => r.resourceType === 'Observation' && ofAmy(r as Resource))[1]!;
    assert.equal((await fhir('DELETE', `/Observation/${amyLab.id!}`)).statusCode, 200);
    const transaction = await fhir('POST', '', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:0d6b7a55-1111-4a1e-9c3e-3f0f7d1d2a01', resource: { ...observation, valueQuantity: { ...observation.valueQuantity, value: 162 } }, request: { method: 'POST', url: 'Observation' } },
        { fullUrl: 'urn:uuid:0d6b7a55-1111-4a1e-9c3e-3f0f7d1d2a02', resource: { ...observation, valueQuantity: { ...observation.valueQuantity, value: 163 } }, request: { method: 'POST', url: 'Observation' } },
      ],
    });
    assert.equal(transaction.statusCode, 200, transaction.body);
    const made = (transaction.json<Bundle>().entry ?? []).map((e) => e.response?.status);
    assert.deepEqual(made, ['201', '201']);
    const failed = await fhir('POST', '', {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:0d6b7a55-1111-4a1e-9c3e-3f0f7d1d2a03', resource: { ...observation, valueQuantity: { ...observation.valueQuantity, value: 164 } }, request: { method: 'POST', url: 'Observation' } },
        { request: { method: 'DELETE', url: `Observation/${amyLab.id!}` } },
      ],
    });
    assert.notEqual(failed.statusCode, 200, `the second entry deletes what is gone: ${failed.body}`);

    const heartRates = async (): Promise<number[]> => ((await get(`/Observation?patient=${AMY}&code=8867-4&_count=1000`)).entry ?? []).map((e) => (e.resource as Observation & { valueQuantity: { value: number } }).valueQuantity.value).filter((v) => v > 160).sort();
    assert.deepEqual(await heartRates(), [161, 162, 163], 'nothing of the failed transaction is there');

    await restart();
    assert.equal((await fhir('GET', `/Observation/${id}`)).statusCode, 200, 'the created observation survived the restart');
    assert.equal((await fhir('GET', `/Observation/${amyVital.id!}`)).json<{ status: string }>().status, 'amended');
    assert.equal((await fhir('GET', `/Observation/${amyLab.id!}`)).statusCode, 404, 'the deletion too');
    assert.deepEqual(await heartRates(), [161, 162, 163]);
    const stored = await ctx.current.database.db.selectFrom('fhir_resources').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
    assert.equal(Number(stored.n), pack.resources.length + 3 - 1, 'the pack was not written again');
  });

  it('sandbox reset restores the pack: the app\'s writes are gone, what it deleted is back; or, should its audit event fail, nothing', async () => {
    const resources = async () => (await ctx.current.database.db.selectFrom('fhir_resources').select(['resource_type', 'id', 'version_id']).orderBy('resource_type').orderBy('id').execute()).map((r) => `${r.resource_type}/${r.id}/${r.version_id}`);
    const before = await resources();
    const failing = resetSandboxPack(ctx.current.database.db, async () => {
      throw new Error('the audit event could not be written');
    });
    await assert.rejects(failing, /the audit event could not be written/);
    assert.deepEqual(await resources(), before, 'nothing was restored');

    let recorded: unknown;
    const written = await resetSandboxPack(ctx.current.database.db, async (_trx, restored) => {
      recorded = restored;
    });
    assert.deepEqual(recorded, written);
    assert.deepEqual(written, { resources: pack.resources.length, patients: pack.patients.length, encounters: pack.encounters.length });
    await restart();
    const heartRates = (await get(`/Observation?patient=${AMY}&code=8867-4&_count=1000`)).entry ?? [];
    assert.equal(heartRates.length, pack.resources.filter((r) => r.resourceType === 'Observation' && ofAmy(r as Resource) && codes((r as unknown as Observation).code).includes('8867-4')).length);
    const amyObservations = pack.resources.filter((r) => r.resourceType === 'Observation' && ofAmy(r as Resource));
    assert.equal((await fhir('GET', `/Observation/${amyObservations[1]!.id!}`)).statusCode, 200);
    assert.equal((await fhir('GET', `/Observation/${amyObservations[0]!.id!}`)).json<{ status: string }>().status, 'final');
  });
});

describeEachDatabase('sandbox FHIR data, sandbox mode off', (ctx) => {
  it('nothing is written, and no FHIR server is behind the base', async () => {
    const app = await testApp(ctx.current.database, { SANDBOX: 'false', SEED_DEMO: '' });
    try {
      const stored = await ctx.current.database.db.selectFrom('fhir_resources').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
      assert.equal(Number(stored.n), 0);
      assert.equal((await ctx.current.database.db.selectFrom('patients').select('id').execute()).length, 0);
      assert.equal((await app.inject({ method: 'GET', url: '/fhir/metadata' })).statusCode, 404);
    } finally {
      await app.close();
    }
  });
});
