import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { buildApp } from '../src/app.js';
import { openDatabase } from '../src/db/database.js';
import { rotateSigningKeys } from '../src/keys/signing-keys.js';
import { testApp, testConfig } from './helpers/app.js';
import { basicAuth } from './helpers/clients.js';
import { tokenRequest } from './helpers/flow.js';
import { describeEachDatabase } from './helpers/databases.js';

const jwks = async (app: FastifyInstance) => (await app.inject({ method: 'GET', url: '/jwks' })).json<{ keys: { kid: string; alg: string }[] }>().keys;

describeEachDatabase('several server instances on one database', (ctx) => {
  it('serve the same keys, and agree again after a rotation once each has refreshed', async () => {
    const [a, b] = [await testApp(ctx.current.database), await testApp(ctx.current.database)];
    try {
      assert.deepEqual(await jwks(a), await jwks(b));
      assert.equal(a.runtime.host.fingerprint, b.runtime.host.fingerprint, 'same signing and cookie keys');

      const before = await jwks(a);
      const [rotated] = await rotateSigningKeys(ctx.current.database.db, a.runtime.box, { algs: ['RS256'], force: true, minPublishedSeconds: 0, retiredPublishSeconds: 3600 });
      assert.ok(before.some((k) => k.kid === rotated!.activated), 'the key that now signs was published before the rotation');

      assert.equal(await a.runtime.host.refresh(), true);
      assert.equal(await b.runtime.host.refresh(), true);
      assert.equal(await b.runtime.host.refresh(), false, 'nothing changed since');
      const [afterA, afterB] = [await jwks(a), await jwks(b)];
      assert.deepEqual(afterA, afterB);
      assert.equal(afterA.find((k) => k.alg === 'RS256')?.kid, rotated!.activated, 'the promoted key comes first for RS256');
      assert.ok(afterA.some((k) => k.kid === rotated!.retired), 'the retired key stays published');
      assert.ok(afterA.some((k) => k.kid === rotated!.next), 'the new next key is published');
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('a scheduled rotation in one instance is seen by the other at its next housekeeping', async () => {
    const [a, b] = [await testApp(ctx.current.database, { KEY_ROTATION_DAYS: '30' }), await testApp(ctx.current.database, { KEY_ROTATION_DAYS: '30' })];
    try {
      await ctx.current.database.db.updateTable('signing_keys').set({ activated_at: new Date(Date.now() - 31 * 86_400_000), created_at: new Date(Date.now() - 32 * 86_400_000) }).execute();
      const first = await a.runtime.maintenance.housekeeping();
      assert.equal(first.rotated.length, 4, 'every algorithm was due');
      const second = await b.runtime.maintenance.housekeeping();
      assert.deepEqual(second.rotated, [], 'rotated once between them');
      assert.deepEqual(await jwks(a), await jwks(b));
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describeEachDatabase('client changes across instances', (ctx) => {
  const ADMIN_TOKEN = 'b'.repeat(43);
  const cc = (app: FastifyInstance, secret: string) => tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, { authorization: basicAuth('shared', secret) });

  it('reach another instance within CLIENT_CACHE_SECONDS, and at once with 0', async () => {
    const [a, b, uncached] = [
      await testApp(ctx.current.database, { ADMIN_TOKEN }),
      await testApp(ctx.current.database, { CLIENT_CACHE_SECONDS: '1' }),
      await testApp(ctx.current.database, { CLIENT_CACHE_SECONDS: '0' }),
    ];
    const admin = (method: 'POST' | 'PATCH', url: string, payload?: object) => a.inject({ method, url: `/admin/api${url}`, headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, ...(payload ? { payload } : {}) });
    try {
      const created = await admin('POST', '/clients', { client_id: 'shared', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'system/*.rs' });
      const secret = created.json<{ client_secret: string }>().client_secret;
      for (const app of [a, b, uncached]) assert.equal((await cc(app, secret)).statusCode, 200);
      assert.equal(b.runtime.clients.size, 1, 'b now holds the client');
      assert.equal(uncached.runtime.clients.size, 0, 'nothing is kept with CLIENT_CACHE_SECONDS=0');

      assert.equal((await admin('PATCH', '/clients/shared', { status: 'suspended' })).statusCode, 200);
      assert.equal((await cc(a, secret)).statusCode, 401, 'the instance that made the change applies it at once');
      assert.equal((await cc(uncached, secret)).statusCode, 401, 'so does an instance without the cache');
      assert.equal((await cc(b, secret)).statusCode, 200, 'another instance may answer from its cache for up to a second');
      await new Promise((r) => setTimeout(r, 1100));
      const refused = await cc(b, secret);
      assert.equal(refused.statusCode, 401, 'and no longer');
      assert.equal(refused.json<{ error: string }>().error, 'invalid_client');
    } finally {
      await Promise.all([a.close(), b.close(), uncached.close()]);
    }
  });
});

describeEachDatabase('restart', (ctx, kind) => {
  const dirs: string[] = [];
  after(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it('a restarted server serves the same keys and data', async () => {
    let config;
    if (kind === 'pglite') {
      const dir = await mkdtemp(join(tmpdir(), 'smart-auth-restart-'));
      dirs.push(dir);
      // No SECRET_KEY: the embedded mode keeps its own in the data directory, and must find it again.
      config = testConfig({ DATA_DIR: dir, SEED_DEMO: 'true', SECRET_KEY: '' });
    } else {
      config = testConfig({ DATABASE_URL: ctx.current.url!, SEED_DEMO: 'true' });
    }

    const first = await buildApp(config, { background: false });
    const keys = await jwks(first);
    const users = await first.runtime.database.db.selectFrom('users').select('username').orderBy('username').execute();
    await first.close();

    const second = await buildApp(config, { background: false });
    try {
      assert.deepEqual(await jwks(second), keys);
      assert.deepEqual(await second.runtime.database.db.selectFrom('users').select('username').orderBy('username').execute(), users);
      assert.deepEqual(users.map((u) => u.username), ['clinician', 'patient']);
    } finally {
      await second.close();
    }
  });

  if (kind === 'pglite') {
    it('the embedded database refuses a second process on the same data directory', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'smart-auth-lock-'));
      dirs.push(dir);
      const first = await openDatabase({ kind: 'pglite', dataDir: dir });
      await first.close();
      // Another live process's lock (pid 1 is always alive) is refused; a dead process's lock is taken over.
      await writeFile(join(dir, 'server.pid'), '1\n');
      await assert.rejects(openDatabase({ kind: 'pglite', dataDir: dir }), /The embedded database in .+ is in use by process 1\. It serves one process at a time; stop that process, or set DATABASE_URL to run several processes on Postgres\./);
      await writeFile(join(dir, 'server.pid'), '999999999\n');
      const again = await openDatabase({ kind: 'pglite', dataDir: dir });
      await again.close();
    });
  }
});
