/**
 * Client metadata as the adapter last read it (secret opened), kept for a few seconds per process so that a
 * token request does not pay a query and a decryption for the client every time. Changes made through this
 * process (admin API, CLI, dynamic registration) drop the entry at once; another process sees them when its
 * entry expires, at most `ttlSeconds` later. A TTL of 0 turns the cache off.
 */
export class ClientCache<T> {
  readonly #ttlMs: number;
  readonly #max: number;
  readonly #entries = new Map<string, { value: T; expires: number }>();
  /** Moves on at every invalidation, so that a read begun before a change cannot store what it read. */
  #generation = 0;

  constructor(ttlSeconds: number, max = 10_000) {
    this.#ttlMs = ttlSeconds * 1000;
    this.#max = max;
  }

  get(clientId: string): T | undefined {
    const entry = this.#entries.get(clientId);
    if (!entry) return undefined;
    if (entry.expires > Date.now()) return entry.value;
    this.#entries.delete(clientId);
    return undefined;
  }

  /** Where a read of the database begins: pass it to `set` with what was read. */
  get generation(): number {
    return this.#generation;
  }

  set(clientId: string, value: T, readAt: number): void {
    if (!this.#ttlMs || readAt !== this.#generation) return;
    this.#entries.delete(clientId);
    // The oldest entry goes first: a Map iterates in insertion order.
    if (this.#entries.size >= this.#max) this.#entries.delete(this.#entries.keys().next().value!);
    this.#entries.set(clientId, { value, expires: Date.now() + this.#ttlMs });
  }

  invalidate(clientId: string): void {
    this.#generation++;
    this.#entries.delete(clientId);
  }

  clear(): void {
    this.#generation++;
    this.#entries.clear();
  }

  get size(): number {
    return this.#entries.size;
  }
}
