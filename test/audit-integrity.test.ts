import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { CompactSign, exportJWK, generateKeyPair } from 'jose';
import { sql, type Kysely } from 'kysely';

import { keyedChainHash, legacyChainHash, type AuditRow } from '../src/audit/audit.js';
import { CHECKPOINT_TYPE, createCheckpoint, type StoredCheckpoint } from '../src/audit/checkpoints.js';
import { verifyAudit } from '../src/audit/verify.js';
import type { DB } from '../src/db/schema.js';
import { activeSigningKey, listSigningKeys, loadSigningKeys, pruneRetiredKeys, rotateSigningKeys } from '../src/keys/signing-keys.js';
import { SecretBox } from '../src/security/secret-box.js';
import { testApp, testConfig, TEST_ISSUER } from './helpers/app.js';
import { describeEachDatabase } from './helpers/databases.js';

const box = new SecretBox(testConfig().secretKey!);

class Rollback extends Error {}

/**
 * Someone with write access to the database, who can disable the append-only triggers as the table's owner
 * can, but does not hold SECRET_KEY. Done in a transaction rolled back afterwards, so each test starts from
 * the trail as the server wrote it.
 */
async function asAttacker(db: Kysely<DB>, attack: (trx: Kysely<DB>) => Promise<void>): Promise<void> {
  await assert.rejects(
    db.transaction().execute(async (trx) => {
      await sql`alter table audit_events disable trigger audit_events_no_change`.execute(trx);
      await sql`alter table audit_checkpoints disable trigger audit_checkpoints_no_change`.execute(trx);
      await attack(trx);
      throw new Rollback();
    }),
    Rollback,
  );
}

/** Rewrites the chain's rows from `from` on, each with the hash `rehash` gives, as someone covering their tracks would. */
async function rehashFrom(trx: Kysely<DB>, from: AuditRow, rehash: (prev: string, row: AuditRow) => string): Promise<void> {
  const rows = await trx.selectFrom('audit_events').selectAll().where('chain', '=', from.chain).where(sql<string>`seq`, '>=', String(from.seq)).orderBy('seq').execute();
  let prev = from.prev_hash;
  for (const row of rows) {
    const hash = rehash(prev, { ...row, prev_hash: prev });
    await trx.updateTable('audit_events').set({ prev_hash: prev, hash }).where(sql<string>`seq`, '=', String(row.seq)).execute();
    prev = hash;
  }
}

describeEachDatabase('audit integrity against someone who can write the database', (ctx) => {
  let app: FastifyInstance;
  const db = () => ctx.current.database.db;
  let chainA: AuditRow[];
  let chainB: AuditRow[];
  let checkpoint: StoredCheckpoint;

  before(async () => {
    app = await testApp(ctx.current.database);
    for (let i = 0; i < 10; i++) await app.runtime.audit.record({ type: i % 3 ? 'login.success' : 'login.failure', outcome: i % 3 ? 'success' : 'failure', actorType: 'user', userId: `user-${i}`, details: { i } });
    // A second process: a chain of its own, anchored to the first one's newest row.
    const other = await testApp(ctx.current.database);
    for (let i = 0; i < 3; i++) await other.runtime.audit.record({ type: 'admin.request', actorType: 'admin', details: { process: 2, i } });
    await other.close();
    for (let i = 10; i < 15; i++) await app.runtime.audit.record({ type: 'admin.request', actorType: 'admin', details: { i } });
    const rows = await db().selectFrom('audit_events').selectAll().orderBy('seq').execute();
    chainA = rows.filter((r) => r.chain === rows[0]!.chain);
    chainB = rows.filter((r) => r.chain !== rows[0]!.chain);
    assert.deepEqual([chainA.length, chainB.length], [15, 3]);
  });
  after(() => app.close());

  it('writes keyed hashes that verify', async () => {
    for (const row of [...chainA, ...chainB]) assert.match(row.hash, new RegExp(`^v2\\.${box.keyId}\\.[0-9a-f]{64}$`));
    assert.deepEqual(await verifyAudit(db(), box), { ok: true, checked: 18, chains: 2, checkpoints: { stored: 0, given: [] } });
  });

  it('a failure rewritten as a success, the rest of its chain rehashed with plain SHA-256: found, naming the row', async () => {
    const victim = chainA.find((r) => r.outcome === 'failure' && r !== chainA[0])!;
    await asAttacker(db(), async (trx) => {
      await trx.updateTable('audit_events').set({ outcome: 'success', type: 'login.success' }).where(sql<string>`seq`, '=', String(victim.seq)).execute();
      await rehashFrom(trx, { ...victim, outcome: 'success', type: 'login.success' }, (prev, row) => legacyChainHash(prev, row));
      assert.deepEqual((await verifyAudit(trx, box)).brokenAt, { seq: String(victim.seq), reason: 'the row has a plain sha256 hash after keyed rows of its chain (it was rewritten without SECRET_KEY)' });
    });
  });

  it('the same with a key of the attacker\'s own, named as ours or as theirs: found, naming the row', async () => {
    const victim = chainA.find((r) => r.outcome === 'failure' && r !== chainA[0])!;
    const theirs = new SecretBox(randomBytes(32));
    for (const [label, rehash, reason] of [
      ['their key id', (prev: string, row: AuditRow) => keyedChainHash(theirs, prev, row), `the row is hashed under a SECRET_KEY this server does not hold (key id ${theirs.keyId}): set the key it was written with in SECRET_KEYS_PREVIOUS, or the row was forged`],
      ['our key id', (prev: string, row: AuditRow) => keyedChainHash(theirs, prev, row).replace(theirs.keyId, box.keyId), 'the row does not match its hash (it was modified)'],
    ] as const) {
      await asAttacker(db(), async (trx) => {
        await trx.updateTable('audit_events').set({ outcome: 'success' }).where(sql<string>`seq`, '=', String(victim.seq)).execute();
        await rehashFrom(trx, { ...victim, outcome: 'success' }, rehash);
        assert.deepEqual((await verifyAudit(trx, box)).brokenAt, { seq: String(victim.seq), reason }, label);
      });
    }
  });

  it('a whole chain of its own added with plain SHA-256 hashes after keyed rows: found, naming its first row, unless unkeyed chains are allowed', async () => {
    // Forged after the newest checkpoint, so no checkpoint speaks of it: before, it passed as a chain of a release
    // from before keyed chains.
    const last = [...chainA, ...chainB].sort((x, y) => (BigInt(x.seq) < BigInt(y.seq) ? -1 : 1)).at(-1)!;
    await asAttacker(db(), async (trx) => {
      let prev = last.hash;
      let first: string | undefined;
      for (const i of [1, 2]) {
        const row = { ...last, chain: 'forged-chain', type: 'login.success', outcome: 'success' as const, details: { forged: i }, prev_hash: prev };
        const hash = legacyChainHash(prev, row);
        const { seq } = await trx.insertInto('audit_events').values({ chain: row.chain, recorded_at: new Date(), type: row.type, outcome: row.outcome, actor_type: row.actor_type, details: JSON.stringify(row.details), prev_hash: prev, hash }).returning('seq').executeTakeFirstOrThrow();
        // The hash covers the row as stored: rehash it with what the database gave it.
        const stored = await trx.selectFrom('audit_events').selectAll().where(sql<string>`seq`, '=', String(seq)).executeTakeFirstOrThrow();
        await trx.updateTable('audit_events').set({ hash: legacyChainHash(prev, stored) }).where(sql<string>`seq`, '=', String(seq)).execute();
        prev = legacyChainHash(prev, stored);
        first ??= String(seq);
      }
      assert.deepEqual((await verifyAudit(trx, box)).brokenAt, {
        seq: first,
        reason: 'the chain has plain sha256 hashes and begins after keyed rows (it was written without SECRET_KEY; if the deployment went back to a release from before keyed chains, verify with --allow-unkeyed-chains)',
      });
      const allowed = await verifyAudit(trx, box, { allowUnkeyedChains: true });
      assert.deepEqual([allowed.ok, allowed.brokenAt, allowed.chains], [true, undefined, 3], 'allowed, the forged chain verifies as a chain of an earlier release would');
    });
  });

  it('rows written under an earlier SECRET_KEY verify while it is in SECRET_KEYS_PREVIOUS', async () => {
    const rotated = new SecretBox(randomBytes(32), [testConfig().secretKey!]);
    assert.deepEqual(await verifyAudit(db(), rotated), { ok: true, checked: 18, chains: 2, checkpoints: { stored: 0, given: [] } });
    const forgotten = await verifyAudit(db(), new SecretBox(randomBytes(32)));
    assert.deepEqual(forgotten.brokenAt, { seq: String(chainA[0]!.seq), reason: `the row is hashed under a SECRET_KEY this server does not hold (key id ${box.keyId}): set the key it was written with in SECRET_KEYS_PREVIOUS, or the row was forged` });
  });

  it('a checkpoint names every chain head with its count, signed with our RS256 key', async () => {
    checkpoint = await createCheckpoint(db(), box, TEST_ISSUER);
    const active = await activeSigningKey(db(), box, 'RS256');
    assert.deepEqual(checkpoint.header, { alg: 'RS256', kid: active.kid, typ: CHECKPOINT_TYPE });
    assert.equal(checkpoint.claims.iss, TEST_ISSUER);
    assert.equal(checkpoint.claims.total, 18);
    const heads = [chainA.at(-1)!, chainB.at(-1)!].map((r) => ({ chain: r.chain, seq: String(r.seq), hash: r.hash, count: r === chainA.at(-1) ? 15 : 3 }));
    assert.deepEqual([...checkpoint.claims.chains].sort((a, b) => Number(a.seq) - Number(b.seq)), heads.sort((a, b) => Number(a.seq) - Number(b.seq)));
    assert.deepEqual(checkpoint.key, { ...(await exportJWK(active.publicKey)), kid: active.kid, alg: 'RS256', use: 'sig' });
    // Events written after it.
    for (let i = 15; i < 18; i++) await app.runtime.audit.record({ type: 'admin.request', actorType: 'admin', details: { i } });
    const result = await verifyAudit(db(), box, { checkpoints: [{ source: 'exported checkpoint', jws: checkpoint.jws }] });
    assert.equal(result.ok, true, JSON.stringify(result.refused));
    assert.deepEqual(result.checkpoints.given, [{ issuedAt: new Date(checkpoint.claims.iat * 1000), total: 18, chains: 2 }]);
    assert.equal(result.checkpoints.stored, 1);
  });

  it('the newest rows deleted: the chain walk cannot see it, the checkpoints do, the exported one even when the stored ones are deleted too', async () => {
    const head = chainA.at(-1)!;
    await asAttacker(db(), async (trx) => {
      await trx.deleteFrom('audit_events').where('chain', '=', head.chain).where(sql<string>`seq`, '>=', String(head.seq)).execute();
      const missing = `the trail does not match it: event ${String(head.seq)}, the head of chain ${JSON.stringify(head.chain)} (15 events) it names, is no longer in the trail (rows were removed)`;
      const exported = [{ source: 'exported checkpoint', jws: checkpoint.jws }];
      const withStored = await verifyAudit(trx, box, { checkpoints: exported });
      assert.equal(withStored.brokenAt, undefined, 'rows removed from the end leave the chain whole');
      assert.deepEqual([withStored.ok, withStored.refused], [false, { checkpoint: `stored checkpoint ${checkpoint.id}`, reason: missing }]);

      await trx.deleteFrom('audit_checkpoints').execute();
      const exportedOnly = await verifyAudit(trx, box, { checkpoints: exported });
      assert.deepEqual([exportedOnly.ok, exportedOnly.refused], [false, { checkpoint: 'exported checkpoint', reason: missing }]);
      // What no checkpoint names, nothing can vouch for.
      assert.equal((await verifyAudit(trx, box)).ok, true);
    });
  });

  it('a whole chain deleted: the checkpoint names its head', async () => {
    const head = chainB.at(-1)!;
    await asAttacker(db(), async (trx) => {
      await trx.deleteFrom('audit_events').where('chain', '=', head.chain).execute();
      await trx.deleteFrom('audit_checkpoints').execute();
      const result = await verifyAudit(trx, box, { checkpoints: [{ source: 'exported checkpoint', jws: checkpoint.jws }] });
      assert.deepEqual([result.ok, result.brokenAt, result.checked, result.chains], [false, undefined, 18, 1]);
      assert.deepEqual(result.refused, { checkpoint: 'exported checkpoint', reason: `the trail does not match it: event ${String(head.seq)}, the head of chain ${JSON.stringify(head.chain)} (3 events) it names, is no longer in the trail (rows were removed)` });
    });
  });

  it('refuses a checkpoint signed by a key not ours, a public key swapped on our key\'s row, and a JWS of another type', async () => {
    const attacker = await generateKeyPair('RS256', { extractable: true });
    const forge = (kid: string, typ = CHECKPOINT_TYPE) => new CompactSign(new TextEncoder().encode(JSON.stringify({ ...checkpoint.claims, total: 17, chains: checkpoint.claims.chains.map((c) => (c.chain === chainB[0]!.chain ? c : { ...c, count: 14 })) }))).setProtectedHeader({ alg: 'RS256', kid, typ });
    const ours = await activeSigningKey(db(), box, 'RS256');
    await asAttacker(db(), async (trx) => {
      // A key row of their own, its private part sealed under a SecretBox of their own.
      const privateJwk = await exportJWK(attacker.privateKey);
      await trx.insertInto('signing_keys').values({ kid: 'attacker', alg: 'RS256', state: 'retired', public_jwk: JSON.stringify(await exportJWK(attacker.publicKey)), private_jwk: new SecretBox(randomBytes(32)).seal(JSON.stringify(privateJwk), 'signing-key', 'attacker') }).execute();
      const theirs = await forge('attacker').sign(attacker.privateKey);
      await trx.insertInto('audit_checkpoints').values({ kid: 'attacker', jws: theirs }).execute();
      const stored = await verifyAudit(trx, box);
      assert.equal(stored.ok, false);
      assert.match(stored.refused!.checkpoint, /^stored checkpoint \d+$/);
      assert.equal(stored.refused!.reason, 'it is refused: signed by a key that is not ours (kid attacker: none of our signing keys, or one whose private part does not open under SECRET_KEY)');
    });
    await asAttacker(db(), async (trx) => {
      // Our row, its public key replaced by theirs: the key is derived from the sealed private part.
      await trx.updateTable('signing_keys').set({ public_jwk: JSON.stringify({ ...(await exportJWK(attacker.publicKey)), kid: ours.kid }) }).where('kid', '=', ours.kid).execute();
      const swapped = await verifyAudit(trx, box, { checkpoints: [{ source: 'given', jws: await forge(ours.kid).sign(attacker.privateKey) }] });
      assert.deepEqual(swapped.refused, { checkpoint: 'given', reason: `it is refused: the signature does not verify with our key ${ours.kid}` });
    });
    const otherType = await verifyAudit(db(), box, { checkpoints: [{ source: 'given', jws: await forge(ours.kid, 'JWT').sign(ours.privateKey) }] });
    assert.deepEqual(otherType.refused, { checkpoint: 'given', reason: 'it is refused: typ is "JWT", not audit-checkpoint+jwt' });
    const garbage = await verifyAudit(db(), box, { checkpoints: [{ source: 'given', jws: 'not.a.jws' }] });
    assert.deepEqual(garbage.refused, { checkpoint: 'given', reason: 'it is refused: not a compact JWS' });
  });

  it('checkpoints stay verifiable after their key is retired and retired keys are pruned; the key is no longer published', async () => {
    const signer = checkpoint.header.kid;
    const rotate = () => rotateSigningKeys(db(), box, { algs: ['RS256'], force: true, minPublishedSeconds: 0, retiredPublishSeconds: 0 });
    const [first] = await rotate();
    const [second] = await rotate();
    assert.deepEqual([first!.retired, second!.retired], [signer, first!.activated]);
    await db().updateTable('signing_keys').set({ publish_until: sql<Date>`now() - interval '1 second'` }).where('state', '=', 'retired').execute();
    assert.equal(await pruneRetiredKeys(db()), 1, 'the retired key that signed no checkpoint goes');
    assert.deepEqual((await listSigningKeys(db())).filter((k) => k.state === 'retired').map((k) => k.kid), [signer]);
    assert.ok(!(await loadSigningKeys(db(), box)).rows.some((r) => r.kid === signer), 'not published');
    const result = await verifyAudit(db(), box, { checkpoints: [{ source: 'exported checkpoint', jws: checkpoint.jws }] });
    assert.equal(result.ok, true, JSON.stringify(result.refused));
    assert.equal(result.checkpoints.stored, 1);
  });
});

describeEachDatabase('scheduled audit checkpoints', (ctx) => {
  it('one when due and something was audited since, whatever a stored checkpoint that does not verify says', async () => {
    const app = await testApp(ctx.current.database, { AUDIT_CHECKPOINT_SECONDS: '1' });
    const { maintenance, audit } = app.runtime;
    try {
      assert.equal(await maintenance.auditCheckpoint(), undefined, 'nothing audited yet');
      await audit.record({ type: 'admin.request', actorType: 'system' });
      const first = await maintenance.auditCheckpoint();
      assert.equal(first?.claims.total, 1);
      assert.equal(await maintenance.auditCheckpoint(), undefined, 'the newest is younger than the interval');
      await new Promise((resolve) => setTimeout(resolve, 1000));
      assert.equal(await maintenance.auditCheckpoint(), undefined, 'nothing audited since the newest');
      await audit.record({ type: 'admin.request', actorType: 'system' });
      await ctx.current.database.db.insertInto('audit_checkpoints').values({ kid: 'attacker', jws: 'forged.checkpoint.jws' }).execute();
      assert.equal((await maintenance.auditCheckpoint())?.claims.total, 2, 'the forged newest does not count');
    } finally {
      await app.close();
    }
  });
});
