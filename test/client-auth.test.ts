import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { decodeJwt, decodeProtectedHeader } from 'jose';

import { clientAssertion, clientKey, JWT_BEARER, JwksServer, type ClientKey } from './helpers/assertions.js';
import { testApp, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { basicAuth, form, registerClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { expectOAuthError } from './helpers/oauth-error.js';

const TOKEN_URL = `${TEST_ISSUER}/token`;
const SCOPE = 'system/Patient.rs system/Observation.rs';
const ENV = { OUTBOUND_ALLOW_PRIVATE: 'true' };

type Body = Record<string, unknown>;

describeEachDatabase('client authentication at the token endpoint', (ctx) => {
  let app: FastifyInstance;
  let es384: ClientKey;
  let rs384: ClientKey;
  let rs256: ClientKey;
  let jwksServer: JwksServer;
  const symmetric = { id: 'symmetric-backend', secret: randomBytes(32).toString('base64url') };

  before(async () => {
    app = await testApp(ctx.current.database, ENV);
    [es384, rs384, rs256] = await Promise.all([clientKey('ES384'), clientKey('RS384'), clientKey('RS256')]);
    const backend = { grant_types: ['client_credentials'], response_types: [], scope: `${SCOPE} system/Encounter.rs` };
    await registerClient(app, { ...backend, client_id: 'asymmetric', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [es384.jwk, rs384.jwk, rs256.jwk] } });
    await registerClient(app, { ...backend, client_id: 'asymmetric-rs256', token_endpoint_auth_method: 'private_key_jwt', token_endpoint_auth_signing_alg: 'RS256', jwks: { keys: [rs256.jwk] } });
    await registerClient(app, { ...backend, client_id: 'twin-kids', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [es384.jwk, { ...(await clientKey('ES384')).jwk, kid: es384.kid }] } });
    await registerClient(app, { ...backend, client_id: symmetric.id, client_secret: symmetric.secret, token_endpoint_auth_method: 'client_secret_basic' });
    await registerClient(app, { ...backend, client_id: 'symmetric-post', client_secret: symmetric.secret, token_endpoint_auth_method: 'client_secret_post' });
    jwksServer = await JwksServer.start();
    await registerClient(app, { ...backend, client_id: 'by-url', token_endpoint_auth_method: 'private_key_jwt', jwks_uri: jwksServer.url });
  });
  after(async () => {
    await app.close();
    await jwksServer.close();
  });

  const token = (payload: Record<string, string>, headers: Record<string, string> = {}, target = app) =>
    target.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, payload: form(payload) });
  const withAssertion = async (assertion: string, extra: Record<string, string> = {}, target = app) =>
    token({ grant_type: 'client_credentials', scope: SCOPE, client_assertion_type: JWT_BEARER, client_assertion: assertion, ...extra }, {}, target);
  const assertion = (key: ClientKey, options: Partial<Parameters<typeof clientAssertion>[1]> = {}) => clientAssertion(key, { clientId: 'asymmetric', audience: TOKEN_URL, ...options });

  const refused = async (res: Awaited<ReturnType<typeof token>>, description: string | RegExp) => {
    expectOAuthError(res, 401, 'invalid_client', description);
    assert.equal(res.json<Body>().access_token, undefined);
  };

  it('capability: client-confidential-asymmetric — ES384 and RS384 assertions get a five-minute system token', async () => {
    for (const key of [es384, rs384]) {
      const res = await withAssertion(await assertion(key));
      assert.equal(res.statusCode, 200, res.body);
      assert.equal(res.headers['cache-control'], 'no-store');
      assert.equal(res.headers.pragma, 'no-cache');
      const body = res.json<Body>();
      assert.deepEqual(Object.keys(body).sort(), ['access_token', 'expires_in', 'scope', 'token_type']);
      assert.equal(body.expires_in, 300);
      assert.equal(body.scope, SCOPE);
      assert.equal(body.token_type, 'Bearer');
    }
  });

  it('RS256 and ES256 only from a client registered for them', async () => {
    await refused(await withAssertion(await assertion(rs256)), 'client authentication failed: client assertion rejected: alg RS256 is accepted only from clients registered with token_endpoint_auth_signing_alg RS256; sign with RS384 or ES384');
    const ok = await withAssertion(await clientAssertion(rs256, { clientId: 'asymmetric-rs256', audience: TOKEN_URL }));
    assert.equal(ok.statusCode, 200, ok.body);
  });

  it('refuses each assertion defect with invalid_client, saying what is wrong', async () => {
    await refused(await withAssertion(await assertion(es384, { omitKid: true })), 'client authentication failed: client assertion rejected: the kid header is required');
    await refused(await withAssertion(await assertion(es384, { header: { kid: 'nobody' } })), /^client authentication failed: .*no applicable key found/i);
    await refused(await withAssertion(await assertion(es384, { header: { typ: 'at+jwt' } })), 'client authentication failed: client assertion rejected: the typ header must be JWT, not "at+jwt"');
    await refused(await withAssertion(await assertion(es384, { expiresIn: -120 })), 'client authentication failed: jwt expired');
    // 600 s when signed; a second less if the clock ticks before the server reads it.
    await refused(await withAssertion(await assertion(es384, { expiresIn: 600 })), /^client authentication failed: client assertion rejected: exp is (600|599) s in the future; at most 300 s \(5 minutes\) is allowed$/);
    // RFC 7523 §3: sub names the client, so a foreign sub is an unknown client; with client_id given, a mismatch.
    await refused(await withAssertion(await assertion(es384, { claims: { sub: 'someone-else' } })), 'client authentication failed: client not found');
    const mismatch = await withAssertion(await assertion(es384, { claims: { sub: 'someone-else' } }), { client_id: 'asymmetric' });
    assert.equal(mismatch.statusCode, 400);
    assert.deepEqual(mismatch.json(), { error: 'invalid_request', error_description: 'client_id mismatch' });
    await refused(await withAssertion(await assertion(es384, { audience: 'https://elsewhere.example/token' })), 'client authentication failed: audience (aud) must equal the endpoint url, issuer identifier or token endpoint url');
    // RFC 7523bis: the issuer as audience, what current OAuth libraries send, is accepted as well.
    assert.equal((await withAssertion(await assertion(es384, { audience: TEST_ISSUER }))).statusCode, 200);
    await refused(await withAssertion(await assertion(es384, { header: { jku: 'https://attacker.example/jwks' } })), 'client authentication failed: client assertion rejected: jku is not accepted: this client has no registered jwks_uri');
    const tampered = (await assertion(es384)).split('.');
    tampered[2] = Buffer.from(randomBytes(96)).toString('base64url');
    await refused(await withAssertion(tampered.join('.')), /^client authentication failed: .*signature verification failed/i);
    const garbage = await withAssertion('not-a-jwt');
    assert.equal(garbage.statusCode, 400);
    assert.deepEqual(garbage.json(), { error: 'invalid_request', error_description: 'invalid client_assertion format' });
    await refused(await withAssertion(await clientAssertion(es384, { clientId: 'twin-kids', audience: TOKEN_URL })), 'client authentication failed: client assertion rejected: 2 keys of type EC have kid ' + es384.kid + " in the client's key set; exactly one must");
    assert.equal(await ctx.current.database.db.selectFrom('oidc_payloads').select('id').where('model', '=', 'ClientCredentials').execute().then((r) => r.length), 4, 'only the four successful requests above issued tokens');
  });

  it('a replayed assertion is refused, also by another server process on the same database', async () => {
    const once = await assertion(es384);
    assert.equal((await withAssertion(once)).statusCode, 200);
    await refused(await withAssertion(once), 'client authentication failed: client assertion rejected: its jti was already used; every assertion needs a new jti');

    const other = await testApp(ctx.current.database, ENV);
    try {
      const twice = await assertion(rs384);
      assert.equal((await withAssertion(twice, {}, other)).statusCode, 200);
      await refused(await withAssertion(twice), 'client authentication failed: client assertion rejected: its jti was already used; every assertion needs a new jti');
      const racing = await assertion(es384);
      const results = await Promise.all([withAssertion(racing), withAssertion(racing, {}, other)]);
      assert.deepEqual(results.map((r) => r.statusCode).sort(), [200, 401], 'two processes receiving the same assertion at once accept it once');
    } finally {
      await other.close();
    }
  });

  it('wrong client_assertion_type, unknown grant type', async () => {
    const res = await token({ grant_type: 'client_credentials', scope: SCOPE, client_assertion_type: 'urn:example:wrong', client_assertion: await assertion(es384) });
    assert.ok([400, 401].includes(res.statusCode), res.body);
    assert.match(res.json<Body>().error as string, /^invalid_(client|request)$/);
    const unknown = await token({ grant_type: 'not_a_grant_type', client_assertion_type: JWT_BEARER, client_assertion: await assertion(es384) });
    assert.equal(unknown.statusCode, 400);
    assert.equal(unknown.json<Body>().error, 'unsupported_grant_type');
    // RFC 6749 §5.2: a grant type this (authenticated) client is not registered for.
    const notAllowed = await token({ grant_type: 'authorization_code', code: 'x', code_verifier: 'y'.repeat(43) }, { authorization: basicAuth(symmetric.id, symmetric.secret) });
    assert.equal(notAllowed.statusCode, 400);
    assert.deepEqual(notAllowed.json(), { error: 'unauthorized_client', error_description: 'requested grant type is not allowed for this client' });
  });

  it('capability: client-confidential-symmetric — client_secret_basic and client_secret_post', async () => {
    const basic = await token({ grant_type: 'client_credentials', scope: SCOPE }, { authorization: basicAuth(symmetric.id, symmetric.secret) });
    assert.equal(basic.statusCode, 200, basic.body);
    assert.equal(basic.json<Body>().scope, SCOPE);
    const post = await token({ grant_type: 'client_credentials', scope: SCOPE, client_id: 'symmetric-post', client_secret: symmetric.secret });
    assert.equal(post.statusCode, 200, post.body);
    await refused(await token({ grant_type: 'client_credentials', scope: SCOPE }, { authorization: basicAuth(symmetric.id, 'wrong') }), 'client authentication failed: invalid secret provided');
    const row = await ctx.current.database.db.selectFrom('clients').select(['metadata', 'client_secret']).where('client_id', '=', symmetric.id).executeTakeFirstOrThrow();
    assert.ok(!JSON.stringify(row).includes(symmetric.secret), 'the secret is not stored in clear');
  });

  it('keys by JWKS URL: cached as Cache-Control allows, refetched for a new kid, refused when the URL fails', async () => {
    const by = (key: ClientKey, extra: Partial<Parameters<typeof clientAssertion>[1]> = {}) => clientAssertion(key, { clientId: 'by-url', audience: TOKEN_URL, ...extra });
    jwksServer.keys = [es384.jwk];
    jwksServer.behaviour = { headers: { 'content-type': 'application/json', 'cache-control': 'max-age=600' } };
    jwksServer.requests = 0;
    const first = await withAssertion(await by(es384));
    assert.equal(first.statusCode, 200, first.body);
    assert.equal((await withAssertion(await by(es384))).statusCode, 200);
    assert.equal(jwksServer.requests, 1, 'max-age=600: fetched once');

    jwksServer.keys = [es384.jwk, rs384.jwk];
    assert.equal((await withAssertion(await by(rs384))).statusCode, 200, 'a kid the cache lacks makes it refetch');
    assert.equal(jwksServer.requests, 2);
    await refused(await withAssertion(await by(es384, { header: { kid: 'still-unknown' } })), /no applicable key/i);
    assert.equal(jwksServer.requests, 2, 'a second unknown kid within 10 s does not refetch');

    await refused(await withAssertion(await by(es384, { header: { jku: jwksServer.url.replace('jwks.json', 'other.json') } })), `client authentication failed: client assertion rejected: jku "${jwksServer.url.replace('jwks.json', 'other.json')}" is not the registered jwks_uri ${jwksServer.url}`);
    assert.equal((await withAssertion(await by(es384, { header: { jku: jwksServer.url } }))).statusCode, 200, 'jku equal to the registered URL is fine');
  });

  it('keys by JWKS URL: no-store means fetched for every use; a failing, slow or huge answer is refused with the reason', async () => {
    const other = await testApp(ctx.current.database, ENV);
    const by = (key: ClientKey) => clientAssertion(key, { clientId: 'by-url', audience: TOKEN_URL });
    try {
      jwksServer.keys = [es384.jwk];
      jwksServer.behaviour = { headers: { 'content-type': 'application/json', 'cache-control': 'no-store' } };
      jwksServer.requests = 0;
      assert.equal((await withAssertion(await by(es384), {}, other)).statusCode, 200);
      assert.equal((await withAssertion(await by(es384), {}, other)).statusCode, 200);
      assert.equal(jwksServer.requests, 2);

      jwksServer.behaviour = { status: 503, body: 'down' };
      await refused(await withAssertion(await by(es384), {}, other), `client authentication failed: the client's JWKS could not be used: ${jwksServer.url} answered 503, expected 200 with a JWK Set`);
      jwksServer.behaviour = { delayMs: 6000 };
      await refused(await withAssertion(await by(es384), {}, other), `client authentication failed: the client's JWKS could not be used: ${jwksServer.url} did not answer within 5000 ms`);
      jwksServer.behaviour = { body: JSON.stringify({ keys: [es384.jwk], padding: 'x'.repeat(300 * 1024) }) };
      await refused(await withAssertion(await by(es384), {}, other), `client authentication failed: the client's JWKS could not be used: ${jwksServer.url} answered with more than the 262144 bytes allowed`);
      jwksServer.behaviour = { body: '<html>' };
      await refused(await withAssertion(await by(es384), {}, other), `client authentication failed: the client's JWKS could not be used: ${jwksServer.url} did not answer with JSON`);
    } finally {
      jwksServer.behaviour = {};
      await other.close();
    }
  });

  it('refuses a JWKS URL on a loopback or private address unless OUTBOUND_ALLOW_PRIVATE', async () => {
    const strict = await testApp(ctx.current.database, { OUTBOUND_ALLOW_PRIVATE: 'false' });
    try {
      await registerClient(strict, { client_id: 'internal-jwks', grant_types: ['client_credentials'], response_types: [], scope: SCOPE, token_endpoint_auth_method: 'private_key_jwt', jwks_uri: jwksServer.url.replace('http://127.0.0.1', 'https://localhost') });
      const res = await withAssertion(await clientAssertion(es384, { clientId: 'internal-jwks', audience: TOKEN_URL }), {}, strict);
      await refused(res, /^client authentication failed: the client's JWKS could not be used: localhost resolves to (127\.0\.0\.1|::1), a loopback or private address$/);
      await registerClient(strict, { client_id: 'plain-http-jwks', grant_types: ['client_credentials'], response_types: [], scope: SCOPE, token_endpoint_auth_method: 'private_key_jwt', jwks_uri: 'http://jwks.example.org/keys' });
      await refused(await withAssertion(await clientAssertion(es384, { clientId: 'plain-http-jwks', audience: TOKEN_URL }), {}, strict), "client authentication failed: the client's JWKS could not be used: http://jwks.example.org/keys must use https");
    } finally {
      await strict.close();
    }
  });

  it('issues RFC 9068 JWT access tokens to FHIR servers configured for them', async () => {
    const jwtApp = await testApp(ctx.current.database, { ...ENV, JWT_ACCESS_TOKEN_AUDIENCES: TEST_FHIR_BASE });
    try {
      const res = await withAssertion(await assertion(es384), {}, jwtApp);
      assert.equal(res.statusCode, 200, res.body);
      const accessToken = res.json<Body>().access_token as string;
      assert.equal(decodeProtectedHeader(accessToken).typ, 'at+jwt');
      const claims = decodeJwt(accessToken);
      assert.equal(claims.iss, TEST_ISSUER);
      assert.equal(claims.aud, TEST_FHIR_BASE);
      assert.equal(claims.client_id, 'asymmetric');
      assert.equal(claims.scope, SCOPE);
      assert.equal(claims.exp! - claims.iat!, 300);
      const jwks = (await jwtApp.inject({ method: 'GET', url: '/jwks' })).json<{ keys: { kid: string }[] }>();
      assert.ok(jwks.keys.some((k) => k.kid === decodeProtectedHeader(accessToken).kid), 'signed with a published key');
    } finally {
      await jwtApp.close();
    }
  });
});
