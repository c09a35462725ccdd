import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import Keygrip from 'keygrip';

import { CookieKeys } from '../src/security/cookie-keys.js';

describe('cookie keys', () => {
  const keys = ['newest-key-0123456789', 'older-key-9876543210'];
  const data = 'smart_session=Zm9vYmFy-_session-id';

  it("sign keygrip's signatures: cookies signed before the change verify after it, and the other way round", () => {
    const ours = new CookieKeys(keys);
    const theirs = new Keygrip(keys);
    assert.equal(ours.sign(data), theirs.sign(data));
    assert.match(ours.sign(data), /^[\w-]{27}$/);
    assert.equal(ours.index(data, theirs.sign(data)), 0);
    assert.equal(ours.index(data, new Keygrip([keys[1]!]).sign(data)), 1, 'a cookie signed with the older key');
    assert.equal(theirs.index(data, ours.sign(data)), 0);
  });

  it('refuse a signature of other data, of another key, altered, shortened or empty', () => {
    const ours = new CookieKeys(keys);
    const good = ours.sign(data);
    assert.equal(ours.index(`${data}x`, good), -1);
    assert.equal(ours.index(data, new CookieKeys(['another-key']).sign(data)), -1);
    assert.equal(ours.index(data, `${good.slice(0, -1)}${good.endsWith('A') ? 'B' : 'A'}`), -1);
    assert.equal(ours.index(data, good.slice(0, -1)), -1);
    assert.equal(ours.index(data, ''), -1);
    assert.equal(ours.verify(data, good), true);
    assert.equal(ours.verify(data, 'x'), false);
    assert.throws(() => new CookieKeys([]), /at least one key/);
  });
});
