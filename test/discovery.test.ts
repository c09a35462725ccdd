import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { CAPABILITIES } from '../src/smart/capabilities.js';
import { PACKAGE_ROOT } from '../src/paths.js';
import { testApp } from './helpers/app.js';
import { describeEachDatabase } from './helpers/databases.js';

const ISSUER = 'http://localhost:3000';

describeEachDatabase('discovery documents and JWKS', (ctx) => {
  let app: FastifyInstance;
  before(async () => {
    app = await testApp(ctx.current.database, { FHIR_BASE_URLS: `${ISSUER}/fhir,https://fhir.example.org/r4/` });
  });
  after(() => app.close());

  const get = (url: string, headers: Record<string, string> = {}) => app.inject({ method: 'GET', url, headers });

  it('OpenID configuration at the issuer lists what SMART and OIDC require', async () => {
    const res = await get('/.well-known/openid-configuration');
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /^application\/json/);
    assert.equal(res.headers['access-control-allow-origin'], '*');
    assert.equal(res.headers['cache-control'], 'public, max-age=300');
    const doc = res.json<Record<string, unknown>>();
    assert.equal(doc.issuer, ISSUER);
    assert.equal(doc.authorization_endpoint, `${ISSUER}/auth`);
    assert.equal(doc.token_endpoint, `${ISSUER}/token`);
    assert.equal(doc.jwks_uri, `${ISSUER}/jwks`);
    assert.deepEqual(doc.response_types_supported, ['code']);
    assert.deepEqual(doc.subject_types_supported, ['public']);
    assert.deepEqual(doc.code_challenge_methods_supported, ['S256']);
    assert.ok((doc.id_token_signing_alg_values_supported as string[]).includes('RS256'));
    // Only what answers is advertised: no pushed authorization requests, no userinfo (every access token is
    // bound to a FHIR base, which a userinfo endpoint would refuse).
    assert.equal(doc.pushed_authorization_request_endpoint, undefined);
    assert.equal(doc.userinfo_endpoint, undefined);
    for (const [key, value] of Object.entries(doc)) {
      if (!key.endsWith('_endpoint') || typeof value !== 'string') continue;
      const path = new URL(value).pathname;
      const res = await app.inject({ method: 'GET', url: path });
      assert.notEqual(res.statusCode, 404, `${key} ${path} answers`);
    }
  });

  it('HEAD wherever GET is served (RFC 9110 §9.3.2): the GET\'s status and headers, no body; Allow names it', async () => {
    for (const url of ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server', '/jwks', '/.well-known/smart-configuration', '/fhir/.well-known/smart-configuration']) {
      const got = await get(url);
      const head = await app.inject({ method: 'HEAD', url });
      assert.equal(head.statusCode, 200, url);
      assert.equal(head.body, '');
      for (const name of ['content-type', 'content-length', 'cache-control', 'access-control-allow-origin']) assert.equal(head.headers[name], got.headers[name], `${url}: ${name}`);
    }
    const wrong = await app.inject({ method: 'DELETE', url: '/jwks' });
    assert.equal(wrong.statusCode, 405);
    assert.equal(wrong.headers.allow, 'GET, HEAD, OPTIONS');
    assert.equal((await app.inject({ method: 'DELETE', url: '/.well-known/smart-configuration' })).headers.allow, 'GET, HEAD, OPTIONS');
    // Not where a GET starts something (an authorization, a sign-out): HEAD must be safe, and prefetchers send it.
    const count = async () => Number((await ctx.current.database.db.selectFrom('oidc_payloads').select((eb) => eb.fn.countAll().as('n')).where('model', '=', 'Interaction').executeTakeFirstOrThrow()).n);
    const before = await count();
    for (const url of ['/auth?client_id=x&response_type=code', '/logout']) {
      const head = await app.inject({ method: 'HEAD', url });
      assert.equal(head.statusCode, 405, url);
      assert.equal(head.headers.allow, 'GET, POST', url);
    }
    assert.equal(await count(), before, 'no interaction made');
  });

  it('the OAuth 2.0 metadata document (RFC 8414) is served too', async () => {
    const res = await get('/.well-known/oauth-authorization-server');
    assert.equal(res.statusCode, 200);
    assert.equal(res.json<{ issuer: string }>().issuer, ISSUER);
  });

  for (const path of ['/.well-known/smart-configuration', '/fhir/.well-known/smart-configuration', '/r4/.well-known/smart-configuration']) {
    it(`SMART configuration at ${path}: JSON whatever the Accept header, CORS open, absolute URLs`, async () => {
      for (const accept of ['application/json', 'text/html', '*/*']) {
        const res = await get(path, { accept, origin: 'https://app.example' });
        assert.equal(res.statusCode, 200, accept);
        assert.equal(res.headers['content-type'], 'application/json; charset=utf-8');
        assert.equal(res.headers['access-control-allow-origin'], '*');
        const doc = res.json<Record<string, unknown>>();
        assert.equal(doc.issuer, ISSUER);
        for (const key of ['issuer', 'jwks_uri', 'authorization_endpoint', 'token_endpoint']) {
          assert.ok(URL.canParse(doc[key] as string), `${key} is an absolute URL`);
        }
      }
    });
  }

  it('SMART configuration answers a CORS preflight', async () => {
    const res = await app.inject({ method: 'OPTIONS', url: '/fhir/.well-known/smart-configuration', headers: { origin: 'https://app.example', 'access-control-request-method': 'GET' } });
    assert.equal(res.statusCode, 204);
    assert.equal(res.headers['access-control-allow-origin'], '*');
  });

  it('SMART and OpenID documents agree on every field they share', async () => {
    const smart = (await get('/fhir/.well-known/smart-configuration')).json<Record<string, unknown>>();
    const oidc = (await get('/.well-known/openid-configuration')).json<Record<string, unknown>>();
    for (const key of ['issuer', 'jwks_uri', 'authorization_endpoint', 'token_endpoint', 'grant_types_supported', 'response_types_supported', 'code_challenge_methods_supported', 'token_endpoint_auth_methods_supported', 'token_endpoint_auth_signing_alg_values_supported', 'introspection_endpoint', 'revocation_endpoint']) {
      assert.deepEqual(smart[key], oidc[key], key);
    }
    assert.equal(smart.registration_endpoint, oidc.registration_endpoint, 'registration_endpoint, where registration is open');
    assert.equal(smart.registration_endpoint, `${ISSUER}/reg`);
    for (const scope of oidc.scopes_supported as string[]) assert.ok((smart.scopes_supported as string[]).includes(scope), scope);
    assert.deepEqual(smart.code_challenge_methods_supported, ['S256']);
  });

  it('advertises exactly the registered capabilities, each proven by a test whose title starts "capability: " and names it', async () => {
    const smart = (await get('/.well-known/smart-configuration')).json<{ capabilities: string[] }>();
    assert.deepEqual(smart.capabilities, CAPABILITIES.map((c) => c.name));
    for (const { name, provenBy } of CAPABILITIES) {
      const file = join(PACKAGE_ROOT, provenBy);
      assert.ok(existsSync(file), `${name}: ${provenBy} exists`);
      const proven = [...readFileSync(file, 'utf8').matchAll(/\bit\(\s*['"`]capability: ([^'"`]*?)(?: — [^'"`]*)?['"`]/g)].flatMap((m) => m[1]!.split(', '));
      assert.ok(proven.includes(name), `${name}: ${provenBy} has a test titled "capability: …${name}…"`);
    }
  });

  it('JWKS publishes public keys only, each with kid, alg and use, with an RS256 key', async () => {
    const res = await get('/jwks');
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-type'], 'application/jwk-set+json; charset=utf-8');
    assert.equal(res.headers['access-control-allow-origin'], '*');
    assert.equal(res.headers['cache-control'], 'public, max-age=300');
    const { keys } = res.json<{ keys: Record<string, unknown>[] }>();
    assert.equal(keys.length, 8, 'active and next key for RS256, RS384, ES256, ES384');
    for (const key of keys) {
      for (const priv of ['d', 'p', 'q', 'dp', 'dq', 'qi']) assert.ok(!(priv in key), `no ${priv} in ${String(key.kid)}`);
      assert.equal(typeof key.kid, 'string');
      assert.equal(key.use, 'sig');
    }
    assert.ok(keys.some((k) => k.alg === 'RS256' && k.kty === 'RSA'));
    assert.equal(new Set(keys.map((k) => k.kid)).size, keys.length, 'kids are unique');
  });

  it('endpoints follow the configured issuer, never the Host or X-Forwarded-Host of the request', async () => {
    const res = await get('/.well-known/openid-configuration', { host: 'evil.example', 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https' });
    const doc = res.json<Record<string, string>>();
    assert.equal(doc.token_endpoint, `${ISSUER}/token`);
    assert.equal(doc.jwks_uri, `${ISSUER}/jwks`);
  });
});

describeEachDatabase('discovery under an issuer with a path', (ctx) => {
  let app: FastifyInstance;
  before(async () => {
    app = await testApp(ctx.current.database, { ISSUER: 'https://auth.example.org/smart', FHIR_BASE_URLS: 'https://auth.example.org/fhir' });
  });
  after(() => app.close());

  it('mounts every endpoint under the issuer path', async () => {
    const oidc = await app.inject({ method: 'GET', url: '/smart/.well-known/openid-configuration' });
    assert.equal(oidc.statusCode, 200);
    const doc = oidc.json<Record<string, string>>();
    assert.equal(doc.issuer, 'https://auth.example.org/smart');
    assert.equal(doc.token_endpoint, 'https://auth.example.org/smart/token');
    assert.equal((await app.inject({ method: 'GET', url: '/smart/jwks' })).statusCode, 200);
    assert.equal((await app.inject({ method: 'GET', url: '/smart/healthz' })).statusCode, 200);
    assert.equal((await app.inject({ method: 'GET', url: '/jwks' })).statusCode, 404);
  });

  it('serves SMART configuration at the issuer and at the FHIR base path, with https URLs', async () => {
    for (const url of ['/smart/.well-known/smart-configuration', '/fhir/.well-known/smart-configuration']) {
      const res = await app.inject({ method: 'GET', url });
      assert.equal(res.statusCode, 200, url);
      assert.equal(res.json<Record<string, string>>().authorization_endpoint, 'https://auth.example.org/smart/auth');
    }
  });

  it('sends HSTS for an https issuer', async () => {
    const res = await app.inject({ method: 'GET', url: '/smart/healthz' });
    assert.equal(res.headers['strict-transport-security'], 'max-age=63072000; includeSubDomains');
  });
});
