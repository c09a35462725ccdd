import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';

import { testApp, TEST_ADMIN_TOKEN } from './helpers/app.js';
import { createClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { callback, exchange, login, REDIRECT_URI, startAuthorization, title, type Authorization } from './helpers/flow.js';
import { hiddenFields } from '../bench/lib/flows.js';
import { choices, formAction } from './helpers/browser.js';

/**
 * The writes of an authorization's steps go to the database together, at the end of the step (issue 15): the
 * resume's (the code, the session under a new id, the old one removed) in one statement before the redirect
 * leaves, the consent's (the grant, the interaction's result) with its audit event. These tests make those
 * statements fail as an unavailable database fails them and check that nothing half-done is left or handed
 * out: no code in a redirect, no cookie naming a session that was not written, no grant without its record.
 */
describeEachDatabase('writes at the end of an authorization step', (ctx) => {
  let app: FastifyInstance;
  const SCOPE = 'openid fhirUser launch/patient patient/*.rs';

  before(async () => {
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN });
    await createClient(app, { client_id: 'app', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], scope: SCOPE });
  });
  after(() => app.close());

  const db = () => ctx.current.database.db;

  /** Until `release`, Postgres refuses rows of `table` matching `when` as a server starting up does (57P03). */
  async function refuse(table: 'oidc_payloads' | 'audit_events', when: string): Promise<{ release(): Promise<void> }> {
    await sql.raw(`create or replace function refuse_for_test() returns trigger language plpgsql as $$ begin if ${when} then raise exception 'the database system is starting up' using errcode = '57P03'; end if; return new; end $$`).execute(db());
    await sql.raw(`create trigger refuse_for_test before insert or update on ${table} for each row execute function refuse_for_test()`).execute(db());
    return {
      async release() {
        await sql.raw(`drop trigger refuse_for_test on ${table}`).execute(db());
        await sql.raw(`drop function refuse_for_test()`).execute(db());
      },
    };
  }

  /** A signed-in user's authorization, up to its consent page. */
  async function atConsent(): Promise<Authorization> {
    const flow = await startAuthorization(app, { client_id: 'app', scope: SCOPE });
    await login(flow, 'patient', 'patient-demo');
    assert.match(title(flow.page), /^Allow /);
    return flow;
  }

  /** Submits the consent page's form (Allow, what it checked) without following the redirect. */
  function allow(flow: Authorization) {
    const body = flow.page.res.body;
    const scope = choices(body, 'scope').filter((o) => o.checked).map((o) => o.value);
    return flow.browser.send('POST', formAction(body, '/consent'), { ...hiddenFields(body, '/consent'), decision: 'approve', scope });
  }

  const count = async (model: string): Promise<number> =>
    Number((await db().selectFrom('oidc_payloads').select((eb) => eb.fn.countAll().as('n')).where('model', '=', model).executeTakeFirstOrThrow()).n);

  it('a resume whose writes fail: the app gets temporarily_unavailable and no code; the app can start again', async () => {
    const flow = await atConsent();
    const consented = await allow(flow);
    assert.equal(consented.statusCode, 303);
    const resume = consented.headers.location as string;
    assert.match(resume, /\/auth\/[\w-]+$/);
    assert.equal(flow.browser.cookie('smart_session'), undefined, 'the sign-in goes to oidc-provider with the consent, at this resume');
    const codesBefore = await count('AuthorizationCode');

    const fault = await refuse('oidc_payloads', `new.model = 'AuthorizationCode'`);
    let res;
    try {
      res = await flow.browser.send('GET', resume);
    } finally {
      await fault.release();
    }
    // RFC 6749 §4.1.2.1, as oidc-provider answers a fault of its own: back to the app, with the state.
    assert.equal(res.statusCode, 303, res.body);
    const location = new URL(res.headers.location as string);
    assert.equal(`${location.origin}${location.pathname}`, REDIRECT_URI);
    assert.equal(location.searchParams.get('error'), 'temporarily_unavailable');
    assert.equal(location.searchParams.get('state'), 'state-1');
    assert.equal(location.searchParams.get('code'), null);
    assert.equal(await count('AuthorizationCode'), codesBefore, 'no code was written');

    // The interaction was taken by the failed resume (single use). The session it signed in was saved after all
    // (oidc-provider saves a changed session again after an error, and only the code was refused), so the app's
    // next authorization goes straight to consent, without a sign-in.
    assert.ok(flow.browser.cookie('smart_session'));
    const again = await startAuthorization(app, { client_id: 'app', scope: SCOPE }, { browser: flow.browser });
    assert.match(title(again.page), /^Allow /, 'still signed in');
    const done = await allow(again);
    again.page = await again.browser.go('GET', done.headers.location as string);
    assert.ok(callback(again).code);
    assert.equal((await exchange(app, again)).statusCode, 200);
  });

  it('two resumes at once: exactly one code', async () => {
    const flow = await atConsent();
    const resume = (await allow(flow)).headers.location as string;
    const results = await Promise.all([flow.browser.send('GET', resume), flow.browser.send('GET', resume)]);
    const toApp = results.filter((r) => typeof r.headers.location === 'string' && r.headers.location.startsWith(`${REDIRECT_URI}?code=`));
    assert.equal(toApp.length, 1, results.map((r) => `${r.statusCode} ${String(r.headers.location)}`).join(', '));
    const other = results.find((r) => r !== toApp[0])!;
    assert.equal(other.statusCode, 400, 'the other finds no interaction');
    assert.match(other.body, /authorization request has expired|interaction session not found/);
  });

  const contexts = async (): Promise<number> => Number((await db().selectFrom('grant_contexts').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n);

  it('a sign-in whose result or login.success event cannot be written: 503, neither is kept, the interaction still waits for a sign-in; the same form works once the database does', async () => {
    const flow = await startAuthorization(app, { client_id: 'app', scope: SCOPE });
    assert.equal(title(flow.page), 'Sign in');
    const body = flow.page.res.body;
    const signIn = () => flow.browser.send('POST', formAction(body, '/login'), { ...hiddenFields(body, '/login'), username: 'patient', password: 'patient-demo' });
    const successes = async () => Number((await db().selectFrom('audit_events').select((eb) => eb.fn.countAll().as('n')).where('type', '=', 'login.success').executeTakeFirstOrThrow()).n);
    const before = await successes();
    for (const [table, when] of [['audit_events', `new.type = 'login.success'`], ['oidc_payloads', `new.model = 'Interaction' and new.payload->'result'->'smart' ? 'signedIn'`]] as const) {
      const fault = await refuse(table, when);
      let res;
      try {
        res = await signIn();
      } finally {
        await fault.release();
      }
      assert.equal(res.statusCode, 503, `${table}: ${res.body}`);
      assert.equal(res.headers.location, undefined);
      assert.equal(await successes(), before, `${table}: no login.success for a sign-in that was not kept`);
    }
    const uid = /\/interaction\/([\w-]+)\//.exec(formAction(body, '/login'))![1]!;
    const interaction = await db().selectFrom('oidc_payloads').select('payload').where('model', '=', 'Interaction').where('id', '=', uid).executeTakeFirstOrThrow();
    const result = (interaction.payload as { result?: { login?: unknown; smart?: { signedIn?: unknown } } }).result;
    assert.deepEqual([result?.login, result?.smart?.signedIn], [undefined, undefined], 'no sign-in without its record');

    const retried = await signIn();
    assert.equal(retried.statusCode, 200, retried.body);
    assert.match(title({ res: retried, location: undefined }), /^Allow /, 'signed in: the consent page is the answer');
    assert.equal(await successes(), before + 1);
  });

  it('a consent whose audit event cannot be written: 503, and neither the grant, its launch context nor the decision is kept; Allow works once the database does', async () => {
    const flow = await atConsent();
    const grantsBefore = await count('Grant');
    const contextsBefore = await contexts();
    const fault = await refuse('audit_events', `new.type = 'consent.granted'`);
    let res;
    try {
      res = await allow(flow);
    } finally {
      await fault.release();
    }
    assert.equal(res.statusCode, 503, res.body);
    assert.equal(res.headers.location, undefined);
    assert.equal(await count('Grant'), grantsBefore, 'no grant without its consent recorded');
    assert.equal(await contexts(), contextsBefore, 'no launch context for a grant that was not made');
    const uid = /\/interaction\/([\w-]+)\//.exec(formAction(flow.page.res.body, '/consent'))![1]!;
    const interaction = await db().selectFrom('oidc_payloads').select('payload').where('model', '=', 'Interaction').where('id', '=', uid).executeTakeFirstOrThrow();
    assert.equal((interaction.payload as { result?: { consent?: unknown } }).result?.consent, undefined, 'the interaction still waits for a decision');

    const retried = await allow(flow);
    assert.equal(retried.statusCode, 303);
    flow.page = await flow.browser.go('GET', retried.headers.location as string);
    const token = await exchange(app, flow);
    assert.equal(token.statusCode, 200, token.body);
    assert.equal(token.json<{ patient?: string }>().patient, 'demo-amy-shaw');
    assert.equal(await count('Grant'), grantsBefore + 1);
    assert.equal(await contexts(), contextsBefore + 1);
  });
});
