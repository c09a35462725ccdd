import { ttlSeconds } from './jwks-cache.js';
import { OutboundError, outboundGet, type OutboundOptions, type OutboundResponse } from './outbound.js';

/**
 * The CRLs that UDAP certificates name (their CRL Distribution Points), fetched through the SSRF-safe client
 * and kept as long as their HTTP caching headers allow (no-store: fetched at each use), capped at a day.
 * A CRL that cannot be fetched is not cached: the chain that needs it is refused and the next attempt
 * fetches again. Concurrent uses share one fetch; the cache lives in each process and is bounded.
 */
export type CrlResult = { readonly der: Buffer } | { readonly error: string };

const MAX_ENTRIES = 500;
/** A CRL larger than this is refused (a CA's CRL of a few thousand entries is far smaller). */
export const CRL_MAX_BYTES = 4 * 1024 * 1024;

export class CrlCache {
  readonly #entries = new Map<string, { der: Buffer; expiresAt: number }>();
  readonly #inflight = new Map<string, Promise<CrlResult>>();
  readonly #fetch: (url: string) => Promise<OutboundResponse>;
  readonly #now: () => number;
  /** How many fetches were made: for tests and metrics. */
  fetches = 0;

  constructor(options: OutboundOptions, deps: { fetch?: (url: string) => Promise<OutboundResponse>; now?: () => number } = {}) {
    this.#fetch = deps.fetch ?? ((url) => outboundGet(url, options, 'application/pkix-crl, application/octet-stream'));
    this.#now = deps.now ?? Date.now;
  }

  async get(url: string): Promise<CrlResult> {
    const entry = this.#entries.get(url);
    if (entry && entry.expiresAt > this.#now()) return { der: entry.der };
    let pending = this.#inflight.get(url);
    if (!pending) {
      pending = this.#load(url).finally(() => this.#inflight.delete(url));
      this.#inflight.set(url, pending);
    }
    return pending;
  }

  /**
   * Until when (ms since the epoch) the CRL at `url` will be served from this cache without a fetch; undefined
   * when it is not cached (no-store, never fetched, expired). A decision drawn from it may be reused that long.
   */
  freshUntil(url: string): number | undefined {
    const expiresAt = this.#entries.get(url)?.expiresAt;
    return expiresAt !== undefined && expiresAt > this.#now() ? expiresAt : undefined;
  }

  /** Every URL's CRL, fetched together. */
  async getAll(urls: readonly string[]): Promise<Map<string, CrlResult>> {
    return new Map(await Promise.all(urls.map(async (url) => [url, await this.get(url)] as const)));
  }

  async #load(url: string): Promise<CrlResult> {
    this.fetches += 1;
    let response: OutboundResponse;
    try {
      response = await this.#fetch(url);
    } catch (error) {
      this.#entries.delete(url);
      return { error: error instanceof OutboundError ? error.message : `${url} could not be fetched` };
    }
    if (response.status !== 200) return { error: `${url} answered ${response.status}` };
    const now = this.#now();
    const ttl = ttlSeconds(response.headers, now);
    this.#entries.delete(url);
    if (ttl > 0) {
      if (this.#entries.size >= MAX_ENTRIES) this.#entries.delete(this.#entries.keys().next().value!);
      this.#entries.set(url, { der: response.body, expiresAt: now + ttl * 1000 });
    }
    return { der: response.body };
  }
}
