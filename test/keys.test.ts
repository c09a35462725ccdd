import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { it } from 'node:test';

import { sql } from 'kysely';

import { ensureCookieKey, loadCookieKeys, pruneCookieKeys, rotateCookieKeys } from '../src/keys/cookie-keys.js';
import { ensureSigningKeys, KeyRotationError, keysDueForRotation, listSigningKeys, loadSigningKeys, pruneRetiredKeys, rotateSigningKeys } from '../src/keys/signing-keys.js';
import { SecretBox } from '../src/security/secret-box.js';
import { describeEachDatabase } from './helpers/databases.js';

const ALGS = ['RS256', 'RS384', 'ES256', 'ES384'] as const;
const ROTATE = { minPublishedSeconds: 360, retiredPublishSeconds: 86_400 };

describeEachDatabase('signing and cookie keys', (ctx) => {
  const db = () => ctx.current.database.db;
  const box = new SecretBox(randomBytes(32));

  it('are generated once, an active and a next key per algorithm, even when processes start together', async () => {
    const created = await Promise.all([ensureSigningKeys(db(), box, ALGS), ensureSigningKeys(db(), box, ALGS)]);
    assert.deepEqual(created.map((c) => c.length).sort(), [0, 8]);
    assert.deepEqual(await ensureSigningKeys(db(), box, ALGS), []);

    const keys = await listSigningKeys(db());
    assert.deepEqual(keys.map((k) => `${k.alg}:${k.state}`).sort(), ALGS.flatMap((alg) => [`${alg}:active`, `${alg}:next`]).sort());
  });

  it('keep the private part sealed in the database', async () => {
    const rows = await db().selectFrom('signing_keys').select(['kid', 'public_jwk', 'private_jwk']).execute();
    for (const row of rows) {
      assert.match(row.private_jwk, /^v1\./);
      assert.ok(!('d' in row.public_jwk), 'public JWK has no private part');
      assert.equal(row.public_jwk.kid, row.kid);
    }
    await assert.rejects(loadSigningKeys(db(), new SecretBox(randomBytes(32))), /unknown key/);
  });

  it('load with the private part, active keys first so that they sign, next keys published too', async () => {
    const { keys, rows } = await loadSigningKeys(db(), box);
    assert.equal(keys.length, 8);
    assert.deepEqual(rows.slice(0, 4).map((r) => r.state), ['active', 'active', 'active', 'active']);
    assert.deepEqual(rows.slice(4).map((r) => r.state), ['next', 'next', 'next', 'next']);
    for (const [i, key] of keys.entries()) {
      assert.equal(key.kid, rows[i]!.kid);
      assert.equal(key.alg, rows[i]!.alg);
      assert.ok(key.d, 'private part present for signing');
    }
  });

  it('refuse to rotate before the next key has been published long enough, unless forced', async () => {
    await assert.rejects(rotateSigningKeys(db(), box, { ...ROTATE, algs: ['RS256'] }), (error: unknown) => {
      assert.ok(error instanceof KeyRotationError);
      assert.match(error.message, /^the next RS256 key \(.+\) has been published for \d+ s, less than the 360 s every server process and client cache needs to see it before it signs; wait, or force the rotation$/);
      return true;
    });
  });

  it('rotate: next becomes active, active retires but stays published, a new next appears', async () => {
    const before = await listSigningKeys(db());
    const active = before.find((k) => k.alg === 'RS256' && k.state === 'active')!;
    const next = before.find((k) => k.alg === 'RS256' && k.state === 'next')!;

    const [result] = await rotateSigningKeys(db(), box, { ...ROTATE, algs: ['RS256'], force: true });
    assert.ok(result);
    assert.equal(result.activated, next.kid);
    assert.equal(result.retired, active.kid);

    const after = await listSigningKeys(db());
    const state = (kid: string) => after.find((k) => k.kid === kid)?.state;
    assert.equal(state(next.kid), 'active');
    assert.equal(state(active.kid), 'retired');
    assert.equal(state(result.next), 'next');
    const retired = after.find((k) => k.kid === active.kid)!;
    assert.ok(retired.publishUntil && retired.publishUntil.getTime() > Date.now() + 86_000_000);

    const { rows } = await loadSigningKeys(db(), box);
    assert.ok(rows.some((r) => r.kid === active.kid), 'the retired key is still published');
    assert.equal(rows.find((r) => r.alg === 'RS256')?.kid, next.kid, 'the promoted key is the first RS256 key: it signs');
    assert.deepEqual(after.filter((k) => k.alg !== 'RS256'), before.filter((k) => k.alg !== 'RS256'), 'other algorithms untouched');
  });

  it('drop retired keys from the JWKS once their publication period is over', async () => {
    await db().updateTable('signing_keys').set({ publish_until: sql<Date>`now() - interval '1 second'` }).where('state', '=', 'retired').execute();
    const { rows } = await loadSigningKeys(db(), box);
    assert.ok(!rows.some((r) => r.state === 'retired'));
    assert.equal(await pruneRetiredKeys(db()), 1);
    assert.ok(!(await listSigningKeys(db())).some((k) => k.state === 'retired'));
  });

  it('scheduled rotation: due after the configured age, and processes deciding together rotate once', async () => {
    assert.deepEqual(await keysDueForRotation(db(), 90), []);
    await db().updateTable('signing_keys').set({ activated_at: sql<Date>`now() - interval '91 days'`, created_at: sql<Date>`now() - interval '92 days'` }).where('alg', '=', 'ES384').execute();
    assert.deepEqual(await keysDueForRotation(db(), 90), ['ES384']);

    const both = await Promise.all([
      rotateSigningKeys(db(), box, { ...ROTATE, algs: ['ES384'], dueAfterDays: 90 }),
      rotateSigningKeys(db(), box, { ...ROTATE, algs: ['ES384'], dueAfterDays: 90 }),
    ]);
    assert.deepEqual(both.map((r) => r.length).sort(), [0, 1]);
    assert.deepEqual(await keysDueForRotation(db(), 90), []);
  });

  it('cookie keys: one created, rotation puts the new key first, old keys kept for a while then pruned', async () => {
    await Promise.all([ensureCookieKey(db(), box), ensureCookieKey(db(), box)]);
    const first = await loadCookieKeys(db(), box);
    assert.equal(first.ids.length, 1);
    assert.match(first.secrets[0]!, /^[A-Za-z0-9_-]{43}$/);

    await db().updateTable('cookie_keys').set({ created_at: sql<Date>`now() - interval '20 days'` }).execute();
    const added = await rotateCookieKeys(db(), box);
    const second = await loadCookieKeys(db(), box);
    assert.deepEqual(second.ids, [added, first.ids[0]]);
    assert.equal(await pruneCookieKeys(db(), 15 * 86_400), 0, 'the old key was superseded just now');

    await db().updateTable('cookie_keys').set({ created_at: sql<Date>`now() - interval '16 days'` }).where('id', '=', added).execute();
    assert.equal(await pruneCookieKeys(db(), 15 * 86_400), 1);
    assert.deepEqual((await loadCookieKeys(db(), box)).ids, [added]);
  });
});
