import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';

import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { inputValue } from './helpers/browser.js';
import { basicAuth, createClient, form } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { consent, exchange, login, pickPatient, REDIRECT_URI, startAuthorization, tokenRequest, type Authorization } from './helpers/flow.js';

type Body = Record<string, unknown>;
const DAY = 86_400_000;

describeEachDatabase('refresh tokens, introspection and revocation of launch tokens', (ctx) => {
  let app: FastifyInstance;
  let rsSecret: string;
  before(async () => {
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN });
    await createClient(app, { client_id: 'app', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] });
    rsSecret = (await createClient(app, { client_id: 'fhir-server', token_endpoint_auth_method: 'client_secret_basic', grant_types: [], scope: 'introspect' })).client_secret!;
  });
  after(() => app.close());

  async function launch(scope: string, user = 'patient', password = 'patient-demo'): Promise<{ flow: Authorization; body: Body }> {
    const flow = await startAuthorization(app, { client_id: 'app', scope });
    await login(flow, user, password);
    if (user === 'clinician') await pickPatient(flow, 'demo-amy-shaw');
    await consent(flow);
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    return { flow, body: res.json<Body>() };
  }
  const refresh = (refreshToken: string, extra: Record<string, string> = {}) => tokenRequest(app, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: 'app', ...extra });
  const introspect = (token: string) => app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('fhir-server', rsSecret) }, payload: form({ token }) });
  /** Tokens are stored under a keyed hash of their value; grants under their id. */
  const storedId = (model: string, id: string) => (model === 'Grant' ? id : app.runtime.box.bearerId(id));
  const expiryOf = async (model: string, id: string) => (await ctx.current.database.db.selectFrom('oidc_payloads').select('expires_at').where('model', '=', model).where('id', '=', storedId(model, id)).executeTakeFirstOrThrow()).expires_at!;

  it('capability: permission-offline — offline tokens live 90 days, each refresh renews them, keeps the context, rotates', async () => {
    const scope = 'openid fhirUser launch/patient patient/Observation.rs patient/Patient.rs offline_access';
    const { body } = await launch(scope);
    const rt1 = body.refresh_token as string;
    assert.ok((await expiryOf('RefreshToken', rt1)).getTime() > Date.now() + 89 * DAY);

    const res = await refresh(rt1);
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.equal(res.headers.pragma, 'no-cache');
    const refreshed = res.json<Body>();
    assert.equal(refreshed.scope, scope);
    assert.equal(refreshed.patient, 'demo-amy-shaw');
    assert.equal(refreshed.need_patient_banner, true);
    assert.equal(refreshed.token_type, 'Bearer');
    assert.ok(refreshed.id_token, 'openid: a new id_token');
    const rt2 = refreshed.refresh_token as string;
    assert.notEqual(rt2, rt1, 'rotated');
    assert.ok((await expiryOf('RefreshToken', rt2)).getTime() > Date.now() + 89 * DAY, 'renewed for a full period');
    const grantId = (await ctx.current.database.db.selectFrom('oidc_payloads').select('grant_id').where('model', '=', 'RefreshToken').where('id', '=', storedId('RefreshToken', rt2)).executeTakeFirstOrThrow()).grant_id!;
    assert.ok((await expiryOf('Grant', grantId)).getTime() > Date.now() + 89 * DAY, 'the grant is renewed too');

    const reuse = await refresh(rt1);
    assert.equal(reuse.statusCode, 400);
    assert.deepEqual(reuse.json(), { error: 'invalid_grant', error_description: 'grant request is invalid: refresh token already used' });
    assert.equal((await refresh(rt2)).statusCode, 400, 'reusing a rotated-out token revokes the whole family');
    assert.deepEqual((await introspect(refreshed.access_token as string)).json(), { active: false });
  });

  it('a grant outlives its refresh tokens by a day; a refresh renews the grant and its context only when they would end before the token it issues', async () => {
    const { db } = ctx.current.database;
    const { body } = await launch('launch/patient patient/Observation.rs offline_access');
    const rt1 = body.refresh_token as string;
    const grantId = (await db.selectFrom('oidc_payloads').select('grant_id').where('model', '=', 'RefreshToken').where('id', '=', storedId('RefreshToken', rt1)).executeTakeFirstOrThrow()).grant_id!;
    const grantRow = () => db.selectFrom('oidc_payloads').select(['expires_at', sql<string>`payload->>'exp'`.as('exp')]).where('model', '=', 'Grant').where('id', '=', grantId).executeTakeFirstOrThrow();
    const contextRow = () => db.selectFrom('grant_contexts').select(['expires_at', 'last_used_at']).where('grant_id', '=', grantId).executeTakeFirstOrThrow();
    const issued = await grantRow();
    assert.ok(issued.expires_at!.getTime() > (await expiryOf('RefreshToken', rt1)).getTime() + DAY - 60_000, 'the grant ends a day after its first refresh token');
    // oidc-provider's `exp` counts from when it made the grant, the row's end from when it was saved: a second apart at most.
    assert.ok(Math.abs(Number(issued.exp) - issued.expires_at!.getTime() / 1000) <= 1, 'the payload’s exp and the row’s end agree');
    const context = await contextRow();
    assert.ok(Math.abs(context.expires_at.getTime() - issued.expires_at!.getTime()) < 60_000, 'the launch context ends with its grant');

    const first = await refresh(rt1);
    assert.equal(first.statusCode, 200, first.body);
    const rt2 = first.json<Body>().refresh_token as string;
    assert.deepEqual(await grantRow(), issued, 'a refresh within the margin leaves the grant as it is');
    const used = await contextRow();
    assert.equal(used.expires_at.getTime(), context.expires_at.getTime(), 'and its context’s end');
    assert.ok(used.last_used_at && Math.abs(used.last_used_at.getTime() - Date.now()) < 60_000, 'the context’s last use is recorded');
    assert.ok((await expiryOf('RefreshToken', rt2)).getTime() <= issued.expires_at!.getTime(), 'the new refresh token ends before its grant');

    // 81 days later: the grant and its context end in ten days, before a refresh token issued now.
    const soon = sql<Date>`now() + interval '10 days'`;
    await db.updateTable('oidc_payloads').set({ expires_at: soon, payload: sql`jsonb_set(payload, '{exp}', to_jsonb(floor(extract(epoch from now() + interval '10 days'))::bigint))` }).where('model', '=', 'Grant').where('id', '=', grantId).execute();
    await db.updateTable('grant_contexts').set({ expires_at: soon }).where('grant_id', '=', grantId).execute();
    const second = await refresh(rt2);
    assert.equal(second.statusCode, 200, second.body);
    assert.equal(second.json<Body>().patient, 'demo-amy-shaw', 'the context is still there');
    const renewed = await grantRow();
    const rt3End = (await expiryOf('RefreshToken', second.json<Body>().refresh_token as string)).getTime();
    assert.ok(renewed.expires_at!.getTime() >= rt3End + DAY - 60_000, 'renewed for a period and the margin');
    assert.equal(Number(renewed.exp), Math.floor(renewed.expires_at!.getTime() / 1000), 'the payload’s exp with it, which oidc-provider reads');
    assert.ok(Math.abs((await contextRow()).expires_at.getTime() - renewed.expires_at!.getTime()) < 1000, 'and the context with its grant');
    const third = await refresh(second.json<Body>().refresh_token as string);
    assert.equal(third.statusCode, 200, third.body);
    assert.deepEqual(await grantRow(), renewed, 'the next refresh leaves it again');
  });

  it('refresh with scope: the same set or a subset; more is invalid_scope naming what is missing', async () => {
    const scope = 'launch/patient patient/Observation.rs patient/Patient.rs offline_access';
    const { body } = await launch(scope);
    const same = await refresh(body.refresh_token as string, { scope });
    assert.equal(same.statusCode, 200, same.body);
    assert.equal(same.json<Body>().scope, scope);
    const narrower = await refresh(same.json<Body>().refresh_token as string, { scope: 'patient/Patient.rs' });
    assert.equal(narrower.statusCode, 200, narrower.body);
    assert.equal(narrower.json<Body>().scope, 'patient/Patient.rs');
    const wider = await refresh(narrower.json<Body>().refresh_token as string, { scope: 'patient/Patient.rs patient/Condition.rs' });
    assert.equal(wider.statusCode, 400);
    assert.deepEqual(wider.json(), { error: 'invalid_scope', error_description: 'refresh token missing requested scope', scope: 'patient/Condition.rs' });
  });

  it("a registration narrowed after consent narrows the next refresh: the grant's scopes it no longer allows are not issued", async () => {
    await createClient(app, { client_id: 'narrowed-app', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'], scope: 'launch/patient patient/Condition.cruds patient/Patient.rs offline_access' });
    const flow = await startAuthorization(app, { client_id: 'narrowed-app', scope: 'launch/patient patient/Condition.cruds patient/Patient.rs offline_access' });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    const first = (await exchange(app, flow)).json<Body>();
    assert.equal(first.scope, 'launch/patient patient/Condition.cruds patient/Patient.rs offline_access');
    const narrowed = await app.inject({ method: 'PATCH', url: '/admin/api/clients/narrowed-app', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` }, payload: { scope: 'launch/patient patient/Patient.rs patient/Observation.rs offline_access' } });
    assert.equal(narrowed.statusCode, 200, narrowed.body);
    const res = await tokenRequest(app, { grant_type: 'refresh_token', refresh_token: first.refresh_token as string, client_id: 'narrowed-app' });
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json<Body>();
    assert.equal(body.scope, 'launch/patient patient/Patient.rs offline_access', 'patient/Condition.cruds is no longer allowed: not issued');
    assert.equal((await introspect(body.access_token as string)).json<Body>().scope, 'launch/patient patient/Patient.rs offline_access');
  });

  it('unknown refresh tokens and tokens of another client are refused', async () => {
    const unknown = await refresh(randomBytes(32).toString('base64url'));
    assert.ok([400, 401].includes(unknown.statusCode));
    assert.equal(unknown.json<Body>().error, 'invalid_grant');
  });

  it('capability: permission-online — online_access refresh tokens stop working when the user signs out', async () => {
    const { flow, body } = await launch('launch/patient patient/Patient.rs online_access');
    const first = await refresh(body.refresh_token as string);
    assert.equal(first.statusCode, 200, first.body);

    const logoutPage = await flow.browser.go('GET', '/logout');
    assert.equal(logoutPage.res.statusCode, 200);
    const signedOut = await flow.browser.go('POST', '/logout/confirm', { xsrf: inputValue(logoutPage.res.body, 'xsrf'), logout: 'yes' });
    assert.match(signedOut.res.body, /You are signed out/);

    const after = await refresh(first.json<Body>().refresh_token as string);
    assert.equal(after.statusCode, 400);
    assert.deepEqual(after.json(), { error: 'invalid_grant', error_description: 'grant request is invalid: the user has signed out: an online_access refresh token works only while the user is signed in' });
  });

  it('introspection of a launch token reports exactly what the token response said, with fhirUser and sub', async () => {
    const { body } = await launch('openid fhirUser launch/patient patient/Patient.rs offline_access', 'clinician', 'clinician-demo');
    const info = (await introspect(body.access_token as string)).json<Body>();
    assert.equal(info.active, true);
    assert.equal(info.scope, body.scope);
    assert.equal(info.client_id, 'app');
    assert.equal(info.sub, 'demo-clinician');
    assert.equal(info.iss, TEST_ISSUER);
    assert.equal(info.aud, TEST_FHIR_BASE);
    assert.equal(info.fhirUser, `${TEST_FHIR_BASE}/Practitioner/demo-practitioner`);
    for (const key of ['patient', 'need_patient_banner', 'smart_style_url']) assert.deepEqual(info[key], body[key], key);
    assert.equal(typeof info.exp, 'number');
    assert.equal(typeof info.iat, 'number');
  });

  it('revoking the refresh token revokes the access tokens of its grant', async () => {
    const { body } = await launch('launch/patient patient/Patient.rs offline_access');
    const revoked = await app.inject({ method: 'POST', url: '/revoke', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ token: body.refresh_token as string, client_id: 'app' }) });
    assert.equal(revoked.statusCode, 200);
    assert.deepEqual((await introspect(body.access_token as string)).json(), { active: false });
    assert.equal((await refresh(body.refresh_token as string)).statusCode, 400);
  });
});
