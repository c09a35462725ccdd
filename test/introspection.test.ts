import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';

import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { basicAuth, form, registerClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization } from './helpers/flow.js';

type Body = Record<string, unknown>;
const SCOPE = 'system/Patient.rs system/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory';

describeEachDatabase('introspection and revocation', (ctx) => {
  let app: FastifyInstance;
  const secret = randomBytes(32).toString('base64url');
  const backend = { client_id: 'backend', grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'client_secret_basic', client_secret: secret, scope: 'system/Patient.rs system/Observation.rs' };

  before(async () => {
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN });
    await registerClient(app, backend);
    await registerClient(app, { ...backend, client_id: 'other-backend' });
    // A FHIR server: a resource server registered for introspect, by secret and as a backend client.
    await registerClient(app, { ...backend, client_id: 'fhir-server', scope: 'introspect' });
  });
  after(() => app.close());

  const post = (url: string, payload: Record<string, string>, authorization?: string) =>
    app.inject({ method: 'POST', url, headers: { 'content-type': 'application/x-www-form-urlencoded', ...(authorization ? { authorization } : {}) }, payload: form(payload) });
  const issue = async (clientId = 'backend', scope = SCOPE): Promise<Body> => {
    const res = await post('/token', { grant_type: 'client_credentials', scope }, basicAuth(clientId, secret));
    assert.equal(res.statusCode, 200, res.body);
    return res.json<Body>();
  };
  const introspect = (token: string, authorization = basicAuth('fhir-server', secret)) => post('/introspect', { token }, authorization);

  it('an active token: active, the exact scope of the token response, client_id, exp, iat, iss, aud', async () => {
    const tokenResponse = await issue();
    const res = await introspect(tokenResponse.access_token as string);
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['cache-control'], 'no-store');
    const body = res.json<Body>();
    assert.equal(body.active, true);
    assert.equal(body.scope, tokenResponse.scope);
    assert.equal(body.client_id, 'backend');
    assert.equal(body.iss, TEST_ISSUER);
    assert.equal(body.aud, TEST_FHIR_BASE);
    assert.equal(body.token_type, 'Bearer');
    assert.equal((body.exp as number) - (body.iat as number), 300);
  });

  it('unknown, expired and revoked tokens are exactly {"active": false}', async () => {
    assert.deepEqual((await introspect('no-such-token')).json(), { active: false });

    const expired = (await issue()).access_token as string;
    await ctx.current.database.db.updateTable('oidc_payloads').set({ expires_at: sql<Date>`now() - interval '1 second'` }).where('model', '=', 'ClientCredentials').where('id', '=', app.runtime.box.bearerId(expired)).execute();
    assert.deepEqual((await introspect(expired)).json(), { active: false });

    // RFC 7662 §2.2: whatever is not an access token of ours is inactive, an id_token as much as garbage.
    const idToken = `${Buffer.from(JSON.stringify({ alg: 'RS256', kid: 'k' })).toString('base64url')}.${Buffer.from(JSON.stringify({ iss: TEST_ISSUER, sub: 'u', aud: 'backend' })).toString('base64url')}.c2ln`;
    const inactive = await introspect(idToken);
    assert.deepEqual([inactive.statusCode, inactive.json()], [200, { active: false }]);

    const revoked = (await issue()).access_token as string;
    const revocation = await post('/revoke', { token: revoked }, basicAuth('backend', secret));
    assert.equal(revocation.statusCode, 200);
    assert.equal(revocation.body, '');
    assert.deepEqual((await introspect(revoked)).json(), { active: false });
  });

  it('a client that is not a resource server learns only about its own tokens', async () => {
    const foreign = (await issue('other-backend')).access_token as string;
    assert.deepEqual((await introspect(foreign, basicAuth('backend', secret))).json(), { active: false });
    assert.equal((await introspect(foreign, basicAuth('other-backend', secret))).json<Body>().active, true);
  });

  it('callers must authenticate: as a client, or with a Bearer token carrying introspect', async () => {
    const target = (await issue()).access_token as string;
    const anonymous = await introspect(target, '');
    assert.equal(anonymous.statusCode, 400);
    assert.equal(anonymous.json<Body>().error, 'invalid_request');
    const wrongSecret = await introspect(target, basicAuth('fhir-server', 'wrong'));
    assert.equal(wrongSecret.statusCode, 401);
    assert.deepEqual(wrongSecret.json(), { error: 'invalid_client', error_description: 'client authentication failed: invalid secret provided' });

    const rsToken = (await issue('fhir-server', 'introspect')).access_token as string;
    const viaBearer = await introspect(target, `Bearer ${rsToken}`);
    assert.equal(viaBearer.statusCode, 200);
    const body = viaBearer.json<Body>();
    assert.equal(body.active, true);
    assert.equal(body.client_id, 'backend');
    assert.equal(body.scope, SCOPE);

    const noScope = await introspect(target, `Bearer ${target}`);
    assert.equal(noScope.statusCode, 401);
    assert.deepEqual(noScope.json(), { error: 'invalid_token', error_description: 'the access token does not carry the introspect scope' });
    assert.equal(noScope.headers['www-authenticate'], 'Bearer error="invalid_token", error_description="the access token does not carry the introspect scope"');
    const bogus = await introspect(target, 'Bearer not-a-token');
    assert.equal(bogus.statusCode, 401);
    assert.deepEqual(bogus.json(), { error: 'invalid_token', error_description: 'the access token is unknown, expired or revoked' });
  });

  it('revocation: a client revokes its own tokens only; unknown tokens answer 200', async () => {
    const mine = (await issue()).access_token as string;
    const refusedRes = await post('/revoke', { token: mine }, basicAuth('other-backend', secret));
    assert.equal(refusedRes.statusCode, 400);
    assert.deepEqual(refusedRes.json(), { error: 'invalid_request', error_description: 'this client may not revoke a token issued to another client' });
    assert.equal((await introspect(mine)).json<Body>().active, true);
    assert.equal((await post('/revoke', { token: 'never-issued' }, basicAuth('backend', secret))).statusCode, 200);
  });

  it("a suspended client's tokens are inactive, and one of them no longer introspects or administers", async () => {
    await registerClient(app, { client_id: 'user-app', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'], scope: 'openid fhirUser launch/patient patient/*.rs offline_access' });
    await registerClient(app, { ...backend, client_id: 'rs-to-suspend', scope: 'introspect admin' });
    const flow = await startAuthorization(app, { client_id: 'user-app', scope: 'openid launch/patient patient/*.rs offline_access' });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    const user = (await exchange(app, flow)).json<Body>();
    const backendToken = (await issue('other-backend')).access_token as string;
    const rsToken = (await issue('rs-to-suspend', 'introspect admin')).access_token as string;
    const target = (await issue()).access_token as string;
    assert.equal((await introspect(user.access_token as string)).json<Body>().active, true);
    assert.equal((await introspect(target, `Bearer ${rsToken}`)).json<Body>().active, true);
    const admin = () => app.inject({ method: 'GET', url: '/admin/api/clients', headers: { authorization: `Bearer ${rsToken}` } });
    assert.equal((await admin()).statusCode, 200);

    const suspend = (clientId: string) => app.inject({ method: 'PATCH', url: `/admin/api/clients/${clientId}`, headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` }, payload: { status: 'suspended' } });
    for (const clientId of ['user-app', 'other-backend', 'rs-to-suspend']) assert.equal((await suspend(clientId)).statusCode, 200);
    // RFC 7662 §2.2: inactive, a user's access and refresh tokens (whose answer would name the user) as much as a backend's.
    for (const token of [user.access_token, user.refresh_token, backendToken] as string[]) {
      const res = await introspect(token);
      assert.deepEqual([res.statusCode, res.json()], [200, { active: false }]);
    }
    const viaSuspended = await introspect(target, `Bearer ${rsToken}`);
    assert.equal(viaSuspended.statusCode, 401);
    assert.deepEqual(viaSuspended.json(), { error: 'invalid_token', error_description: 'the access token was issued to a client that is suspended or removed' });
    const refused = await admin();
    assert.equal(refused.statusCode, 401);
    assert.equal(refused.json<Body>().error, 'invalid_token');
    assert.equal((await introspect(target)).json<Body>().active, true, 'an active client\'s token still is');
  });

  it('discovery advertises both endpoints and the introspect scope', async () => {
    const smart = (await app.inject({ method: 'GET', url: '/.well-known/smart-configuration' })).json<Body>();
    assert.equal(smart.introspection_endpoint, `${TEST_ISSUER}/introspect`);
    assert.equal(smart.revocation_endpoint, `${TEST_ISSUER}/revoke`);
    assert.ok((smart.scopes_supported as string[]).includes('introspect'));
    assert.ok((smart.grant_types_supported as string[]).includes('client_credentials'));
  });
});
