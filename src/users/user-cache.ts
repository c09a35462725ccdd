import type { Kysely } from 'kysely';

import { ClientCache } from '../clients/client-cache.js';
import type { DB } from '../db/schema.js';
import { findUser, type User } from './users.js';

/**
 * Enabled users as {@link findUser} reads them, kept `USER_CACHE_SECONDS` per process: a launch asked for
 * the same user row at each of its requests. A change made through this process (admin API, console, CLI)
 * drops the entry at once; another process serves its copy until it expires, at most that many seconds.
 * Disabling a user waits for nothing: it deletes the user's sessions and grants in the same transaction,
 * so no session or token is left to find the cached user through. A user not found is not cached.
 */
export class UserCache {
  readonly #cache: ClientCache<User>;

  constructor(ttlSeconds: number) {
    this.#cache = new ClientCache<User>(ttlSeconds);
  }

  async find(db: Kysely<DB>, id: string): Promise<User | undefined> {
    const cached = this.#cache.get(id);
    if (cached) return cached;
    const readAt = this.#cache.generation;
    const user = await findUser(db, id);
    if (user) this.#cache.set(id, user, readAt);
    return user;
  }

  /** Where a read that may {@link prime} the cache starts: a change made meanwhile keeps what it read out. */
  get generation(): number {
    return this.#cache.generation;
  }

  /** A user read elsewhere (the sign-in reads the whole row by user name): the next step finds it here. */
  prime(user: User, readAt: number): void {
    this.#cache.set(user.id, user, readAt);
  }

  invalidate(id: string): void {
    this.#cache.invalidate(id);
  }
}
