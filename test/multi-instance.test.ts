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
