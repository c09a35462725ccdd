import assert from 'node:assert/strict';
import { afterEach, describe, it, mock } from 'node:test';

import { ClientCache } from '../src/clients/client-cache.js';

describe('ClientCache', () => {
  afterEach(() => mock.timers.reset());

  it('keeps an entry for its TTL, then forgets it', () => {
    mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
    const cache = new ClientCache<string>(5);
    cache.set('a', 'one', cache.generation);
    mock.timers.tick(4999);
    assert.equal(cache.get('a'), 'one');
    mock.timers.tick(1);
    assert.equal(cache.get('a'), undefined);
    assert.equal(cache.size, 0, 'an expired entry is dropped when met');
  });

  it('keeps nothing with a TTL of 0', () => {
    const cache = new ClientCache<string>(0);
    cache.set('a', 'one', cache.generation);
    assert.equal(cache.get('a'), undefined);
    assert.equal(cache.size, 0);
  });

  it('drops an entry on change, and refuses what a read begun before the change brings back', () => {
    const cache = new ClientCache<string>(5);
    cache.set('a', 'old', cache.generation);
    const readAt = cache.generation; // a request starts reading the client…
    cache.invalidate('a'); // …an administrator suspends it meanwhile…
    assert.equal(cache.get('a'), undefined);
    cache.set('a', 'old', readAt); // …and the request's read, from before the change, is not kept.
    assert.equal(cache.get('a'), undefined);
    cache.set('a', 'new', cache.generation);
    assert.equal(cache.get('a'), 'new');
    cache.clear();
    assert.equal(cache.size, 0);
  });

  it('holds at most its maximum, the oldest going first', () => {
    const cache = new ClientCache<number>(60, 3);
    for (const [i, id] of ['a', 'b', 'c', 'd'].entries()) cache.set(id, i, cache.generation);
    assert.equal(cache.size, 3);
    assert.deepEqual(['a', 'b', 'c', 'd'].map((id) => cache.get(id)), [undefined, 1, 2, 3]);
    cache.set('b', 10, cache.generation); // set again: now the newest
    cache.set('e', 4, cache.generation);
    assert.deepEqual(['b', 'c', 'd', 'e'].map((id) => cache.get(id)), [10, undefined, 3, 4]);
  });
});
