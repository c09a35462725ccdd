import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { it } from 'node:test';

import { sql } from 'kysely';

import { errors } from 'oidc-provider';

import { ClientAdapter } from '../src/oidc/adapters/client.js';
import { GroupedWrites } from '../src/oidc/adapters/grouped-writes.js';
import { BEARER_MODELS, PAYLOAD_MODELS, PayloadAdapter, purgeExpired } from '../src/oidc/adapters/payload.js';
import { SecretBox } from '../src/security/secret-box.js';
import { describeEachDatabase } from './helpers/databases.js';

const GRANTABLE = ['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest', 'PreAuthorizedCode'];

const id = (): string => randomBytes(12).toString('base64url');

const SINGLE_USE = ['AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest', 'PreAuthorizedCode'];

describeEachDatabase('oidc-provider adapter contract', (ctx) => {
  const db = () => ctx.current.database.db;
  const box = new SecretBox(randomBytes(32));
  const adapterFor = (model: string, withBox = box) => new PayloadAdapter(db(), withBox, model);
  /** The primary key a value is stored under. */
  const stored = (model: string, value: string) => (BEARER_MODELS.has(model) ? box.bearerId(value) : value);

  for (const model of PAYLOAD_MODELS) {
    it(`${model}: upsert, find, update in place, consume, destroy`, async () => {
      const adapter = adapterFor(model);
      const key = id();
      assert.equal(await adapter.find(key), undefined);

      await adapter.upsert(key, { jti: key, kind: model, accountId: 'u1', grantId: 'g1', exp: 1 }, 600);
      assert.deepEqual(await adapter.find(key), { jti: key, kind: model, accountId: 'u1', grantId: 'g1', exp: 1 });

      await adapter.upsert(key, { jti: key, kind: model, accountId: 'u2' }, 600);
      assert.deepEqual(await adapter.find(key), { jti: key, kind: model, accountId: 'u2' }, 'upsert replaces the payload');

      const before = Math.floor(Date.now() / 1000);
      await adapter.consume(key);
      const consumed = await adapter.find(key);
      assert.ok(consumed, 'a consumed row is still found');
      assert.equal(typeof consumed.consumed, 'number');
      assert.ok(consumed.consumed >= before - 1 && consumed.consumed <= before + 2);
      if (SINGLE_USE.includes(model)) await assert.rejects(adapter.consume(key), errors.InvalidGrant, 'a second use is refused');
      else await adapter.consume(key);

      await adapter.destroy(key);
      assert.equal(await adapter.find(key), undefined);
    });

    it(`${model}: an expired row is not found, then purged; a row without expiry stays`, async () => {
      const adapter = adapterFor(model);
      const [expiring, permanent] = [id(), id()];
      await adapter.upsert(expiring, { jti: expiring }, 60);
      await adapter.upsert(permanent, { jti: permanent });
      assert.ok(await adapter.find(expiring));

      await db().updateTable('oidc_payloads').set({ expires_at: sql<Date>`now() - interval '1 second'` }).where('id', '=', stored(model, expiring)).execute();
      assert.equal(await adapter.find(expiring), undefined, 'expired rows are invisible at once');

      await db().updateTable('oidc_payloads').set({ expires_at: sql<Date>`now() - interval '1 hour'` }).where('id', '=', stored(model, expiring)).execute();
      assert.ok((await purgeExpired(db())) >= 1);
      const left = await db().selectFrom('oidc_payloads').select('id').where('id', 'in', [stored(model, expiring), stored(model, permanent)]).execute();
      assert.deepEqual(left.map((r) => r.id), [stored(model, permanent)]);
      assert.deepEqual(await adapter.find(permanent), { jti: permanent });
    });
  }

  for (const model of GRANTABLE) {
    it(`${model}: revokeByGrantId removes this model's rows of that grant only`, async () => {
      const adapter = adapterFor(model);
      const other = adapterFor(model === 'AccessToken' ? 'RefreshToken' : 'AccessToken');
      const grant = id();
      const [a, b, keep, otherModel] = [id(), id(), id(), id()];
      await adapter.upsert(a, { grantId: grant }, 600);
      await adapter.upsert(b, { grantId: grant }, 600);
      await adapter.upsert(keep, { grantId: id() }, 600);
      await other.upsert(otherModel, { grantId: grant }, 600);

      await adapter.revokeByGrantId(grant);
      assert.equal(await adapter.find(a), undefined);
      assert.equal(await adapter.find(b), undefined);
      assert.ok(await adapter.find(keep));
      assert.ok(await other.find(otherModel), 'other models are revoked by their own adapter');
    });
  }

  for (const model of SINGLE_USE) {
    it(`${model}: of 20 simultaneous uses exactly one succeeds; the others revoke the grant`, async () => {
      const adapter = adapterFor(model);
      const grant = id();
      const key = id();
      await adapter.upsert(key, { jti: key, grantId: grant }, 600);
      const token = id();
      await adapterFor('AccessToken').upsert(token, { jti: token, grantId: grant }, 600);
      await db().insertInto('oidc_payloads').values({ model: 'Grant', id: grant, payload: JSON.stringify({ jti: grant }) }).execute();
      const results = await Promise.allSettled(Array.from({ length: 20 }, () => adapter.consume(key)));
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
      for (const r of results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')) assert.ok(r.reason instanceof errors.InvalidGrant);
      assert.equal(await adapterFor('AccessToken').find(token), undefined, "the grant's tokens are revoked");
      assert.equal(await adapterFor('Grant').find(grant), undefined, 'and the grant itself');
    });
  }

  for (const model of BEARER_MODELS) {
    it(`${model}: stored under a keyed hash of its id, which the payload does not hold`, async () => {
      const key = id();
      await adapterFor(model).upsert(key, { jti: key, kind: model }, 600);
      const rows = await db().selectFrom('oidc_payloads').select(['id', 'payload']).where('model', '=', model).where('id', 'in', [key, box.bearerId(key)]).execute();
      assert.deepEqual(rows.map((r) => r.id), [box.bearerId(key)]);
      assert.ok(!JSON.stringify(rows).includes(key), 'the value is nowhere in the row');
      assert.equal(await adapterFor(model, new SecretBox(randomBytes(32))).find(key), undefined, 'another SECRET_KEY finds nothing');
    });
  }

  it('a value stored under a previous SECRET_KEY is still found, and moves to the new key when saved again', async () => {
    const oldKey = randomBytes(32);
    const newBox = new SecretBox(randomBytes(32), [oldKey]);
    const key = id();
    await adapterFor('Session', new SecretBox(oldKey)).upsert(key, { jti: key, uid: id(), accountId: 'u1' }, 600);
    const sessions = adapterFor('Session', newBox);
    assert.equal((await sessions.find(key))?.accountId, 'u1');
    await sessions.upsert(key, { jti: key, accountId: 'u2' }, 600);
    const rows = await db().selectFrom('oidc_payloads').select('id').where('model', '=', 'Session').where('id', 'in', newBox.bearerIds(key)).execute();
    assert.deepEqual(rows.map((r) => r.id), [newBox.bearerId(key)]);
    assert.equal((await sessions.find(key))?.accountId, 'u2');
  });

  it('Session: findByUid; DeviceCode: findByUserCode', async () => {
    const sessions = adapterFor('Session');
    const sessionId = id();
    await sessions.upsert(sessionId, { uid: 'uid-1', accountId: 'u1' }, 600);
    assert.deepEqual(await sessions.findByUid('uid-1'), { uid: 'uid-1', accountId: 'u1' });
    assert.equal(await sessions.findByUid('uid-2'), undefined);
    assert.equal(await adapterFor('Interaction').findByUid('uid-1'), undefined, 'scoped to the model');

    const devices = adapterFor('DeviceCode');
    await devices.upsert(id(), { userCode: 'ABCD-EFGH', grantId: 'g' }, 600);
    assert.deepEqual(await devices.findByUserCode('ABCD-EFGH'), { userCode: 'ABCD-EFGH', grantId: 'g' });
  });

  it('the same id under two models are two rows', async () => {
    const key = id();
    await adapterFor('AccessToken').upsert(key, { kind: 'AccessToken' }, 600);
    await adapterFor('RefreshToken').upsert(key, { kind: 'RefreshToken' }, 600);
    assert.deepEqual(await adapterFor('AccessToken').find(key), { jti: key, kind: 'AccessToken' });
    assert.deepEqual(await adapterFor('RefreshToken').find(key), { jti: key, kind: 'RefreshToken' });
  });

  it('saves made together (group commit): each resolves once its row is stored; two saves of one row land in order', async () => {
    const writes = new GroupedWrites(db());
    const keys = [id(), id(), id()];
    const shared = id();
    const sessions = new PayloadAdapter(db(), box, 'Session', undefined, writes);
    const tokens = new PayloadAdapter(db(), box, 'AccessToken', undefined, writes);
    const refresh = new PayloadAdapter(db(), box, 'RefreshToken', undefined, writes);
    // Same tick: all in one statement; `shared` twice, the second last, so the second is what is written.
    await Promise.all([
      tokens.upsert(keys[0]!, { jti: keys[0], kind: 'AccessToken' }, 600),
      refresh.upsert(keys[1]!, { jti: keys[1], kind: 'RefreshToken' }, 600),
      sessions.upsert(shared, { jti: shared, kind: 'Session', n: 1 }, 600),
      sessions.upsert(shared, { jti: shared, kind: 'Session', n: 2 }, 600),
      tokens.upsert(keys[2]!, { jti: keys[2], kind: 'AccessToken' }, 600),
    ]);
    assert.deepEqual(await tokens.find(keys[0]!), { jti: keys[0], kind: 'AccessToken' });
    assert.deepEqual(await refresh.find(keys[1]!), { jti: keys[1], kind: 'RefreshToken' });
    assert.deepEqual(await tokens.find(keys[2]!), { jti: keys[2], kind: 'AccessToken' });
    assert.deepEqual(await sessions.find(shared), { jti: shared, kind: 'Session', n: 2 }, 'the later save of a row wins');
  });

  it('saves made together: a row the database refuses fails its own save only', async () => {
    const writes = new GroupedWrites(db());
    const tokens = new PayloadAdapter(db(), box, 'AccessToken', undefined, writes);
    const keys = [id(), id(), id(), id()];
    const results = await Promise.allSettled([
      tokens.upsert(keys[0]!, { jti: keys[0] }, 600),
      tokens.upsert(keys[1]!, { jti: keys[1] }, 600),
      // An expiry 150,000 years ago, a date JavaScript holds and Postgres does not: refused for its content (22008).
      tokens.upsert(keys[2]!, { jti: keys[2] }, -5e12),
      tokens.upsert(keys[3]!, { jti: keys[3] }, 600),
    ]);
    assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    for (const key of [keys[0]!, keys[1]!, keys[3]!]) assert.deepEqual(await tokens.find(key), { jti: key });
    assert.equal(await tokens.find(keys[2]!), undefined);
  });

  it('Client: secrets are sealed at rest; only active clients are found; destroy removes', async () => {
    const clients = new ClientAdapter({ db: db(), box });
    const clientId = `client-${id()}`;
    const secret = randomBytes(32).toString('base64url');
    await clients.upsert(clientId, { client_id: clientId, client_secret: secret, redirect_uris: ['https://app.example/cb'] });

    const row = await db().selectFrom('clients').selectAll().where('client_id', '=', clientId).executeTakeFirstOrThrow();
    assert.ok(!JSON.stringify(row.metadata).includes(secret), 'no secret in the metadata column');
    assert.ok(row.client_secret && !row.client_secret.includes(secret), 'secret column is sealed');
    assert.equal(row.status, 'active');

    assert.deepEqual(await clients.find(clientId), { client_id: clientId, client_secret: secret, redirect_uris: ['https://app.example/cb'] });

    await db().updateTable('clients').set({ status: 'suspended' }).where('client_id', '=', clientId).execute();
    assert.equal(await clients.find(clientId), undefined, 'a suspended client does not exist for oidc-provider');
    await db().updateTable('clients').set({ status: 'active' }).where('client_id', '=', clientId).execute();

    await clients.destroy(clientId);
    assert.equal(await clients.find(clientId), undefined);
  });

  it('Client: a secret sealed under another SECRET_KEY fails loudly instead of authenticating', async () => {
    const clientId = `client-${id()}`;
    await new ClientAdapter({ db: db(), box: new SecretBox(randomBytes(32)) }).upsert(clientId, { client_id: clientId, client_secret: 'x' });
    await assert.rejects(new ClientAdapter({ db: db(), box: new SecretBox(randomBytes(32)) }).find(clientId), /unknown key/);
  });
});
