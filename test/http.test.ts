import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { testApp } from './helpers/app.js';
import { createTestDatabase, databaseKinds, describeEachDatabase } from './helpers/databases.js';

describeEachDatabase('HTTP basics', (ctx) => {
  let app: FastifyInstance;
  before(async () => {
    app = await testApp(ctx.current.database);
  });
  after(() => app.close());

  it('/healthz and /readyz answer when the database is there and migrated', async () => {
    const health = await app.inject({ method: 'GET', url: '/healthz' });
    assert.equal(health.statusCode, 200);
    assert.deepEqual(health.json(), { status: 'ok' });
    const ready = await app.inject({ method: 'GET', url: '/readyz' });
    assert.equal(ready.statusCode, 200);
    assert.deepEqual(ready.json(), { status: 'ready', database: ctx.current.kind });
    assert.equal(ready.headers['cache-control'], 'no-store');
  });

  for (const url of ['/healthz', '/jwks', '/.well-known/openid-configuration', '/nope']) {
    it(`security headers on ${url}`, async () => {
      const res = await app.inject({ method: 'GET', url });
      assert.equal(res.headers['content-security-policy'], "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; font-src 'self'; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'");
      assert.equal(res.headers['x-content-type-options'], 'nosniff');
      assert.equal(res.headers['x-frame-options'], 'DENY');
      assert.equal(res.headers['referrer-policy'], 'no-referrer');
      assert.equal(res.headers['strict-transport-security'], undefined, 'no HSTS on a plain-http loopback issuer');
    });
  }

  it('echoes a well-formed X-Request-Id, replaces a malformed one', async () => {
    const given = await app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'lb-1234.abc' } });
    assert.equal(given.headers['x-request-id'], 'lb-1234.abc');
    const bad = await app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'a b<script>' } });
    assert.match(String(bad.headers['x-request-id']), /^[0-9a-f-]{36}$/);
    const none = await app.inject({ method: 'GET', url: '/jwks' });
    assert.match(String(none.headers['x-request-id']), /^[0-9a-f-]{36}$/);
  });

  it('unknown paths: 404 in the OAuth error shape, or a page for a browser', async () => {
    const json = await app.inject({ method: 'GET', url: '/nope?x=1' });
    assert.equal(json.statusCode, 404);
    assert.deepEqual(json.json(), { error: 'not_found', error_description: 'nothing at GET /nope' });
    const long = await app.inject({ method: 'GET', url: `/${'a'.repeat(5000)}` });
    assert.equal(long.statusCode, 404);
    assert.deepEqual(long.json(), { error: 'not_found', error_description: `nothing at GET /${'a'.repeat(199)}…` }, 'a long path is not echoed whole');

    const html = await app.inject({ method: 'GET', url: '/nope', headers: { accept: 'text/html,application/xhtml+xml' } });
    assert.equal(html.statusCode, 404);
    assert.match(String(html.headers['content-type']), /^text\/html/);
    assert.match(html.body, /<h1 id="error-title">Page not found<\/h1>/);
    assert.match(html.body, /<link rel="stylesheet" href="\/static\/app.css">/);
  });

  it('a known path with the wrong method: 405 with Allow', async () => {
    const res = await app.inject({ method: 'GET', url: '/token' });
    assert.equal(res.statusCode, 405);
    assert.equal(res.headers.allow, 'POST, OPTIONS');
    assert.deepEqual(res.json(), { error: 'invalid_request', error_description: 'GET is not allowed on /token; use POST or OPTIONS' });
  });

  it('a path the router cannot read (a bad percent-encoding, a segment over 100 characters): 400, a page for a person, the OAuth error for a program; never the path', async () => {
    const cases = [
      ['/interaction/%zz', 'the path has an invalid percent-encoding'],
      ['/auth/%E0%A4%A', 'the path has an invalid percent-encoding'],
      [`/interaction/${'a'.repeat(150)}`, 'a segment of the path is longer than this server accepts'],
      [`/auth/${'b'.repeat(200)}?x=1`, 'a segment of the path is longer than this server accepts'],
      [`/admin/clients/${'c'.repeat(150)}`, 'a segment of the path is longer than this server accepts'],
    ] as const;
    for (const [url, description] of cases) {
      const path = url.split('?')[0]!;
      const json = await app.inject({ method: 'GET', url });
      assert.equal(json.statusCode, 400, url);
      assert.equal(json.headers['content-type'], 'application/json; charset=utf-8');
      assert.equal(json.headers['cache-control'], 'no-store');
      assert.deepEqual(json.json(), { error: 'invalid_request', error_description: description });

      const html = await app.inject({ method: 'GET', url, headers: { accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8' } });
      assert.equal(html.statusCode, 400, url);
      assert.equal(html.headers['content-type'], 'text/html; charset=utf-8');
      assert.equal(html.headers['cache-control'], 'no-store');
      assert.match(String(html.headers['content-security-policy']), /^default-src 'none'; /, 'no hook runs for such a request: the security headers are set all the same');
      assert.equal(html.headers['x-frame-options'], 'DENY');
      assert.match(String(html.headers['x-request-id']), /^[0-9a-f-]{36}$/);
      assert.match(html.body, /<h1 id="error-title">This request cannot be completed<\/h1>/);
      assert.match(html.body, new RegExp(`<dt>Details</dt><dd>${description}</dd>`));
      assert.ok(!html.body.includes(path.slice(-20)) && !json.body.includes(path.slice(-20)), `${url} is not repeated`);
    }
  });

  it('serves the stylesheet', async () => {
    const res = await app.inject({ method: 'GET', url: '/static/app.css' });
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /^text\/css/);
  });

  it('authorization errors a person sees are rendered by our template, escaped', async () => {
    const res = await app.inject({ method: 'GET', url: '/auth?client_id=%3Cscript%3Ealert(1)%3C%2Fscript%3E&response_type=code&scope=openid', headers: { accept: 'text/html' } });
    assert.equal(res.statusCode, 400);
    assert.match(String(res.headers['content-type']), /^text\/html/);
    assert.match(res.body, /<code>invalid_client<\/code>/);
    assert.ok(!res.body.includes('<script>'), 'nothing from the request is rendered unescaped');
    assert.match(res.body, /This request cannot be completed/);
  });

  it('a token request without client authentication gets an OAuth error, not a page', async () => {
    const res = await app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'grant_type=authorization_code&code=x' });
    assert.equal(res.statusCode, 400);
    assert.equal(res.json<{ error: string }>().error, 'invalid_request');
    assert.equal(res.headers['cache-control'], 'no-store');
  });
});

for (const kind of databaseKinds()) {
  it(`/readyz answers 503 with the reason once the database is gone; /healthz still 200 [${kind}]`, async () => {
    const own = await createTestDatabase(kind);
    const app = await testApp(own.database);
    try {
      await own.drop();
      const ready = await app.inject({ method: 'GET', url: '/readyz' });
      assert.equal(ready.statusCode, 503);
      assert.deepEqual(ready.json(), { status: 'not_ready', database: kind, reason: 'database unreachable: unexpected error (see the server log)' });
      assert.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
    } finally {
      await app.close();
    }
  });
}
