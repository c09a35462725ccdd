import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';

import { createLaunch } from '../src/launch/context.js';
import { LAUNCH_REFUSALS } from '../src/smart/launch-policy.js';
import { clientAssertion, clientKey, JWT_BEARER } from './helpers/assertions.js';
import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { basicAuth, createClient, form } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { hiddenFields } from '../bench/lib/flows.js';
import { choices, formAction, inputValue } from './helpers/browser.js';
import { callback, consent, exchange, login, REDIRECT_URI, startAuthorization, title, tokenRequest, type Authorization } from './helpers/flow.js';

/**
 * Everything single-use stays single-use when the same value arrives many times at once (RFC 6749 §4.1.2,
 * RFC 9700 §4.14): of 20 simultaneous requests exactly one succeeds, and for codes and refresh tokens the
 * losers revoke the grant as a sequential reuse does. An interaction is decided once: of forms sent many times at
 * once, one decision is recorded, and no second grant made.
 */
type Body = Record<string, unknown>;
const PARALLEL = 20;
const PUBLIC = { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] };

describeEachDatabase('single use under concurrency', (ctx) => {
  let app: FastifyInstance;
  let rsSecret: string;
  before(async () => {
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN });
    await createClient(app, { ...PUBLIC, client_id: 'app' });
    rsSecret = (await createClient(app, { client_id: 'fhir-server', token_endpoint_auth_method: 'client_secret_basic', grant_types: [], scope: 'introspect' })).client_secret!;
  });
  after(() => app.close());

  const active = async (token: string): Promise<boolean> =>
    (await app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('fhir-server', rsSecret) }, payload: form({ token }) })).json<Body>().active === true;

  async function authorized(scope: string): Promise<Authorization> {
    const flow = await startAuthorization(app, { client_id: 'app', scope });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    return flow;
  }

  /** The consent form of `flow`'s page as its Allow or Deny button sends it, with the scopes the page checked. */
  function consentForm(flow: Authorization, decision: 'approve' | 'deny'): { action: string; fields: Record<string, string | string[]> } {
    const body = flow.page.res.body;
    assert.match(title(flow.page), /^Allow /);
    const scope = choices(body, 'scope').filter((c) => c.checked).map((c) => c.value);
    return { action: formAction(body, '/consent'), fields: { ...hiddenFields(body, '/consent'), decision, scope } };
  }

  /** What a client's authorizations left: its grants, their launch contexts, and the consent events recorded. */
  async function madeFor(clientId: string): Promise<{ grants: number; contexts: number; granted: number; denied: number }> {
    await app.runtime.audit.flush();
    const { db } = app.runtime.database;
    const grants = await db.selectFrom('oidc_payloads').select((eb) => eb.fn.countAll<string>().as('n')).where('model', '=', 'Grant').where(sql<boolean>`payload->>'clientId' = ${clientId}`).executeTakeFirstOrThrow();
    const contexts = await db.selectFrom('grant_contexts').select((eb) => eb.fn.countAll<string>().as('n')).where('client_id', '=', clientId).executeTakeFirstOrThrow();
    const events = await db.selectFrom('audit_events').select('type').where('client_id', '=', clientId).where('type', 'in', ['consent.granted', 'consent.denied']).execute();
    return { grants: Number(grants.n), contexts: Number(contexts.n), granted: events.filter((e) => e.type === 'consent.granted').length, denied: events.filter((e) => e.type === 'consent.denied').length };
  }

  it(`a consent form: Allow sent ${PARALLEL} times at once, exactly one grant, and the app gets its code`, async () => {
    await createClient(app, { ...PUBLIC, client_id: 'consent-twice' });
    const flow = await startAuthorization(app, { client_id: 'consent-twice', scope: 'launch/patient patient/Patient.rs offline_access' });
    await login(flow, 'patient', 'patient-demo');
    const { action, fields } = consentForm(flow, 'approve');
    const answers = await Promise.all(Array.from({ length: PARALLEL }, () => flow.browser.send('POST', action, fields)));
    // Each is sent on to the resume, which goes on with the one decision recorded.
    const resumes = new Set(answers.map((r) => `${r.statusCode} ${String(r.headers.location)}`));
    assert.equal(resumes.size, 1, [...resumes].join(' | '));
    assert.match([...resumes][0]!, /^303 .*\/auth\/[\w-]+$/);
    assert.deepEqual(await madeFor('consent-twice'), { grants: 1, contexts: 1, granted: 1, denied: 0 });
    flow.page = await flow.browser.go('GET', answers[0]!.headers.location as string);
    const tokens = await exchange(app, flow);
    assert.equal(tokens.statusCode, 200, tokens.body);
    assert.equal(tokens.json<Body>().patient, 'demo-amy-shaw');
  });

  it(`a decided consent's resume followed ${PARALLEL} times at once (a client, not a browser): exactly one code`, async () => {
    await createClient(app, { ...PUBLIC, client_id: 'resume-twice' });
    const flow = await startAuthorization(app, { client_id: 'resume-twice', scope: 'launch/patient patient/Patient.rs offline_access' });
    await login(flow, 'patient', 'patient-demo');
    const { action, fields } = consentForm(flow, 'approve');
    const decided = await flow.browser.send('POST', action, fields);
    assert.equal(decided.statusCode, 303);
    const answers = await Promise.all(Array.from({ length: PARALLEL }, () => flow.browser.send('GET', decided.headers.location as string)));
    const winners = answers.filter((r) => (r.headers.location ?? '').startsWith(`${REDIRECT_URI}?`));
    assert.equal(winners.length, 1, answers.map((r) => `${r.statusCode} ${r.headers.location ?? ''}`).join(' | '));
    // The resume takes the interaction as it reads it: the others find none, and say so to the person.
    for (const r of answers.filter((x) => x !== winners[0])) {
      assert.equal(r.statusCode, 400);
      assert.match(r.body, /<dt>Error<\/dt><dd><code>invalid_request<\/code><\/dd>\s*<dt>Details<\/dt><dd>interaction session not found<\/dd>/);
    }
    flow.page = { res: winners[0]!, location: winners[0]!.headers.location };
    const tokens = await exchange(app, flow);
    assert.equal(tokens.statusCode, 200, tokens.body);
  });

  it('a consent form: Allow and Deny sent at once, from two tabs: one decides, and what was stored is what the app gets', async () => {
    await createClient(app, { ...PUBLIC, client_id: 'consent-both' });
    // The order they reach the write falls as it falls: a few rounds, to meet more than one.
    for (let round = 0; round < 6; round++) {
      const flow = await startAuthorization(app, { client_id: 'consent-both', scope: 'launch/patient patient/Patient.rs' });
      await login(flow, 'patient', 'patient-demo');
      const before = await madeFor('consent-both');
      const allow = consentForm(flow, 'approve');
      const deny = consentForm(flow, 'deny');
      const answers = await Promise.all([flow.browser.send('POST', allow.action, allow.fields), flow.browser.send('POST', deny.action, deny.fields)]);
      for (const r of answers) assert.equal(r.statusCode, 303);
      flow.page = await flow.browser.go('GET', answers[0].headers.location as string);
      const after = await madeFor('consent-both');
      const made = { grants: after.grants - before.grants, contexts: after.contexts - before.contexts, granted: after.granted - before.granted, denied: after.denied - before.denied };
      const { code, error } = callback(flow);
      if (code) {
        assert.deepEqual(made, { grants: 1, contexts: 1, granted: 1, denied: 0 }, 'allowed: one grant, and no denial recorded');
        assert.equal((await exchange(app, flow)).statusCode, 200);
      } else {
        assert.equal(error, 'access_denied');
        assert.deepEqual(made, { grants: 0, contexts: 0, granted: 0, denied: 1 }, 'denied: no grant left behind');
      }
    }
  });

  // Within the sign-in throttle's free attempts (src/users/login-throttle.ts), which counts each of them.
  const SIGN_INS = 4;
  it(`a sign-in form sent ${SIGN_INS} times at once: one sign-in recorded, and the authorization goes on`, async () => {
    const flow = await startAuthorization(app, { client_id: 'app', scope: 'launch/patient patient/Patient.rs' });
    assert.equal(title(flow.page), 'Sign in');
    const body = flow.page.res.body;
    const since = new Date();
    const answers = await Promise.all(Array.from({ length: SIGN_INS }, () => flow.browser.send('POST', formAction(body, '/login'), { csrf: inputValue(body, 'csrf'), username: 'patient', password: 'patient-demo' })));
    // The sign-in kept first answers with the next page; every other goes to the interaction's page, which shows it.
    const kept = answers.filter((r) => r.statusCode === 200);
    assert.equal(kept.length, 1, answers.map((r) => r.statusCode).join(' '));
    const self = formAction(body, '/login').replace(/\/login$/, '');
    for (const r of answers.filter((x) => x !== kept[0])) assert.deepEqual([r.statusCode, r.headers.location], [303, self]);
    await app.runtime.audit.flush();
    const events = await app.runtime.database.db.selectFrom('audit_events').select('type').where('client_id', '=', 'app').where('type', '=', 'login.success').where('recorded_at', '>=', since).execute();
    assert.equal(events.length, 1, 'the sign-in kept, only');
    flow.page = await flow.browser.go('GET', self);
    assert.equal(inputValue(flow.page.res.body, 'csrf'), inputValue(kept[0]!.body, 'csrf'), 'the page of the sign-in kept');
    await consent(flow);
    assert.equal((await exchange(app, flow)).statusCode, 200);
  });

  it(`an authorization code: ${PARALLEL} exchanges at once, exactly one token set, and the grant is revoked`, async () => {
    const flow = await authorized('launch/patient patient/Patient.rs offline_access');
    const since = new Date();
    const results = await Promise.all(Array.from({ length: PARALLEL }, () => exchange(app, flow)));
    const ok = results.filter((r) => r.statusCode === 200);
    assert.equal(ok.length, 1, `statuses: ${results.map((r) => r.statusCode).join(' ')}`);
    // Those that took the code with the winner learn it was used (marked used with what each issued, in the write
    // of its audit event: only the winner's stays); those that came after the revocation find no code.
    const reasons = ['grant request is invalid: authorization code already consumed', 'grant request is invalid: authorization code not found'];
    for (const r of results.filter((x) => x.statusCode !== 200)) {
      assert.equal(r.statusCode, 400);
      assert.equal(r.json<Body>().error, 'invalid_grant');
      assert.ok(reasons.includes(r.json<Body>().error_description as string), r.body);
    }
    await app.runtime.audit.flush();
    const audit = await app.runtime.database.db.selectFrom('audit_events').select('type').where('client_id', '=', 'app').where('outcome', '=', 'failure').where('recorded_at', '>=', since).execute();
    assert.equal(audit.length, PARALLEL - 1, 'every refused exchange is audited');
    // The first loser finds the code used and revokes the grant, code included; later ones find no code.
    assert.ok(audit.some((e) => e.type === 'code.reused'), audit.map((e) => e.type).join(' '));
    const winner = ok[0]!.json<Body>();
    assert.equal(await active(winner.access_token as string), false, 'the reuse revoked what the code issued');
    const refreshed = await tokenRequest(app, { grant_type: 'refresh_token', refresh_token: winner.refresh_token as string, client_id: 'app' });
    assert.equal(refreshed.statusCode, 400, 'its refresh token too');
  });

  it(`a refresh token: ${PARALLEL} refreshes at once, exactly one new token set, and the grant is revoked`, async () => {
    const tokens = (await exchange(app, await authorized('launch/patient patient/Patient.rs offline_access'))).json<Body>();
    const results = await Promise.all(Array.from({ length: PARALLEL }, () => tokenRequest(app, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token as string, client_id: 'app' })));
    const ok = results.filter((r) => r.statusCode === 200);
    assert.equal(ok.length, 1, `statuses: ${results.map((r) => r.statusCode).join(' ')}`);
    for (const r of results.filter((x) => x.statusCode !== 200)) assert.deepEqual([r.statusCode, r.json<Body>().error], [400, 'invalid_grant']);
    const winner = ok[0]!.json<Body>();
    assert.equal(await active(winner.access_token as string), false, 'the reuse revoked the new access token');
    assert.equal(await active(tokens.access_token as string), false, 'and the first one');
    assert.equal((await tokenRequest(app, { grant_type: 'refresh_token', refresh_token: winner.refresh_token as string, client_id: 'app' })).statusCode, 400, 'and the new refresh token');
  });

  it(`an EHR launch: ${PARALLEL} authorizations with one launch id at once, exactly one goes on`, async () => {
    const { launch } = await createLaunch(app.runtime.database.db, app.runtime.box, { client_id: 'app', fhir_base: TEST_FHIR_BASE, patient: 'demo-amy-shaw' });
    // A clinician already signed in: each authorization goes straight to taking the launch, all at the same moment.
    const signedIn = await startAuthorization(app, { client_id: 'app', scope: 'openid' });
    await login(signedIn, 'clinician', 'clinician-demo');
    await consent(signedIn);
    const flows = await Promise.all(Array.from({ length: PARALLEL }, () => startAuthorization(app, { client_id: 'app', scope: 'launch patient/Patient.rs', launch }, { browser: signedIn.browser })));
    const onwards = flows.filter((f) => !f.page.location);
    assert.equal(onwards.length, 1, flows.map((f) => title(f.page)).join(' | '));
    assert.match(title(onwards[0]!.page), /^Allow /);
    // The others are refused one of two ways, as their timing falls: at /auth, having read the launch after
    // the winner took it (already used), or when their own take lost to the winner's (already used or expired).
    const refusals = new Set<string>([LAUNCH_REFUSALS.usedLaunch.description, LAUNCH_REFUSALS.launchGone.description]);
    for (const flow of flows.filter((f) => f.page.location)) {
      const { error_description: description, ...rest } = callback(flow);
      assert.deepEqual(rest, { error: 'invalid_request', state: 'state-1', iss: TEST_ISSUER });
      assert.ok(refusals.has(description ?? ''), `refused with: ${String(description)}`);
    }
  });

  it(`a client assertion: ${PARALLEL} token requests with one jti at once, exactly one token`, async () => {
    const key = await clientKey('ES384');
    await createClient(app, { client_id: 'backend', grant_types: ['client_credentials'], token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [key.jwk] }, scope: 'system/Patient.rs' });
    const assertion = await clientAssertion(key, { clientId: 'backend', audience: `${TEST_ISSUER}/token` });
    const results = await Promise.all(Array.from({ length: PARALLEL }, () => tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: JWT_BEARER, client_assertion: assertion })));
    assert.equal(results.filter((r) => r.statusCode === 200).length, 1, `statuses: ${results.map((r) => r.statusCode).join(' ')}`);
    for (const r of results.filter((x) => x.statusCode !== 200)) {
      assert.deepEqual([r.statusCode, r.json<Body>().error_description], [401, 'client authentication failed: client assertion rejected: its jti was already used; every assertion needs a new jti']);
    }
  });
});
