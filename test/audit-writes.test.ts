import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import pg from 'pg';

import type { AuditActorType } from '../src/db/tables/audit-events.js';
import { AUDIT_LIMITS, cleanDetails, cleanText } from '../src/audit/sanitize.js';
import { verifyAudit } from '../src/audit/verify.js';
import { clientAssertion, clientKey, JWT_BEARER } from './helpers/assertions.js';
import { testApp, TEST_ISSUER } from './helpers/app.js';
import { registerClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { tokenRequest } from './helpers/flow.js';

describe('audit values as Postgres can store them', () => {
  it('strips NUL, replaces lone surrogates, keeps pairs whole, caps lengths', () => {
    assert.equal(cleanText('a\u0000b\u0000'), 'ab');
    assert.equal(cleanText('x\ud800y\udc00z'), 'x\ufffdy\ufffdz');
    assert.equal(cleanText('😀'), '😀');
    assert.equal(cleanText('ab😀😀c', 6), 'ab😀…', 'never half a pair');
    assert.equal(cleanText('abcdefgh', 6), 'abcde…');
    assert.equal(cleanText('z'.repeat(5000)).length, AUDIT_LIMITS.text);
  });

  it('reduces details to what jsonb returns, keys and values cleaned, bounded in size', () => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    assert.deepEqual(
      cleanDetails({ 'k\u0000ey': 'v\udc00', nested: { deep: [1, 'x\u0000', undefined] }, big: 10n, when: new Date(0), url: new URL('https://a.example/p'), inf: Infinity, gone: undefined, fn: () => 1, circular }),
      { key: 'v\ufffd', nested: { deep: [1, 'x', null] }, big: '10', when: '1970-01-01T00:00:00.000Z', url: 'https://a.example/p', inf: null, circular: { self: { self: { self: { self: { self: '…' } } } } } },
    );
    const wide = cleanDetails({ list: Array.from({ length: 10_000 }, (_, i) => i) });
    assert.equal((wide.list as unknown[]).length, AUDIT_LIMITS.detailValues - 2);
  });
});

describeEachDatabase('audit writes', (ctx) => {
  let app: FastifyInstance;
  before(async () => {
    app = await testApp(ctx.current.database);
  });
  after(() => app.close());

  const count = async (where: { type: string; clientId: string }) =>
    Number((await ctx.current.database.db.selectFrom('audit_events').select((eb) => eb.fn.countAll<string>().as('n')).where('type', '=', where.type).where('client_id', '=', where.clientId).executeTakeFirstOrThrow()).n);

  it('POST /token with client_id=%00 among legitimate requests: every legitimate one answers 200 and is audited', async () => {
    const { db } = ctx.current.database;
    const key = await clientKey('ES384');
    await registerClient(app, { client_id: 'batch-backend', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [key.jwk] }, grant_types: ['client_credentials'], response_types: [], scope: 'system/*.rs' });
    const assertions = await Promise.all(Array.from({ length: 200 }, () => clientAssertion(key, { clientId: 'batch-backend', audience: `${TEST_ISSUER}/token` })));
    const legitimate = assertions.map((assertion) => ({ legit: true, send: () => tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: JWT_BEARER, client_assertion: assertion }) }));
    const poisoned = Array.from({ length: 60 }, () => ({ legit: false, send: () => app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'grant_type=client_credentials&client_id=%00' }) }));
    const requests = [...legitimate, ...poisoned];
    for (let i = requests.length - 1; i > 0; i--) {
      const j = (i * 7919) % (i + 1);
      [requests[i], requests[j]] = [requests[j]!, requests[i]!];
    }
    // On Postgres, audit inserts wait behind a lock until every token is issued, so that all the events,
    // the poisoned ones among them, go in one batch. (The embedded database has one connection, which such a
    // lock would hold for everything; there each event is committed before the next request records one.)
    const blocker = ctx.current.url ? new pg.Client({ connectionString: ctx.current.url }) : undefined;
    if (blocker) {
      await blocker.connect();
      await blocker.query('begin; lock table audit_events in share mode');
    }
    const answers = Promise.all(requests.map(async (r) => ({ legit: r.legit, res: await r.send() })));
    if (blocker) {
      // Every request has recorded its event (the tokens are written with them): the queue stops growing.
      let steady = 0;
      for (let last = -1; steady < 5; ) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        const pending = app.runtime.audit.pending;
        steady = pending >= 200 && pending === last ? steady + 1 : 0;
        last = pending;
      }
      await blocker.query('rollback');
      await blocker.end();
    }
    const answered = await answers;
    assert.deepEqual(answered.filter((a) => a.legit && a.res.statusCode !== 200).map((a) => a.res.statusCode), [], 'every legitimate request answered 200');
    assert.equal(await count({ type: 'token.issued', clientId: 'batch-backend' }), 200);
    const issued = await db.selectFrom('oidc_payloads').select((eb) => eb.fn.countAll<string>().as('n')).where('model', '=', 'ClientCredentials').executeTakeFirstOrThrow();
    assert.equal(Number(issued.n), 200, 'every token issued is stored');
  });

  it('stores values Postgres would refuse, cleaned, in the same batch as the others, and the hash covers what is stored', async () => {
    const audit = app.runtime.audit;
    const first = audit.record({ type: 'admin.request', actorType: 'system', clientId: 'clean-batch' });
    // Recorded while the first is being written: one batch.
    const batch = [
      audit.record({ type: 'admin.request', actorType: 'system', clientId: 'clean-batch' }),
      audit.record({
        type: 'token.failed',
        outcome: 'failure',
        actorType: 'anonymous',
        actorId: 'z'.repeat(5000),
        clientId: 'clean-\u0000batch',
        userId: 'u\ud800',
        patientId: '\udfff',
        grantId: 'g\u0000',
        scope: 'system/\u0000Patient.rs',
        sourceIp: '127.0.0.1\u0000',
        requestId: 'r\u0000',
        details: { 'reason\u0000': 'client_id \u0000 is \ud83d', nested: [{ 'k\udc00': '\u0000' }] },
      }),
      audit.record({ type: 'admin.request', actorType: 'system', clientId: 'clean-batch' }),
    ];
    await Promise.all([first, ...batch]);
    const row = await ctx.current.database.db.selectFrom('audit_events').selectAll().where('type', '=', 'token.failed').where('client_id', '=', 'clean-batch').executeTakeFirstOrThrow();
    assert.deepEqual(
      [row.actor_id, row.user_id, row.patient_id, row.grant_id, row.scope, row.source_ip, row.request_id, row.details],
      [`${'z'.repeat(AUDIT_LIMITS.text - 1)}…`, 'u\ufffd', '\ufffd', 'g', 'system/Patient.rs', '127.0.0.1', 'r', { reason: 'client_id  is \ufffd', nested: [{ 'k\ufffd': '' }] }],
    );
    assert.equal(await count({ type: 'admin.request', clientId: 'clean-batch' }), 3);
    const verified = await verifyAudit(ctx.current.database.db, app.runtime.box);
    assert.equal(verified.ok, true, JSON.stringify(verified.brokenAt));
  });

  it('an event the database refuses even so fails alone: the others in its batch commit, and the chain skips it', async () => {
    const audit = app.runtime.audit;
    const before = (await verifyAudit(ctx.current.database.db, app.runtime.box)).checked;
    const first = audit.record({ type: 'admin.request', actorType: 'system', clientId: 'isolated' });
    const others = Array.from({ length: 20 }, (_, i) => audit.record({ type: 'admin.request', actorType: 'system', clientId: 'isolated', details: { i } }));
    // A value no sanitising makes acceptable: the actor_type check constraint refuses it.
    const refused = audit.record({ type: 'admin.request', actorType: 'robot' as AuditActorType, clientId: 'isolated' });
    const more = Array.from({ length: 20 }, (_, i) => audit.record({ type: 'admin.request', actorType: 'system', clientId: 'isolated', details: { i: 20 + i } }));
    await assert.rejects(refused, /audit_events_actor_type_check|violates check constraint/);
    await Promise.all([first, ...others, ...more]);
    assert.equal(await count({ type: 'admin.request', clientId: 'isolated' }), 41);
    const verified = await verifyAudit(ctx.current.database.db, app.runtime.box);
    assert.deepEqual([verified.ok, verified.checked], [true, before + 41], JSON.stringify(verified.brokenAt));
  });
});
