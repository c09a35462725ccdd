import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';

import { GENESIS_HASH, legacyChainHash } from '../src/audit/audit.js';
import { verifyAudit } from '../src/audit/verify.js';
import { EVENT_SUBTYPE_SYSTEM } from '../src/audit/fhir.js';
import { clientAssertion, clientKey, JWT_BEARER } from './helpers/assertions.js';
import { testApp, testConfig, TEST_ISSUER } from './helpers/app.js';
import { basicAuth, form, registerClient } from './helpers/clients.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { migrations } from '../migrations/index.js';
import { SecretBox } from '../src/security/secret-box.js';
import { describeEachDatabase } from './helpers/databases.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization, tokenRequest } from './helpers/flow.js';

type Body = Record<string, unknown>;
/** The SecretBox of every test app (TEST_SECRET_KEY). */
const box = new SecretBox(testConfig().secretKey!);
const ADMIN_TOKEN = 'audit-admin-token-0123456789abcdefghij';

describeEachDatabase('audit trail', (ctx) => {
  let app: FastifyInstance;
  const secrets: string[] = [];
  before(async () => {
    app = await testApp(ctx.current.database, { ADMIN_TOKEN, SEED_DEMO: 'true' });
  });
  after(() => app.close());

  const admin = (method: 'GET' | 'POST', url: string, payload?: unknown) =>
    app.inject({ method, url: `/admin/api${url}`, headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, ...(payload === undefined ? {} : { payload: payload as string }) });
  const types = async () => (await ctx.current.database.db.selectFrom('audit_events').select('type').execute()).map((r) => r.type);

  it('records every kind of security decision, with who, which app, whose data and what scope', async () => {
    // Admin: a client, a user, a launch, a key rotation.
    const created = await admin('POST', '/clients', { client_id: 'audited', client_name: 'Audited', redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none' });
    assert.equal(created.statusCode, 201);
    await admin('POST', '/users', { username: 'audited-user', password: 'audited-password', fhirUser: 'Practitioner/a1', name: 'Audited User' });
    const launch = (await admin('POST', '/launches', { patient: 'demo-amy-shaw' })).json<Body>().launch as string;
    await admin('POST', '/keys/rotate', { algs: ['ES256'], force: true });

    // A person: a failed and a good sign-in, an EHR launch, consent, a refresh, a revocation, a code reused.
    const flow = await startAuthorization(app, { client_id: 'audited', scope: 'launch openid patient/*.rs offline_access', launch });
    await login(flow, 'clinician', 'wrong-password-1');
    await login(flow, 'clinician', 'clinician-demo');
    await consent(flow);
    const tokens = (await exchange(app, flow)).json<Body>();
    secrets.push(tokens.access_token as string, tokens.refresh_token as string, tokens.id_token as string);
    assert.equal((await exchange(app, flow)).statusCode, 400, 'code reused');
    const refreshed = (await tokenRequest(app, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token as string, client_id: 'audited' })).json<Body>();
    assert.equal(refreshed.access_token, undefined, 'the reused code revoked the grant');

    const second = await startAuthorization(app, { client_id: 'audited', scope: 'launch/patient patient/*.rs offline_access' });
    await login(second, 'patient', 'patient-demo');
    await consent(second);
    const t2 = (await exchange(app, second)).json<Body>();
    const r2 = (await tokenRequest(app, { grant_type: 'refresh_token', refresh_token: t2.refresh_token as string, client_id: 'audited' })).json<Body>();
    secrets.push(t2.access_token as string, t2.refresh_token as string, r2.refresh_token as string);
    await app.inject({ method: 'POST', url: '/revoke', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ token: r2.refresh_token as string, client_id: 'audited' }) });

    const denied = await startAuthorization(app, { client_id: 'audited', scope: 'launch/patient patient/*.rs' });
    await login(denied, 'patient', 'patient-demo');
    await consent(denied, { decision: 'deny' });

    // A backend client: a good assertion, its replay, a bad one; a resource server introspecting.
    const key = await clientKey('ES384');
    const rsSecret = randomBytes(32).toString('base64url');
    secrets.push(rsSecret);
    await registerClient(app, { client_id: 'audited-backend', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [key.jwk] }, grant_types: ['client_credentials'], response_types: [], scope: 'system/*.rs' });
    await registerClient(app, { client_id: 'audited-rs', client_secret: rsSecret, token_endpoint_auth_method: 'client_secret_basic', grant_types: [], response_types: [], scope: 'introspect' });
    const assertion = await clientAssertion(key, { clientId: 'audited-backend', audience: `${TEST_ISSUER}/token` });
    secrets.push(assertion);
    const cc = (await tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: JWT_BEARER, client_assertion: assertion })).json<Body>();
    secrets.push(cc.access_token as string);
    await tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: JWT_BEARER, client_assertion: assertion });
    await tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: JWT_BEARER, client_assertion: await clientAssertion(key, { clientId: 'audited-backend', audience: 'https://elsewhere.example/token' }) });
    await app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('audited-rs', rsSecret) }, payload: form({ token: cc.access_token as string }) });
    await app.runtime.audit.flush();

    const recorded = new Set(await types());
    for (const type of [
      'login.success', 'login.failure', 'consent.granted', 'consent.denied', 'token.issued', 'token.refreshed', 'token.revoked', 'token.introspected',
      'client_assertion.failed', 'client_assertion.replayed', 'code.reused', 'client.created', 'user.created', 'launch.created', 'launch.used', 'key.rotated', 'admin.request',
    ]) {
      assert.ok(recorded.has(type), `${type} recorded`);
    }

    const db = ctx.current.database.db;
    const granted = await db.selectFrom('audit_events').selectAll().where('type', '=', 'consent.granted').where('user_id', '=', 'demo-clinician').executeTakeFirstOrThrow();
    assert.equal(granted.client_id, 'audited');
    assert.equal(granted.patient_id, 'demo-amy-shaw');
    assert.equal(granted.scope, 'launch openid patient/*.rs offline_access');
    assert.ok(granted.grant_id);
    assert.equal(granted.source_ip, '127.0.0.1');
    const failure = await db.selectFrom('audit_events').selectAll().where('type', '=', 'login.failure').executeTakeFirstOrThrow();
    assert.deepEqual([failure.outcome, failure.user_id, failure.details], ['failure', 'demo-clinician', { reason: 'invalid' }]);
    const replay = await db.selectFrom('audit_events').selectAll().where('type', '=', 'client_assertion.replayed').executeTakeFirstOrThrow();
    assert.equal(replay.client_id, 'audited-backend');
    assert.match(String(replay.details.reason), /jti was already used/);
    const issued = await db.selectFrom('audit_events').selectAll().where('type', '=', 'token.issued').where('client_id', '=', 'audited-backend').executeTakeFirstOrThrow();
    assert.equal(issued.scope, 'system/Patient.rs');
  });

  it('never records a token, code, secret, password or assertion', async () => {
    const rows = await ctx.current.database.db.selectFrom('audit_events').selectAll().execute();
    const text = JSON.stringify(rows);
    for (const secret of [...secrets, 'clinician-demo', 'patient-demo', 'audited-password', 'wrong-password-1', ADMIN_TOKEN]) assert.ok(!text.includes(secret), `no ${secret.slice(0, 12)}… in the audit trail`);
  });

  it('is append-only: the database refuses UPDATE, DELETE and TRUNCATE', async () => {
    const db = ctx.current.database.db;
    await assert.rejects(db.updateTable('audit_events').set({ type: 'nothing' }).execute(), /audit_events is append-only: UPDATE is not allowed/);
    await assert.rejects(db.deleteFrom('audit_events').execute(), /audit_events is append-only: DELETE is not allowed/);
    await assert.rejects(sql`truncate audit_events`.execute(db), /audit_events is append-only: TRUNCATE is not allowed/);
  });

  it('queries by type, client, user, patient, outcome and time, with paging', async () => {
    const page = (url: string) => admin('GET', `/audit${url}`).then((r) => r.json<{ items: Body[]; next: string | null }>());
    assert.ok((await page('?type=token.&limit=1000')).items.every((e) => String(e.type).startsWith('token.')));
    assert.ok((await page('?client=audited&limit=1000')).items.every((e) => e.client_id === 'audited'));
    assert.ok((await page('?user=demo-patient&limit=1000')).items.every((e) => e.user_id === 'demo-patient'));
    assert.ok((await page('?patient=demo-amy-shaw')).items.length > 0);
    assert.ok((await page('?outcome=failure&limit=1000')).items.every((e) => e.outcome === 'failure'));
    assert.deepEqual((await page(`?from=${new Date(Date.now() + 60_000).toISOString()}`)).items, []);
    const first = await page('?limit=2');
    const second = await page(`?limit=2&after=${first.next!}`);
    assert.ok(Number(second.items[0]!.seq) > Number(first.items[1]!.seq));
    const bad = await admin('GET', '/audit?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z');
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.json<Body>().error_description, 'from is after to');
    const early = await admin('GET', '/audit?from=0000-01-01T00:00:00Z');
    assert.equal(early.statusCode, 400);
    assert.equal(early.json<Body>().error_description, 'from 0000-01-01T00:00:00Z is out of range: the audit trail is searched from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z');
    const cursor = await admin('GET', '/audit?after=9223372036854775808');
    assert.equal(cursor.statusCode, 400);
    assert.equal(cursor.json<Body>().error_description, 'after 9223372036854775808 is past the largest event number (9223372036854775807)');
  });

  it('exports FHIR R4 AuditEvent resources (NDJSON and Bundle) that hold to the R4 structure', async () => {
    const ndjson = await admin('GET', '/audit/export?format=ndjson&limit=10000');
    assert.equal(ndjson.statusCode, 200);
    assert.equal(ndjson.headers['content-type'], 'application/fhir+ndjson; charset=utf-8');
    const events = ndjson.body.trim().split('\n').map((line) => JSON.parse(line) as Body);
    assert.ok(events.length > 20);
    for (const event of events) assertAuditEvent(event);
    const login = events.find((e) => (e.subtype as { code: string }[])[0]!.code === 'login.success')!;
    assert.deepEqual(login.type, { system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110114', display: 'User Authentication' });
    const consentEvent = events.find((e) => (e.subtype as { code: string }[])[0]!.code === 'consent.granted' && JSON.stringify(e).includes('Patient/demo-amy-shaw'))!;
    assert.deepEqual((consentEvent.entity as Body[])[0], { what: { reference: 'Patient/demo-amy-shaw' }, type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '1', display: 'Person' }, role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1', display: 'Patient' } });

    const bundle = await admin('GET', '/audit/export?format=bundle&type=login.&limit=2');
    assert.equal(bundle.headers['content-type'], 'application/fhir+json; charset=utf-8');
    const body = bundle.json<{ resourceType: string; type: string; entry: { fullUrl: string; resource: Body }[] }>();
    assert.equal(body.resourceType, 'Bundle');
    assert.equal(body.type, 'collection');
    assert.equal(body.entry.length, 2);
    assert.ok(bundle.headers['x-next-after']);
    for (const entry of body.entry) assertAuditEvent(entry.resource);
  });

  it('verifies the hash chain, and finds a modified row', async () => {
    const db = ctx.current.database.db;
    const intact = await verifyAudit(db, app.runtime.box, { pageSize: 7 });
    assert.equal(intact.ok, true);
    assert.ok(intact.checked > 20);
    const victim = await db.selectFrom('audit_events').select('seq').where('type', '=', 'consent.denied').executeTakeFirstOrThrow();
    // Someone with the database owner's rights, who can disable the trigger, edits history.
    await sql`alter table audit_events disable trigger audit_events_no_change`.execute(db);
    await sql`update audit_events set outcome = 'success' where seq = ${String(victim.seq)}`.execute(db);
    await sql`alter table audit_events enable trigger audit_events_no_change`.execute(db);
    const broken = await verifyAudit(db, app.runtime.box);
    assert.equal(broken.ok, false);
    assert.deepEqual(broken.brokenAt, { seq: String(victim.seq), reason: 'the row does not match its hash (it was modified)' });
  });
});

describeEachDatabase('audit chain across processes', (ctx) => {
  it('two server processes writing at once each keep an intact chain, anchored in the trail', async () => {
    const db = ctx.current.database.db;
    const [a, b] = [await testApp(ctx.current.database), await testApp(ctx.current.database)];
    try {
      await Promise.all(
        Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).runtime.audit.record({ type: 'admin.request', actorType: 'system', details: { i } })),
      );
      // A third process, started later, anchors its chain to a hash the others wrote.
      const c = await testApp(ctx.current.database);
      await c.runtime.audit.record({ type: 'admin.request', actorType: 'system', details: { i: 40 } });
      await c.close();
      assert.deepEqual(await verifyAudit(db, a.runtime.box, { pageSize: 9 }), { ok: true, checked: 41, chains: 3, checkpoints: { stored: 0, given: [] } });
      const rows = await db.selectFrom('audit_events').select(['seq', 'chain', 'prev_hash', 'hash']).orderBy('seq').execute();
      const chains = new Map<string, typeof rows>();
      for (const row of rows) chains.set(row.chain, [...(chains.get(row.chain) ?? []), row]);
      assert.equal(chains.size, 3);
      const last = rows.at(-1)!;
      assert.ok(rows.slice(0, -1).some((r) => r.hash === last.prev_hash), 'the third chain starts from an existing hash');
      for (const chain of chains.values()) for (let i = 1; i < chain.length; i++) assert.equal(chain[i]!.prev_hash, chain[i - 1]!.hash);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('names a chain whose anchor was removed, and a row removed from the middle of a chain', async () => {
    const db = ctx.current.database.db;
    const rows = await db.selectFrom('audit_events').select(['seq', 'chain', 'prev_hash', 'hash']).orderBy('seq').execute();
    const [late, anchor] = [rows.at(-1)!, rows.at(-2)!];
    assert.equal(late.prev_hash, anchor.hash, 'the last chain is anchored to the newest row before it');
    await sql`alter table audit_events disable trigger audit_events_no_change`.execute(db);
    try {
      // The anchor is the tail of its own chain: removing it leaves that chain whole but the later one unanchored.
      await sql`delete from audit_events where seq = ${String(anchor.seq)}`.execute(db);
      assert.deepEqual(await verifyAudit(db, box), {
        ok: false,
        checked: rows.length - 2,
        chains: 2,
        checkpoints: { stored: 0, given: [] },
        brokenAt: { seq: String(late.seq), reason: 'the chain starts from a hash that is not in the trail (rows before it were removed)' },
      });
      const chain = rows.filter((r) => r.chain === rows[0]!.chain);
      await sql`delete from audit_events where seq = ${String(chain[1]!.seq)}`.execute(db);
      assert.deepEqual((await verifyAudit(db, box)).brokenAt, {
        seq: String(chain[2]!.seq),
        reason: 'prev_hash is not the hash of the row before in its chain (a row was removed or inserted)',
      });
    } finally {
      await sql`alter table audit_events enable trigger audit_events_no_change`.execute(db);
    }
  });
});

describeEachDatabase(
  'audit trail written before chains had names',
  (ctx) => {
    it('keeps verifying after each upgrade: chain "", then per-process chains, then keyed chains anchored to them', async () => {
      const { db } = ctx.current.database;
      const { Migrator } = await import('kysely/migration');
      const migrator = new Migrator({ db, provider: { getMigrations: () => Promise.resolve(migrations) } });
      assert.equal((await migrator.migrateTo('2026-11-28T02-00-audit')).error, undefined);
      const legacyRow = (chain: string, i: number) => ({ chain, recorded_at: new Date(Date.UTC(2026, 10, 28, 2, 0, i)), type: 'admin.request', outcome: 'success' as const, actor_type: 'system' as const, actor_id: null, user_id: null, client_id: null, patient_id: null, grant_id: null, scope: null, source_ip: null, request_id: null, details: { i } });
      // Two rows as the first release wrote them: no chain column, the hash over the rest.
      let prev = GENESIS_HASH;
      for (const i of [1, 2]) {
        const row = legacyRow('', i);
        const hash = legacyChainHash(prev, row);
        await sql`insert into audit_events (recorded_at, type, outcome, actor_type, details, prev_hash, hash) values (${row.recorded_at}, ${row.type}, ${row.outcome}, ${row.actor_type}, ${JSON.stringify(row.details)}, ${prev}, ${hash})`.execute(db);
        prev = hash;
      }
      // Then a process of the next release: a chain of its own, still plain sha256, anchored to the rows before.
      assert.equal((await migrator.migrateTo('2026-11-28T03-00-audit-chains')).error, undefined);
      const writeLegacy = async (chain: string, i: number) => {
        const row = legacyRow(chain, i);
        const hash = legacyChainHash(prev, row);
        await sql`insert into audit_events (chain, recorded_at, type, outcome, actor_type, details, prev_hash, hash) values (${chain}, ${row.recorded_at}, ${row.type}, ${row.outcome}, ${row.actor_type}, ${JSON.stringify(row.details)}, ${prev}, ${hash})`.execute(db);
        prev = hash;
      };
      await writeLegacy('process-of-the-last-release', 3);
      await writeLegacy('process-of-the-last-release', 4);

      const names = Object.keys(migrations);
      assert.deepEqual(await migrateToLatest(db), names.slice(names.indexOf('2026-11-28T03-00-audit-chains') + 1), 'every migration after the chains one');
      const app = await testApp(ctx.current.database);
      try {
        await app.runtime.audit.record({ type: 'admin.request', actorType: 'system', details: { i: 5 } });
      } finally {
        await app.close();
      }
      const newest = await db.selectFrom('audit_events').select(['chain', 'prev_hash', 'hash']).orderBy('seq', 'desc').limit(1).executeTakeFirstOrThrow();
      assert.equal(newest.prev_hash, prev, 'the keyed chain starts from the last row of the last release');
      assert.match(newest.hash, /^v2\.[A-Za-z0-9_-]{8}\.[0-9a-f]{64}$/);
      // During a rolling upgrade a process of the last release goes on writing plain hashes in its own chain.
      await writeLegacy('process-of-the-last-release', 6);
      assert.deepEqual(await verifyAudit(db, box), { ok: true, checked: 6, chains: 3, checkpoints: { stored: 0, given: [] } });
      // Gone back to the last release: its next process begins a chain with plain hashes after keyed ones. As a
      // forged chain would be, it is refused, unless the operator says that is what happened.
      await writeLegacy('process-after-going-back', 7);
      const refused = await verifyAudit(db, box);
      assert.equal(refused.brokenAt?.reason, 'the chain has plain sha256 hashes and begins after keyed rows (it was written without SECRET_KEY; if the deployment went back to a release from before keyed chains, verify with --allow-unkeyed-chains)');
      assert.deepEqual(await verifyAudit(db, box, { allowUnkeyedChains: true }), { ok: true, checked: 7, chains: 4, checkpoints: { stored: 0, given: [] } });
    });
  },
  { migrate: false },
);

/** The R4 AuditEvent structure: required elements, cardinalities and the coded values we use. */
function assertAuditEvent(event: Body): void {
  assert.equal(event.resourceType, 'AuditEvent');
  assert.match(String(event.id), /^[A-Za-z0-9\-.]{1,64}$/);
  const coding = (c: unknown) => {
    assert.ok(c && typeof c === 'object');
    assert.equal(typeof (c as Body).system, 'string');
    assert.equal(typeof (c as Body).code, 'string');
  };
  coding(event.type);
  assert.ok(Array.isArray(event.subtype));
  for (const s of event.subtype as unknown[]) coding(s);
  assert.equal((event.subtype as Body[])[0]!.system, EVENT_SUBTYPE_SYSTEM);
  assert.ok(['C', 'R', 'U', 'D', 'E'].includes(event.action as string), `action ${String(event.action)}`);
  assert.match(String(event.recorded), /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);
  assert.ok(['0', '4', '8', '12'].includes(event.outcome as string));
  assert.ok(Array.isArray(event.agent) && event.agent.length >= 1, 'agent 1..*');
  for (const agent of event.agent as Body[]) {
    assert.equal(typeof agent.requestor, 'boolean', 'agent.requestor 1..1');
    if (agent.type) for (const c of (agent.type as { coding: unknown[] }).coding) coding(c);
    if (agent.network) assert.ok(['1', '2', '3', '4', '5'].includes((agent.network as Body).type as string));
  }
  assert.ok((event.agent as Body[]).some((a) => a.requestor === true), 'someone requested it');
  const source = event.source as Body;
  assert.ok(source.observer && typeof source.observer === 'object', 'source.observer 1..1');
  for (const t of (source.type ?? []) as unknown[]) coding(t);
  for (const entity of (event.entity ?? []) as Body[]) {
    assert.ok(entity.what, 'entity.what');
    if (entity.type) coding(entity.type);
    if (entity.role) coding(entity.role);
    for (const d of (entity.detail ?? []) as Body[]) assert.ok(typeof d.type === 'string' && typeof d.valueString === 'string');
  }
  if (event.period) {
    const { start, end, ...rest } = event.period as Body;
    assert.deepEqual(rest, {}, 'period: start and end');
    assert.ok(Date.parse(start as string) <= Date.parse(end as string), 'a period that ends after it starts');
  }
  const allowed = new Set(['resourceType', 'id', 'type', 'subtype', 'action', 'period', 'recorded', 'outcome', 'outcomeDesc', 'agent', 'source', 'entity']);
  for (const key of Object.keys(event)) assert.ok(allowed.has(key), `unexpected element ${key}`);
}
