import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';

import { SecretBox, SecretBoxError } from '../src/security/secret-box.js';

describe('SecretBox', () => {
  const key = randomBytes(32);
  const box = new SecretBox(key);

  it('round-trips a value and never stores it in clear', () => {
    const sealed = box.seal('the private key', 'signing-key', 'kid-1');
    assert.match(sealed, /^v1\.[A-Za-z0-9_-]{8}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    assert.ok(!sealed.includes('private'));
    assert.equal(box.open(sealed, 'signing-key', 'kid-1'), 'the private key');
    assert.notEqual(box.seal('the private key', 'signing-key', 'kid-1'), sealed, 'a fresh IV every time');
  });

  it('binds a value to its row and purpose', () => {
    const sealed = box.seal('s3cret', 'client-secret', 'client-a');
    assert.throws(() => box.open(sealed, 'client-secret', 'client-b'), SecretBoxError);
    assert.throws(() => box.open(sealed, 'signing-key', 'client-a'), SecretBoxError);
  });

  it('detects tampering', () => {
    const sealed = box.seal('s3cret', 'client-secret', 'client-a');
    const parts = sealed.split('.');
    const ct = Buffer.from(parts[3]!, 'base64url');
    ct[0] = ct[0]! ^ 1;
    parts[3] = ct.toString('base64url');
    assert.throws(() => box.open(parts.join('.'), 'client-secret', 'client-a'), /failed authentication/);
    assert.throws(() => box.open('garbage', 'client-secret', 'client-a'), /malformed/);
  });

  it('opens values sealed with a previous key and says they are stale', () => {
    const oldKey = randomBytes(32);
    const sealed = new SecretBox(oldKey).seal('s3cret', 'client-secret', 'c');
    const rotated = new SecretBox(randomBytes(32), [key, oldKey]);
    assert.equal(rotated.open(sealed, 'client-secret', 'c'), 's3cret');
    assert.equal(rotated.isStale(sealed), true);
    assert.equal(rotated.isStale(rotated.seal('x', 'p', 'c')), false);
  });

  it('MACs under a named key, the current or a previous one, and knows no other', () => {
    const oldKey = randomBytes(32);
    const old = new SecretBox(oldKey);
    const rotated = new SecretBox(randomBytes(32), [oldKey]);
    assert.deepEqual(rotated.macWith(old.keyId, 'audit-chain', 'data'), old.macWith(old.keyId, 'audit-chain', 'data'));
    assert.notDeepEqual(rotated.macWith(rotated.keyId, 'audit-chain', 'data'), old.macWith(old.keyId, 'audit-chain', 'data'));
    assert.notDeepEqual(old.macWith(old.keyId, 'csrf', 'data'), old.macWith(old.keyId, 'audit-chain', 'data'), 'a subkey per purpose');
    assert.equal(old.macWith(rotated.keyId, 'audit-chain', 'data'), undefined);
    assert.equal(rotated.mac('csrf', 'data'), rotated.macWith(rotated.keyId, 'csrf', 'data')!.toString('base64url'));
  });

  it('names an unknown key instead of failing obscurely', () => {
    const sealed = new SecretBox(randomBytes(32)).seal('s3cret', 'p', 'c');
    assert.throws(() => box.open(sealed, 'p', 'c'), /sealed with an unknown key \([A-Za-z0-9_-]{8}\); is SECRET_KEY the one this database was created with\?/);
  });

  it('hashes bearer values under every key, the same in one run as across runs, whatever a caller does to the answer', async () => {
    const current = randomBytes(32);
    const previous = randomBytes(32);
    const rotated = new SecretBox(current, [previous]);
    const fresh = (value: string) => [new SecretBox(current).bearerId(value), new SecretBox(previous).bearerId(value)];
    // Each value alone, as a new box computes it.
    const [a, b] = [fresh('token-a'), fresh('token-b')];
    assert.notDeepEqual(a, b);
    // In one synchronous run: the same value asked again (three models looking up one token), then another.
    const first = rotated.bearerIds('token-a');
    first.pop();
    assert.deepEqual(rotated.bearerIds('token-a'), a, 'a caller changing its answer changes no later one');
    assert.equal(rotated.bearerId('token-a'), a[0]);
    assert.deepEqual(rotated.bearerIds('token-b'), b);
    assert.equal(rotated.bearerId('token-b'), b[0]);
    assert.equal(rotated.bearerId('token-a'), a[0], 'the single id of another value is its own');
    assert.deepEqual(rotated.bearerIds('token-a'), a);
    await Promise.resolve();
    assert.deepEqual(rotated.bearerIds('token-b'), b, 'and in the next run');
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual([rotated.bearerId('token-a'), rotated.bearerIds('token-a')], [a[0], a]);
  });
});
