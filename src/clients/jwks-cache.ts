import type { JWK } from 'jose';

import { OutboundError, outboundGet, type OutboundOptions, type OutboundResponse } from './outbound.js';

/**
 * The key sets of clients registered by JWKS URL (SMART Backend Services §Registering a client).
 *
 * - A key set is kept no longer than its `Cache-Control` (or `Expires`) allows; `no-store` / `no-cache` mean
 *   it is fetched for each use. Without either header it is kept {@link DEFAULT_TTL_SECONDS}.
 * - An assertion naming a `kid` the cached set lacks makes it fetched again at once (the client rotated
 *   its keys), at most once per {@link REFETCH_INTERVAL_MS} per URL, so that a stream of bad `kid`s cannot
 *   turn this server into a load generator against the client's host.
 * - Concurrent uses share one fetch. The cache lives in each process and is bounded in size.
 */
export const DEFAULT_TTL_SECONDS = 300;
export const MAX_TTL_SECONDS = 24 * 3600;
export const REFETCH_INTERVAL_MS = 10_000;
const MAX_ENTRIES = 1000;

export type JwksResult = { readonly keys: readonly JWK[] } | { readonly error: string };

interface Entry {
  keys: readonly JWK[];
  expiresAt: number;
  /** When an unknown kid last made this set be fetched early; undefined if never. */
  refetchedForKidAt: number | undefined;
}

export class JwksCache {
  readonly #entries = new Map<string, Entry>();
  readonly #inflight = new Map<string, Promise<JwksResult>>();
  readonly #fetch: (url: string) => Promise<OutboundResponse>;
  readonly #now: () => number;

  constructor(options: OutboundOptions, deps: { fetch?: (url: string) => Promise<OutboundResponse>; now?: () => number } = {}) {
    this.#fetch = deps.fetch ?? ((url) => outboundGet(url, options, 'application/jwk-set+json, application/json'));
    this.#now = deps.now ?? Date.now;
  }

  /** The key set at `url`; fetched again when stale, or when it lacks `kid` (rate-limited). */
  async get(url: string, kid?: string): Promise<JwksResult> {
    const entry = this.#entries.get(url);
    const now = this.#now();
    let forced: number | undefined;
    if (entry && entry.expiresAt > now) {
      const knowsKid = kid === undefined || entry.keys.some((k) => k.kid === kid);
      if (knowsKid) return { keys: entry.keys };
      if (entry.refetchedForKidAt !== undefined && now - entry.refetchedForKidAt < REFETCH_INTERVAL_MS) return { keys: entry.keys };
      forced = now;
    }
    let pending = this.#inflight.get(url);
    if (!pending) {
      pending = this.#load(url, forced ?? entry?.refetchedForKidAt).finally(() => this.#inflight.delete(url));
      this.#inflight.set(url, pending);
    }
    return pending;
  }

  async #load(url: string, refetchedForKidAt: number | undefined): Promise<JwksResult> {
    let response: OutboundResponse;
    try {
      response = await this.#fetch(url);
    } catch (error) {
      this.#entries.delete(url);
      return { error: error instanceof OutboundError ? error.message : `${url} could not be fetched` };
    }
    const keys = parseJwks(url, response);
    if ('error' in keys) {
      this.#entries.delete(url);
      return keys;
    }
    const now = this.#now();
    if (this.#entries.size >= MAX_ENTRIES) this.#entries.delete(this.#entries.keys().next().value!);
    this.#entries.delete(url);
    this.#entries.set(url, { keys: keys.keys, refetchedForKidAt, expiresAt: now + ttlSeconds(response.headers, now) * 1000 });
    return keys;
  }
}

function parseJwks(url: string, response: OutboundResponse): JwksResult {
  if (response.status !== 200) return { error: `${url} answered ${response.status}, expected 200 with a JWK Set` };
  let body: unknown;
  try {
    body = JSON.parse(response.body.toString('utf8'));
  } catch {
    return { error: `${url} did not answer with JSON` };
  }
  const keys = (body as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'object' && k !== null && typeof (k as JWK).kty === 'string')) {
    return { error: `${url} did not answer with a JWK Set ({"keys": [ … ]})` };
  }
  // Private parts have no business in a published key set; refuse them rather than use them.
  if (keys.some((k: JWK) => k.d !== undefined)) return { error: `${url} publishes private key material` };
  return { keys: keys as JWK[] };
}

/** How long a response may be reused (RFC 9111 §4.2.1), capped; 0 means do not reuse. */
export function ttlSeconds(headers: OutboundResponse['headers'], now: number): number {
  const cacheControl = (headers['cache-control'] ?? '').toLowerCase();
  if (/(^|,)\s*(no-store|no-cache)\b/.test(cacheControl)) return 0;
  const maxAge = /(^|,)\s*max-age\s*=\s*"?(\d+)"?/.exec(cacheControl)?.[2];
  if (maxAge !== undefined) return Math.min(Number(maxAge), MAX_TTL_SECONDS);
  const expires = headers.expires ? Date.parse(headers.expires) : Number.NaN;
  if (!Number.isNaN(expires)) return Math.max(0, Math.min(Math.floor((expires - now) / 1000), MAX_TTL_SECONDS));
  return DEFAULT_TTL_SECONDS;
}
