import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';

import type { FastifyInstance, LightMyRequestResponse } from 'fastify';

import { startFhirServer } from '../src/fhir/server.js';
import { createLaunch } from '../src/launch/context.js';
import { enforce, type EnforceDecision } from '../src/smart/fhir/enforce.js';
import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE } from './helpers/app.js';
import { createClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { AMY, CATEGORY, DANIEL, LOINC, testRecords } from './helpers/fhir-data.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization } from './helpers/flow.js';

/**
 * Ways a token reached past its patient, found by an adversarial review of the gateway (2026-12-03), each
 * kept shut: a search from a type outside the compartment selecting by other patients' records (`_has`,
 * chains), a `_getpages` carrying a search of its own, a Patient created under the id in context, Devices and
 * Binaries of other patients, an app's If-Match pointing a write at a version never checked, and requests
 * that made the gateway fail (500) instead of refusing them.
 */

type Json = Record<string, unknown>;
interface Bundle {
  readonly entry?: { readonly resource?: { readonly resourceType: string; readonly id: string }; readonly response?: { readonly status: string } }[];
}
const ids = (res: LightMyRequestResponse): string[] => (res.json<Bundle>().entry ?? []).map((e) => `${e.resource!.resourceType}/${e.resource!.id}`);
const denied = (d: EnforceDecision, status: number, reason: RegExp): void => {
  if (d.decision !== 'deny') assert.fail(`allowed: ${d.url}`);
  assert.equal(d.status, status, d.reason);
  assert.match(d.reason, reason);
};

describe('enforce: no selecting by the records of patients the token does not reach', () => {
  const amy = { scope: 'patient/*.rs', patient: AMY };
  it('_has and chains from a search not confined to the patient (Practitioner, Medication, Location) into the compartment are 403', () => {
    for (const url of [
      `Practitioner?_has:Observation:performer:subject=Patient/${DANIEL}`,
      `Medication?_has:MedicationRequest:medication:patient=${DANIEL}`,
      `Location?_has:Encounter:location:patient=${DANIEL}`,
      `Organization?_has:Coverage:payor:beneficiary=Patient/${DANIEL}`,
      `?_type=Practitioner&_has:Observation:performer:subject=Patient/${DANIEL}`,
    ]) {
      denied(enforce({ method: 'GET', url }, amy), 403, /patients this token does not reach/);
    }
    // As before: through the patient's own records, and for a token that reaches every patient.
    assert.notEqual(enforce({ method: 'GET', url: 'Patient?_has:Observation:patient:code=1234' }, amy).decision, 'deny');
    assert.notEqual(enforce({ method: 'GET', url: 'Observation?subject:Patient.name=Shaw' }, amy).decision, 'deny');
    assert.notEqual(enforce({ method: 'GET', url: `Practitioner?_has:Observation:performer:subject=Patient/${DANIEL}` }, { scope: 'system/*.rs' }).decision, 'deny');
  });

  it('_getpages carries nothing but paging: with a search of its own it is held to the rules of one', () => {
    assert.notEqual(enforce({ method: 'GET', url: '?_getpages=abc&_getpagesoffset=20&_count=20&_bundletype=searchset' }, amy).decision, 'deny');
    denied(enforce({ method: 'GET', url: '?_getpages=abc&_type=Observation&_filter=subject eq Patient/x' }, amy), 403, /_filter|across types/);
    denied(enforce({ method: 'GET', url: `?_getpages=abc&_type=Practitioner&_has:Observation:performer:subject=Patient/${DANIEL}` }, amy), 403, /does not reach/);
  });

  it('a Patient sent with the id in context is created under another id: not the patient\'s, 403', () => {
    denied(enforce({ method: 'POST', url: 'Patient', body: { resourceType: 'Patient', id: AMY } }, { scope: 'patient/Patient.c', patient: AMY }), 403, /outside what this token reaches/);
  });

  it('a reference naming Patient twice, or with a query or fragment, is no one\'s: not written, and a record holding one is not the patient\'s', () => {
    const grant = { scope: 'patient/Observation.crs', patient: AMY };
    for (const reference of [`Patient/${DANIEL}/Patient/${AMY}`, `Patient/${DANIEL}?x=/Patient/${AMY}`, `https://fhir.example/r4/Patient/${DANIEL}/Patient/${AMY}`, `Patient/${AMY}#x`]) {
      const observation = { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference } };
      denied(enforce({ method: 'POST', url: 'Observation', body: observation }, grant), 403, /outside what this token reaches/);
      const read = enforce({ method: 'GET', url: 'Observation/o' }, grant);
      if (read.decision === 'deny') return assert.fail(read.reason);
      assert.equal(read.check({ ...observation, id: 'o' }).body, undefined, reference);
    }
    // As before: a plain, an absolute and a versioned reference to the patient are hers.
    for (const reference of [`Patient/${AMY}`, `https://fhir.example/r4/Patient/${AMY}`, `Patient/${AMY}/_history/2`]) {
      assert.notEqual(enforce({ method: 'POST', url: 'Observation', body: { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference } } }, grant).decision, 'deny', reference);
    }
  });

  it('a reference that is not a string is one that cannot be told: not written by a token that reaches some patients only', () => {
    const grant = { scope: 'patient/Observation.c', patient: AMY };
    for (const reference of [[`Patient/${DANIEL}`], { toString: `Patient/${DANIEL}` }, 42]) {
      denied(enforce({ method: 'POST', url: 'Observation', body: { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference }, performer: [{ reference: `Patient/${AMY}` }] } }, grant), 403, /outside what this token reaches/);
    }
  });

  it('a Device is its patient\'s record; a Binary whose securityContext is a Patient is theirs; Binary is not listed', () => {
    const device = (patient: string) => ({ resourceType: 'Device', id: 'd', patient: { reference: `Patient/${patient}` } });
    const read = enforce({ method: 'GET', url: 'Device/d' }, amy);
    assert.notEqual(read.decision, 'deny');
    if (read.decision === 'deny') return;
    assert.equal(read.check(device(DANIEL)).body, undefined);
    assert.deepEqual(read.check(device(AMY)).body, device(AMY));
    const search = enforce({ method: 'GET', url: 'Device' }, amy);
    assert.equal(search.decision !== 'deny' && search.url, `Device?patient=${AMY}`);
    const binary = (patient: string) => ({ resourceType: 'Binary', id: 'b', contentType: 'text/plain', securityContext: { reference: `Patient/${patient}` } });
    const get = enforce({ method: 'GET', url: 'Binary/b' }, amy);
    if (get.decision === 'deny') return assert.fail(get.reason);
    assert.equal(get.check(binary(DANIEL)).body, undefined);
    assert.deepEqual(get.check(binary(AMY)).body, binary(AMY));
    denied(enforce({ method: 'GET', url: 'Binary' }, amy), 403, /Binary cannot be confined/);
    // Its history neither: a deleted Binary's entry names its id and holds no resource to tell whose it was.
    denied(enforce({ method: 'GET', url: 'Binary/_history' }, amy), 403, /the history of every Binary cannot be confined/);
    assert.notEqual(enforce({ method: 'GET', url: 'Binary/_history' }, { scope: 'system/Binary.rs' }).decision, 'deny');
    for (const type of ['Contract', 'GuidanceResponse']) {
      const about = enforce({ method: 'GET', url: `${type}/x` }, amy);
      if (about.decision === 'deny') return assert.fail(about.reason);
      assert.equal(about.check({ resourceType: type, id: 'x', subject: [{ reference: `Patient/${DANIEL}` }] }).body, undefined, type);
      assert.equal(about.check({ resourceType: type, id: 'x', subject: { reference: `Patient/${DANIEL}` } }).body, undefined, type);
      denied(enforce({ method: 'GET', url: `${type}?patient=${DANIEL}` }, amy), 403, /outside the records/);
    }
    assert.notEqual(enforce({ method: 'GET', url: 'Binary' }, { scope: 'system/Binary.rs' }).decision, 'deny');
  });
});

describeEachDatabase('FHIR gateway: adversarial cases', (ctx) => {
  let app: FastifyInstance;
  let upstream: Awaited<ReturnType<typeof startFhirServer>>;
  // Between the gateway and the FHIR server: what the gateway sends, as sent.
  let proxy: Server;
  const sent: { method: string; url: string; ifMatch: string | undefined; body: string }[] = [];
  // Run before a request goes on to the FHIR server: another writer acting between the gateway's check and its write.
  let meanwhile: ((method: string, url: string) => Promise<void>) | undefined;

  before(async () => {
    upstream = await startFhirServer();
    await upstream.fhir.load([
      ...testRecords(),
      { resourceType: 'Device', id: 'dev-daniel', patient: { reference: `Patient/${DANIEL}` }, deviceName: [{ name: 'pacemaker', type: 'user-friendly-name' }] },
      { resourceType: 'Binary', id: 'bin-daniel', contentType: 'text/plain', securityContext: { reference: `Patient/${DANIEL}` }, data: Buffer.from('Daniel\'s letter').toString('base64') },
    ] as never);
    proxy = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (c: Buffer) => chunks.push(c)).on('end', () => {
        sent.push({ method: request.method!, url: request.url!, ifMatch: request.headers['if-match'], body: Buffer.concat(chunks).toString('utf8') });
        // As HAPI answers a conditional read of a resource unchanged since then (RFC 9110 §13.1.3).
        if (request.method === 'GET' && request.headers['if-modified-since'] && /^\/fhir\/Observation\/[^/?]+$/.test(request.url!)) {
          response.writeHead(304, { etag: 'W/"1"', 'last-modified': 'Tue, 01 Dec 2026 10:00:00 GMT' }).end();
          return;
        }
        const headers = Object.fromEntries(Object.entries(request.headers).filter(([n]) => !['host', 'connection', 'content-length'].includes(n))) as Record<string, string>;
        const body = chunks.length ? Buffer.concat(chunks) : undefined;
        void (meanwhile?.(request.method!, request.url!) ?? Promise.resolve()).then(() => fetch(`${new URL(upstream.url).origin}${request.url!}`, { method: request.method!, headers, ...(body ? { body } : {}) }).then(async (answer) => {
          const bytes = Buffer.from(await answer.arrayBuffer());
          response.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/fhir+json', ...(answer.headers.get('etag') ? { etag: answer.headers.get('etag')! } : {}) }).end(bytes);
        }));
      });
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const proxied = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}${new URL(upstream.url).pathname}`;
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN, FHIR_UPSTREAMS: `${TEST_FHIR_BASE}=${proxied}` });
    await createClient(app, { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'], client_id: 'app', client_name: 'Chart App' });
  });
  after(async () => {
    await app.close();
    await new Promise((resolve) => proxy.close(resolve));
    await upstream.close();
  });

  const launchToken = async (scope: string): Promise<string> => {
    const { launch } = await createLaunch(ctx.current.database.db, app.runtime.box, { patient: AMY });
    const flow = await startAuthorization(app, { client_id: 'app', scope: `launch ${scope}`, launch });
    await login(flow, 'clinician', 'clinician-demo');
    await consent(flow);
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    return res.json<Json>().access_token as string;
  };
  const fhir = (token: string, method: string, url: string, body?: unknown, headers: Record<string, string> = {}) =>
    app.inject({ method: method as 'GET', url: `/fhir${url}`, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/fhir+json' } : {}), ...headers }, ...(body !== undefined ? { payload: JSON.stringify(body) } : {}) });

  it('a patient token reads no other patient\'s Device or Binary, and lists no Binary', async () => {
    const token = await launchToken('patient/*.rs');
    assert.equal((await fhir(token, 'GET', '/Device/dev-daniel')).statusCode, 404);
    const devices = await fhir(token, 'GET', '/Device');
    assert.equal(devices.statusCode, 200, devices.body);
    assert.deepEqual(ids(devices), []);
    assert.equal((await fhir(token, 'GET', `/Device?patient=${DANIEL}`)).statusCode, 403);
    assert.equal((await fhir(token, 'GET', '/Binary/bin-daniel')).statusCode, 404);
    assert.equal((await fhir(token, 'GET', '/Binary')).statusCode, 403);
  });

  it('a patient token creates no Patient (its id is dropped, the record would be no one it reaches)', async () => {
    const token = await launchToken('patient/*.cruds');
    const res = await fhir(token, 'POST', '/Patient', { resourceType: 'Patient', id: AMY, name: [{ family: 'Planted' }] });
    assert.equal(res.statusCode, 403, res.body);
    assert.equal((await upstream.fhir.repository.searchResources({ resourceType: 'Patient', filters: [{ code: 'family', operator: 'eq', value: 'Planted' }] })).length, 0, 'nothing created upstream');
  });

  it('a write goes with the version checked: an app\'s If-Match naming another is 412 and never sent on', async () => {
    // On a FHIR server with versions 1, 2, 3… (HAPI) an app can name the next one: sent on, its If-Match would
    // let the write land on a version the gateway never checked (another patient's, if changed meanwhile).
    const token = await launchToken('patient/*.cruds');
    const body = { resourceType: 'Observation', id: 'obs-amy-social', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${AMY}` } };
    sent.length = 0;
    const res = await fhir(token, 'PUT', '/Observation/obs-amy-social', body, { 'if-match': 'W/"2"' });
    assert.equal(res.statusCode, 412, res.body);
    assert.deepEqual(sent.filter((r) => r.method === 'PUT'), [], 'no write sent upstream');
    const current = (await fhir(token, 'GET', '/Observation/obs-amy-social')).headers.etag as string;
    sent.length = 0;
    assert.equal((await fhir(token, 'PUT', '/Observation/obs-amy-social', body, { 'if-match': current })).statusCode, 200, 'naming the version checked is fine');
    assert.deepEqual(sent.filter((r) => r.method === 'PUT').map((r) => r.ifMatch), [current]);
  });

  it('a delete goes with the version checked: a record moved to another patient after the check is not deleted (412)', async () => {
    const token = await launchToken('patient/*.cruds');
    const mine = { resourceType: 'Observation', id: 'obs-amy-to-move', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${AMY}` } };
    const versionOf = async (resource: Json): Promise<string> => ((await upstream.fhir.repository.updateResource(resource as never)) as { meta: { versionId: string } }).meta.versionId;
    const checked = await versionOf(mine);
    // Another writer (an EHR user correcting a misfiled result) moves it to Daniel between the check and the delete.
    meanwhile = async (method) => {
      if (method === 'DELETE') await upstream.fhir.repository.updateResource({ ...mine, subject: { reference: `Patient/${DANIEL}` } } as never);
    };
    sent.length = 0;
    try {
      const res = await fhir(token, 'DELETE', '/Observation/obs-amy-to-move');
      assert.equal(res.statusCode, 412, res.body);
    } finally {
      meanwhile = undefined;
    }
    const deleteSent = sent.filter((r) => r.method === 'DELETE');
    assert.deepEqual(deleteSent.map((r) => r.ifMatch), [`W/"${checked}"`], 'sent with the version checked');
    const kept = (await upstream.fhir.repository.readResource('Observation', 'obs-amy-to-move')) as unknown as Json;
    assert.deepEqual(kept.subject, { reference: `Patient/${DANIEL}` }, 'Daniel\'s record is still there');

    // An app's own If-Match naming another version is 412 before anything is sent; naming the current one deletes.
    await upstream.fhir.repository.updateResource(mine as never);
    const current = (await fhir(token, 'GET', '/Observation/obs-amy-to-move')).headers.etag as string;
    sent.length = 0;
    assert.equal((await fhir(token, 'DELETE', '/Observation/obs-amy-to-move', undefined, { 'if-match': 'W/"1"' })).statusCode, 412);
    assert.deepEqual(sent.filter((r) => r.method === 'DELETE'), [], 'no delete sent upstream');
    const deleted = await fhir(token, 'DELETE', '/Observation/obs-amy-to-move', undefined, { 'if-match': current });
    assert.ok(deleted.statusCode === 200 || deleted.statusCode === 204, `${deleted.statusCode} ${deleted.body}`);
    assert.equal((await fhir(token, 'GET', '/Observation/obs-amy-to-move')).statusCode, 404);
    // In a batch the entry is pinned the same way.
    const again = await versionOf(mine);
    sent.length = 0;
    const batch = await fhir(token, 'POST', '', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'DELETE', url: 'Observation/obs-amy-to-move' } }] });
    assert.equal(batch.statusCode, 200, batch.body);
    const upstreamBatch = JSON.parse(sent.find((r) => r.method === 'POST')!.body) as { entry: { request: Record<string, unknown> }[] };
    assert.equal(upstreamBatch.entry[0]!.request.ifMatch, `W/"${again}"`);
    assert.match(batch.json<Bundle>().entry![0]!.response!.status, /^20[04]/);
  });

  it('a conditional read answered 304 tells nothing of a resource the token does not reach (404), in a batch too', async () => {
    const token = await launchToken('patient/*.rs');
    const since = { 'if-modified-since': 'Wed, 01 Jan 2031 00:00:00 GMT' };
    const other = await fhir(token, 'GET', '/Observation/obs-daniel-lab', undefined, since);
    assert.equal(other.statusCode, 404, `${other.statusCode} ${JSON.stringify(other.headers)}`);
    assert.equal(other.headers.etag, undefined);
    assert.equal((await fhir(token, 'GET', '/Observation/obs-amy-lab', undefined, since)).statusCode, 304, 'one\'s own: 304 as the FHIR server said');
    sent.length = 0;
    const batch = await fhir(token, 'POST', '', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: 'Observation/obs-daniel-lab', ifModifiedSince: '2031-01-01T00:00:00Z', ifNoneMatch: 'W/"1"' } }] });
    assert.equal(batch.statusCode, 200, batch.body);
    assert.match(batch.json<Bundle>().entry![0]!.response!.status, /^404/);
    const upstreamBatch = JSON.parse(sent.find((r) => r.method === 'POST')!.body) as { entry: { request: Record<string, unknown> }[] };
    assert.deepEqual(upstreamBatch.entry[0]!.request, { method: 'GET', url: 'Observation/obs-daniel-lab' }, 'the entry is read whole: a 304 would say it exists');
  });

  it('a batch entry\'s ifNoneExist that is not a string is 400: it is not sent on as a conditional create the rules never saw', async () => {
    const token = await launchToken('patient/*.cruds');
    const mine = { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${AMY}` } };
    sent.length = 0;
    const res = await fhir(token, 'POST', '', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'POST', url: 'Observation', ifNoneExist: [`subject=Patient/${DANIEL}&code=2345-7`] }, resource: mine }] });
    // Before: the entry went upstream, which ran it as a conditional create across every patient: 404 when
    // Daniel had such an Observation (found, his, filtered out), 201 when not.
    assert.equal(res.statusCode, 400, res.body);
    assert.match(res.body, /ifNoneExist must be a string/);
    assert.deepEqual(sent.filter((r) => r.method === 'POST'), []);
  });

  it('a batch entry whose url is not a URL and a JSON Patch the patcher throws on are refused (400, 422), never a 500', async () => {
    const token = await launchToken('patient/*.cruds');
    const batch = await fhir(token, 'POST', '', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: 'http://[::1' } }] });
    assert.equal(batch.statusCode, 400, batch.body);
    const patch = await fhir(token, 'PATCH', '/Observation/obs-amy-lab', [{ op: 'add', path: '/__proto__/x', value: 1 }], { 'content-type': 'application/json-patch+json' });
    assert.equal(patch.statusCode, 422, patch.body);
  });
  it('a batch search entry under granular scopes it cannot say upstream carries no total, as the search alone does not', async () => {
    // Two granular scopes with different parameters: the search goes upstream confined to Amy only, and the
    // answer is checked; the upstream's count is of every Observation of hers (4), not the 2 the token reaches.
    const token = await launchToken(`patient/Observation.rs?category=${CATEGORY}|laboratory patient/Observation.rs?code=${LOINC}|8867-4`);
    const single = await fhir(token, 'GET', '/Observation?_total=accurate&_count=0');
    assert.equal(single.statusCode, 200, single.body);
    assert.equal(single.json<Json>().total, undefined);
    const batch = await fhir(token, 'POST', '', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: 'Observation?_total=accurate&_count=0' } }] });
    assert.equal(batch.statusCode, 200, batch.body);
    const entry = batch.json<{ entry: { resource: Json }[] }>().entry[0]!;
    assert.equal(entry.resource.resourceType, 'Bundle');
    assert.equal(entry.resource.total, undefined, `the batch entry told a count beyond the granular scopes: ${JSON.stringify(entry.resource)}`);
    // A token whose search is confined upstream to what it reaches keeps the count.
    const whole = await fhir(await launchToken('patient/Observation.rs'), 'POST', '', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: 'Observation?_total=accurate&_count=0' } }] });
    assert.equal(whole.json<{ entry: { resource: Json }[] }>().entry[0]!.resource.total, 4);
  });

  it('a patient token does not link its Patient to another patient (Patient.link is the compartment\'s reference of Patient): 403', async () => {
    const token = await launchToken('patient/*.cruds');
    const linked = (type: string) => ({ resourceType: 'Patient', id: AMY, name: [{ family: 'Shaw', given: ['Amy'] }], link: [{ other: { reference: `Patient/${DANIEL}` }, type }] });
    sent.length = 0;
    const put = await fhir(token, 'PUT', `/Patient/${AMY}`, linked('seealso'));
    assert.equal(put.statusCode, 403, put.body);
    assert.match(put.body, /outside what this token reaches/);
    const patch = await fhir(token, 'PATCH', `/Patient/${AMY}`, [{ op: 'add', path: '/link', value: [{ other: { reference: `Patient/${DANIEL}` }, type: 'replaced-by' }] }], { 'content-type': 'application/json-patch+json' });
    assert.equal(patch.statusCode, 403, patch.body);
    const batch = await fhir(token, 'POST', '', { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'PUT', url: `Patient/${AMY}` }, resource: linked('replaced-by') }] });
    assert.equal(batch.statusCode, 403, batch.body);
    assert.deepEqual(sent.filter((r) => r.method !== 'GET'), [], 'nothing written upstream');
    assert.equal(((await upstream.fhir.repository.readResource('Patient', AMY)) as unknown as Json).link, undefined);
    // Her own record, unlinked or linked to herself, she still updates.
    const own = await fhir(token, 'PUT', `/Patient/${AMY}`, { ...linked('seealso'), link: [{ other: { reference: `Patient/${AMY}` }, type: 'seealso' }] });
    assert.equal(own.statusCode, 200, own.body);
    const plain = await fhir(token, 'PUT', `/Patient/${AMY}`, { resourceType: 'Patient', id: AMY, name: [{ family: 'Shaw', given: ['Amy'] }], birthDate: '1987-02-20', generalPractitioner: [{ reference: 'Practitioner/demo-practitioner' }] });
    assert.equal(plain.statusCode, 200, plain.body);
  });

  it('a write of one resource takes no search parameters: HAPI\'s ?_cascade=delete would delete other patients\' resources referring to it (400)', async () => {
    const token = await launchToken('patient/*.cruds');
    const mine = { resourceType: 'Observation', id: 'obs-amy-cascade', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${AMY}` } };
    await upstream.fhir.repository.updateResource(mine as never);
    sent.length = 0;
    for (const [method, url, body, type] of [
      ['DELETE', '/Observation/obs-amy-cascade?_cascade=delete', undefined, undefined],
      ['DELETE', `/Patient/${AMY}?_cascade=delete`, undefined, undefined],
      ['PUT', '/Observation/obs-amy-cascade?_cascade=delete', mine, undefined],
      ['PATCH', '/Observation/obs-amy-cascade?_cascade=delete', [{ op: 'replace', path: '/status', value: 'amended' }], 'application/json-patch+json'],
    ] as const) {
      const res = await fhir(token, method, url, body, type ? { 'content-type': type } : {});
      assert.equal(res.statusCode, 400, `${method} ${url}: ${res.statusCode} ${res.body}`);
      assert.match(res.body, /takes no parameter _cascade/);
    }
    const batch = await fhir(token, 'POST', '', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'DELETE', url: 'Observation/obs-amy-cascade?_cascade=delete' } }] });
    assert.equal(batch.statusCode, 200, batch.body);
    assert.match(batch.json<Bundle>().entry![0]!.response!.status, /^400/);
    assert.deepEqual(sent, [], 'nothing sent upstream');
    // With its format only, as before.
    const ok = await fhir(token, 'DELETE', '/Observation/obs-amy-cascade?_format=json');
    assert.ok(ok.statusCode === 200 || ok.statusCode === 204, `${ok.statusCode} ${ok.body}`);
  });
});
