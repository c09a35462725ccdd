import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { Browser, formAction, inputValue } from './helpers/browser.js';
import { createClient, form, pkce } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization, tokenRequest } from './helpers/flow.js';

type Body = Record<string, unknown>;

describeEachDatabase('connected apps page', (ctx) => {
  let app: FastifyInstance;
  before(async () => {
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN });
    await createClient(app, { client_id: 'health-app', client_name: 'Health App', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] });
    await createClient(app, { client_id: 'other-app', client_name: 'Other App', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] });
  });
  after(() => app.close());

  it('its own client is granted openid and nothing else, whatever it asks for', async () => {
    const browser = new Browser(app, TEST_ISSUER);
    const { verifier, challenge } = pkce();
    const query = form({ client_id: 'urn:smart-auth:account', response_type: 'code', redirect_uri: `${TEST_ISSUER}/account/callback`, scope: 'openid user/*.cruds patient/*.cruds launch/patient offline_access', aud: TEST_FHIR_BASE, code_challenge: challenge, code_challenge_method: 'S256', state: 's' });
    const signIn = await browser.go('GET', `/auth?${query}`);
    let res = await browser.send('POST', formAction(signIn.res.body, '/login'), { csrf: inputValue(signIn.res.body, 'csrf'), username: 'clinician', password: 'clinician-demo' });
    // Follow our redirects by hand up to the callback, to read the code the page itself would ignore.
    while (res.statusCode === 303 || res.statusCode === 302) {
      const location = new URL(String(res.headers.location), TEST_ISSUER);
      if (location.pathname === '/account/callback') break;
      res = await browser.send('GET', location.href);
    }
    const code = new URL(String(res.headers.location), TEST_ISSUER).searchParams.get('code');
    assert.ok(code, `a code at the callback: ${res.statusCode} ${String(res.headers.location)}`);
    const token = await tokenRequest(app, { grant_type: 'authorization_code', code, redirect_uri: `${TEST_ISSUER}/account/callback`, client_id: 'urn:smart-auth:account', code_verifier: verifier });
    assert.equal(token.statusCode, 200, token.body);
    assert.equal(token.json<Body>().scope, 'openid', 'no FHIR scope, no refresh token, no launch context without a consent page');
    assert.equal(token.json<Body>().refresh_token, undefined);
  });

  it('is the management_endpoint of SMART discovery', async () => {
    const smart = (await app.inject({ method: 'GET', url: '/.well-known/smart-configuration' })).json<Body>();
    assert.equal(smart.management_endpoint, `${TEST_ISSUER}/account/apps`);
  });

  it('asks the user to sign in, lists the apps holding their grants, and revokes one at once', async () => {
    const flow = await startAuthorization(app, { client_id: 'health-app', scope: 'launch/patient patient/Observation.rs offline_access' });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    const tokens = (await exchange(app, flow)).json<Body>();
    const otherUser = await startAuthorization(app, { client_id: 'other-app', scope: 'openid' });
    await login(otherUser, 'clinician', 'clinician-demo');
    await consent(otherUser);

    const browser = new Browser(app, TEST_ISSUER);
    const signIn = await browser.go('GET', '/account/apps');
    assert.match(signIn.res.body, /<h1 id="title">Sign in<\/h1>/, 'not signed in: the sign-in page first');
    const page = await browser.go('POST', formAction(signIn.res.body, '/login'), { csrf: inputValue(signIn.res.body, 'csrf'), username: 'patient', password: 'patient-demo' });
    assert.equal(page.res.statusCode, 200);
    assert.match(page.res.body, /<h1 id="title">Connected apps<\/h1>/);
    assert.match(page.res.body, /<h2 id="app-0">Health App<\/h2>/);
    assert.match(page.res.body, /Observations \(lab results, vital signs, assessments\)/);
    assert.match(page.res.body, /records of Amy V\. Shaw/);
    assert.match(page.res.body, /last used \d{4}-\d{2}-\d{2} \d{2}:\d{2}/);
    assert.ok(!page.res.body.includes('Other App'), "another user's apps are not listed");
    assert.ok(!page.res.body.includes('Your account'), 'the page itself is not listed');
    assert.equal(page.res.headers['cache-control'], 'no-store');

    const early = await browser.go('GET', '/account/apps?revoked=health-app');
    assert.match(early.res.body, /<h2 id="app-0">Health App<\/h2>/);
    assert.ok(!early.res.body.includes('no longer has access'), 'no banner for an app still connected');

    const forged = await browser.send('POST', '/account/apps/revoke', { csrf: 'forged', client_id: 'health-app' });
    assert.equal(forged.statusCode, 403);

    const revoked = await browser.go('POST', formAction(page.res.body, '/revoke'), { csrf: inputValue(page.res.body, 'csrf'), client_id: 'health-app' });
    assert.match(revoked.res.body, /Health App no longer has access\./);
    assert.match(revoked.res.body, /No app has access\./);
    const spoofed = await browser.go('GET', `/account/apps?revoked=${encodeURIComponent('Your account is locked, call 555')}`);
    assert.equal(spoofed.res.statusCode, 200);
    assert.ok(!spoofed.res.body.includes('Your account is locked'), 'the banner names only apps that exist');
    assert.ok(!spoofed.res.body.includes('no longer has access'));

    const refresh = await tokenRequest(app, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token as string, client_id: 'health-app' });
    assert.equal(refresh.statusCode, 400, 'the refresh token is refused at once');
    const introspection = await app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ token: tokens.access_token as string, client_id: 'health-app' }) });
    assert.deepEqual(introspection.json(), { active: false }, 'and the access token');
    const audit = await app.runtime.database.db.selectFrom('audit_events').selectAll().where('type', '=', 'grant.revoked').executeTakeFirstOrThrow();
    assert.deepEqual([audit.actor_type, audit.user_id, audit.client_id], ['user', 'demo-patient', 'health-app']);
  });
});
