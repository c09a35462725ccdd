import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { verifyAudit } from '../src/audit/verify.js';
import { testApp, TEST_ADMIN_TOKEN } from './helpers/app.js';
import { basicAuth, form, registerClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization } from './helpers/flow.js';

type Body = Record<string, unknown>;
const METRICS_TOKEN = 'metrics-token-0123456789abcdefghijklmn';
const SECRET = randomBytes(24).toString('base64url');

/**
 * Introspections that repeat one another are audited as one row per window with their count
 * (INTROSPECTION_AUDIT_WINDOW_SECONDS; AuditLog.recordRepeating): the first as it comes, before its answer; the
 * count of the others when the window ends, or when the server stops. Each introspection still counts in the
 * metrics, and the trail still verifies.
 */
describeEachDatabase('introspection audit: one row per window of repeated introspections, with their count', (ctx) => {
  const apps: FastifyInstance[] = [];
  const start = async (env: Record<string, string> = {}): Promise<FastifyInstance> => {
    const app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN, METRICS_TOKEN, ...env });
    apps.push(app);
    return app;
  };
  before(async () => {
    const app = await start();
    await registerClient(app, { client_id: 'backend', client_secret: SECRET, token_endpoint_auth_method: 'client_secret_basic', grant_types: ['client_credentials'], response_types: [], scope: 'system/Patient.rs' });
    await registerClient(app, { client_id: 'rs', client_secret: SECRET, token_endpoint_auth_method: 'client_secret_basic', grant_types: [], response_types: [], scope: 'introspect' });
    await registerClient(app, { client_id: 'app', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], scope: 'launch/patient patient/*.rs' });
  });
  after(async () => {
    for (const app of apps) await app.close();
  });

  const ccToken = async (app: FastifyInstance): Promise<string> => {
    const res = await app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('backend', SECRET) }, payload: form({ grant_type: 'client_credentials', scope: 'system/Patient.rs' }) });
    assert.equal(res.statusCode, 200, res.body);
    return res.json<Body>().access_token as string;
  };
  const introspect = async (app: FastifyInstance, token: string, requestId: string): Promise<Body> => {
    const res = await app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('rs', SECRET), 'x-request-id': requestId }, payload: form({ token }) });
    assert.equal(res.statusCode, 200, res.body);
    return res.json<Body>();
  };
  /** Where the trail ends now: the rows of one test are those after it. */
  let mark = '0';
  const markTrail = async (): Promise<void> => {
    mark = String((await ctx.current.database.db.selectFrom('audit_events').select((eb) => eb.fn.max('seq').as('seq')).executeTakeFirst())?.seq ?? '0');
  };
  /** The introspection rows since the mark: those of requests named `requestPrefix…`, and the windows' counts. */
  const rowsOf = (requestPrefix: string) =>
    ctx.current.database.db
      .selectFrom('audit_events')
      .select(['type', 'client_id', 'grant_id', 'request_id', 'details', 'source_ip'])
      .where('type', '=', 'token.introspected')
      .where('seq', '>', mark)
      .where((eb) => eb.or([eb('request_id', 'like', `${requestPrefix}%`), eb('request_id', 'is', null)]))
      .orderBy('seq')
      .execute();
  const introspectionsCounted = async (app: FastifyInstance, outcome: string): Promise<number> => {
    const res = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
    return Number(new RegExp(`^smart_auth_introspections_total\\{outcome="${outcome}"\\} (\\S+)$`, 'm').exec(res.body)?.[1] ?? 0);
  };

  it('five introspections alike: the first is a row as it comes, the other four one row with their count when the server stops; each is counted', async () => {
    await markTrail();
    const app = await start();
    const token = await ccToken(app);
    const before = await introspectionsCounted(app, 'active');
    for (let i = 0; i < 5; i++) assert.equal((await introspect(app, token, `alike-${i}`)).active, true);
    const unknown = await introspect(app, 'no-such-token', 'alike-unknown');
    assert.deepEqual(unknown, { active: false });
    assert.equal(await introspectionsCounted(app, 'active'), before + 5, 'every introspection in the metrics');
    await app.runtime.audit.flush();
    const open = await rowsOf('alike-');
    assert.deepEqual(
      open.map((r) => [r.request_id, r.details]),
      [
        ['alike-0', { active: true, token_client_id: 'backend' }],
        ['alike-unknown', { active: false }],
      ],
      'the first of each answer is written before it is answered; the repeats wait for the window',
    );

    await app.close();
    const rows = await rowsOf('alike-');
    assert.equal(rows.length, 3, JSON.stringify(rows));
    const summary = rows[2]!;
    assert.equal(summary.request_id, null, 'the repeats have no one request');
    assert.equal(summary.client_id, 'rs');
    assert.equal(summary.source_ip, '127.0.0.1');
    assert.equal(summary.details.repeated, 4);
    assert.equal(summary.details.active, true);
    assert.equal(summary.details.token_client_id, 'backend');
    assert.ok(Date.parse(summary.details.first as string) <= Date.parse(summary.details.last as string));
    const result = await verifyAudit(ctx.current.database.db, app.runtime.box);
    assert.equal(result.ok, true, JSON.stringify(result.brokenAt));

    // Exported as FHIR AuditEvent: the count on an entity of its own, the repeats' time as the event's period.
    const exported = await apps[0]!.inject({ method: 'GET', url: `/admin/api/audit/export?format=ndjson&type=token.introspected&after=${mark}&limit=1000`, headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
    assert.equal(exported.statusCode, 200, exported.body);
    const counted = exported.body.trim().split('\n').map((line) => JSON.parse(line) as Body).filter((e) => e.period);
    assert.equal(counted.length, 1);
    assert.deepEqual(counted[0]!.period, { start: summary.details.first, end: summary.details.last });
    assert.deepEqual((counted[0]!.entity as Body[]).at(-1), { what: { display: 'repeated events' }, type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '2', display: 'System Object' }, detail: [{ type: 'repeated', valueString: '4' }] });
  });

  it('an introspection of a launch token names its grant, and one of another grant is not a repeat', async () => {
    await markTrail();
    const app = await start();
    const grants: string[] = [];
    for (let i = 0; i < 2; i++) {
      const flow = await startAuthorization(app, { client_id: 'app', scope: 'launch/patient patient/*.rs' });
      await login(flow, 'patient', 'patient-demo');
      await consent(flow);
      const token = (await exchange(app, flow)).json<Body>().access_token as string;
      const answer = await introspect(app, token, `grant-${i}-a`);
      assert.equal(answer.active, true);
      await introspect(app, token, `grant-${i}-b`);
      const row = (await rowsOf(`grant-${i}-`))[0]!;
      assert.ok(row.grant_id, 'the grant of the token asked about');
      grants.push(row.grant_id);
    }
    assert.notEqual(grants[0], grants[1]);
    assert.deepEqual((await rowsOf('grant-')).map((r) => r.request_id), ['grant-0-a', 'grant-1-a']);
    await app.close();
    const closed = (await rowsOf('grant-')).filter((r) => r.request_id === null && typeof r.details.repeated === 'number' && grants.includes(r.grant_id!));
    assert.deepEqual(closed.map((r) => [r.grant_id, r.details.repeated]).sort(), grants.map((g) => [g, 1]).sort(), 'a count for each grant');
  });

  it('a window ends on its own: its count is written, and the next introspection opens a window with a row of its own', async () => {
    await markTrail();
    const app = await start({ INTROSPECTION_AUDIT_WINDOW_SECONDS: '2' });
    const token = await ccToken(app);
    for (let i = 0; i < 3; i++) await introspect(app, token, `timed-${i}`);
    const deadline = Date.now() + 8_000;
    let rows = await rowsOf('timed-');
    while (rows.length < 2 && Date.now() < deadline) {
      await sleep(200);
      rows = await rowsOf('timed-');
    }
    assert.deepEqual(rows.map((r) => [r.request_id, r.details.repeated]), [['timed-0', undefined], [null, 2]], 'the count written when its window ended, while the server runs');
    await introspect(app, token, 'timed-3');
    await app.runtime.audit.flush();
    assert.deepEqual((await rowsOf('timed-')).map((r) => r.request_id), ['timed-0', null, 'timed-3']);
  });

  it('INTROSPECTION_AUDIT_WINDOW_SECONDS=0: a row for each introspection', async () => {
    await markTrail();
    const app = await start({ INTROSPECTION_AUDIT_WINDOW_SECONDS: '0' });
    const token = await ccToken(app);
    for (let i = 0; i < 3; i++) await introspect(app, token, `each-${i}`);
    await app.runtime.audit.flush();
    assert.deepEqual((await rowsOf('each-')).map((r) => [r.request_id, r.details.repeated]), [['each-0', undefined], ['each-1', undefined], ['each-2', undefined]]);
  });
});
