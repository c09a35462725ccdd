import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { it } from 'node:test';

import { sql } from 'kysely';

import { ClientAdapter, PAYLOAD_MODELS, PayloadAdapter, purgeExpired } from '../src/oidc/adapter.js';
import { SecretBox } from '../src/security/secret-box.js';
import { describeEachDatabase } from './helpers/databases.js';

const GRANTABLE = ['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest', 'PreAuthorizedCode'];

const id = (): string => randomBytes(12).toString('base64url');

describeEachDatabase('oidc-provider adapter contract', (ctx) => {
  const db = () => ctx.current.database.db;

  for (const model of PAYLOAD_MODELS) {
    it(`${model}: upsert, find, update in place, consume, destroy`, async () => {
      const adapter = new PayloadAdapter(db(), model);
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

      await adapter.destroy(key);
      assert.equal(await adapter.find(key), undefined);
    });

    it(`${model}: an expired row is not found, then purged; a row without expiry stays`, async () => {
      const adapter = new PayloadAdapter(db(), model);
      const [expiring, permanent] = [id(), id()];
      await adapter.upsert(expiring, { jti: expiring }, 60);
      await adapter.upsert(permanent, { jti: permanent });
      assert.ok(await adapter.find(expiring));

      await db().updateTable('oidc_payloads').set({ expires_at: sql<Date>`now() - interval '1 second'` }).where('id', '=', expiring).execute();
      assert.equal(await adapter.find(expiring), undefined, 'expired rows are invisible at once');

      await db().updateTable('oidc_payloads').set({ expires_at: sql<Date>`now() - interval '1 hour'` }).where('id', '=', expiring).execute();
      assert.ok((await purgeExpired(db())) >= 1);
      const left = await db().selectFrom('oidc_payloads').select('id').where('id', 'in', [expiring, permanent]).execute();
      assert.deepEqual(left.map((r) => r.id), [permanent]);
      assert.deepEqual(await adapter.find(permanent), { jti: permanent });
    });
  }

  for (const model of GRANTABLE) {
    it(`${model}: revokeByGrantId removes this model's rows of that grant only`, async () => {
      const adapter = new PayloadAdapter(db(), model);
      const other = new PayloadAdapter(db(), model === 'AccessToken' ? 'RefreshToken' : 'AccessToken');
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

  it('Session: findByUid; DeviceCode: findByUserCode', async () => {
    const sessions = new PayloadAdapter(db(), 'Session');
    const sessionId = id();
    await sessions.upsert(sessionId, { uid: 'uid-1', accountId: 'u1' }, 600);
    assert.deepEqual(await sessions.findByUid('uid-1'), { uid: 'uid-1', accountId: 'u1' });
    assert.equal(await sessions.findByUid('uid-2'), undefined);
    assert.equal(await new PayloadAdapter(db(), 'Interaction').findByUid('uid-1'), undefined, 'scoped to the model');

    const devices = new PayloadAdapter(db(), 'DeviceCode');
    await devices.upsert(id(), { userCode: 'ABCD-EFGH', grantId: 'g' }, 600);
    assert.deepEqual(await devices.findByUserCode('ABCD-EFGH'), { userCode: 'ABCD-EFGH', grantId: 'g' });
  });

  it('the same id under two models are two rows', async () => {
    const key = id();
    await new PayloadAdapter(db(), 'AccessToken').upsert(key, { kind: 'AccessToken' }, 600);
    await new PayloadAdapter(db(), 'RefreshToken').upsert(key, { kind: 'RefreshToken' }, 600);
    assert.deepEqual(await new PayloadAdapter(db(), 'AccessToken').find(key), { kind: 'AccessToken' });
    assert.deepEqual(await new PayloadAdapter(db(), 'RefreshToken').find(key), { kind: 'RefreshToken' });
  });

  it('Client: secrets are sealed at rest; only active clients are found; destroy removes', async () => {
    const box = new SecretBox(randomBytes(32));
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
