import assert from 'node:assert/strict';
import fs, { type PathLike } from 'node:fs';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { testApp, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { describeEachDatabase } from './helpers/databases.js';

/**
 * First contact (issue 13, item 7): GET / says what this server is, which mode it runs in and where to go;
 * the sandbox's launcher, sample app and demo logins only in sandbox mode. A browser on another loopback
 * name than the issuer's is sent to the issuer, so that the sample app's redirect URI matches.
 */
const HTML = { accept: 'text/html,application/xhtml+xml' };
const links = (html: string): string[] => [...html.matchAll(/<a [^>]*href="([^"]+)"/g)].map((m) => m[1]!.replace(/&amp;/g, '&'));

describeEachDatabase('landing page', (ctx) => {
  let sandbox: FastifyInstance;
  let deployment: FastifyInstance | undefined;
  before(async () => {
    sandbox = await testApp(ctx.current.database, { SANDBOX: 'true', SEED_DEMO: 'true', REGISTRATION: '', REGISTRATION_STATUS: '' });
  });
  after(async () => {
    await sandbox.close();
    await deployment?.close();
  });

  it('in sandbox mode: the mode, discovery, launcher, sample app, connected apps, docs and the demo logins', async () => {
    const res = await sandbox.inject({ method: 'GET', url: '/', headers: HTML });
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /^text\/html/);
    assert.match(res.body, /<span class="badge pending" id="mode">Sandbox mode<\/span>/);
    assert.deepEqual(links(res.body), [
      `${TEST_FHIR_BASE}/.well-known/smart-configuration`,
      `${TEST_ISSUER}/.well-known/openid-configuration`,
      '/launcher',
      `/sample-app/launch.html?iss=${encodeURIComponent(TEST_FHIR_BASE)}`,
      '/account/apps',
      '/admin',
      '/admin/api/docs',
    ]);
    const logins = [...res.body.matchAll(/<tr><td><code>([^<]+)<\/code><\/td><td><code>([^<]+)<\/code>/g)].map((m) => `${m[1]!}:${m[2]!}`);
    assert.deepEqual(logins, ['clinician:clinician-demo', 'patient:patient-demo']);
    for (const link of links(res.body).filter((l) => l.startsWith('/') && !l.startsWith('/admin'))) {
      const target = await sandbox.inject({ method: 'GET', url: link, headers: HTML });
      assert.ok([200, 302, 303].includes(target.statusCode), `${link}: ${target.statusCode}`);
    }
  });

  it('pages render without asking the file system: their partials are included by a path from the views root', async () => {
    const pages = ['/', '/admin/sign-in', '/launcher'];
    for (const url of pages) assert.equal((await sandbox.inject({ method: 'GET', url, headers: HTML })).statusCode, 200, url);
    const looked: string[] = [];
    const existsSync = fs.existsSync;
    fs.existsSync = (path: PathLike) => {
      looked.push(String(path));
      return existsSync(path);
    };
    try {
      for (const url of pages) assert.equal((await sandbox.inject({ method: 'GET', url, headers: HTML })).statusCode, 200, url);
    } finally {
      fs.existsSync = existsSync;
    }
    assert.deepEqual(looked, [], 'ejs looks for a relatively included partial at every render');
  });

  it('in deployment mode: the mode, no launcher, no sample app, no demo logins', async () => {
    await sandbox.close();
    deployment = await testApp(ctx.current.database, { SANDBOX: 'false' });
    const res = await deployment.inject({ method: 'GET', url: '/', headers: HTML });
    assert.equal(res.statusCode, 200);
    assert.match(res.body, /id="mode">Deployment mode</);
    assert.deepEqual(links(res.body), [`${TEST_FHIR_BASE}/.well-known/smart-configuration`, `${TEST_ISSUER}/.well-known/openid-configuration`, '/account/apps', '/admin', '/admin/api/docs']);
    assert.doesNotMatch(res.body, /demo-logins|clinician-demo|Launcher/);
  });

  it('a page opened at 127.0.0.1 when the issuer is localhost goes to the issuer; API requests stay', async () => {
    const app = deployment;
    assert.ok(app, 'the deployment of the test before');
    const page = await app.inject({ method: 'GET', url: '/sample-app/launch.html?iss=x', headers: { ...HTML, host: '127.0.0.1:3000' } });
    assert.equal(page.statusCode, 307);
    assert.equal(page.headers.location, `${TEST_ISSUER}/sample-app/launch.html?iss=x`);
    const same = await app.inject({ method: 'GET', url: '/sample-app/launch.html', headers: { ...HTML, host: 'localhost:3000' } });
    assert.equal(same.statusCode, 200);
    const api = await app.inject({ method: 'GET', url: '/.well-known/openid-configuration', headers: { accept: 'application/json', host: '127.0.0.1:3000' } });
    assert.equal(api.statusCode, 200);
    const otherPort = await app.inject({ method: 'GET', url: '/', headers: { ...HTML, host: '127.0.0.1:4000' } });
    assert.equal(otherPort.statusCode, 200, 'another port is another server');
  });
});
