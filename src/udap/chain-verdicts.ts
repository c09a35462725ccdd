import { createHash } from 'node:crypto';

import type { ChainCertificate } from '../smart/udap/certificates.js';

/**
 * Chains found good, kept per process so that a UDAP client's token requests do not parse and validate the
 * same x5c chain (signatures, issuers, CRLs) at every request. Keyed by the chain's DER values and the
 * community; bounded in number (least recently used dropped first) and in time by the earliest of
 *
 * - the freshness the CRL cache gives the CRLs consulted (no-store: not kept at all), and their nextUpdate,
 *   so that a revocation is seen no later than without this cache;
 * - the notAfter of every certificate of the path and of the anchor, so that an expired certificate is
 *   refused at the first use after it expires;
 * - {@link MAX_VERDICT_MS}.
 *
 * Only verdicts that a chain holds are kept: a refused chain is checked again at its next use. The JWT signed
 * with the chain's key is verified at every use; only the chain's verdict is reused.
 */
export const MAX_VERDICT_MS = 5 * 60_000;
export const MAX_VERDICTS = 1000;

/** At most this many certificates in x5c (parseX5c refuses more). */
const MAX_CHAIN = 10;

interface Verdict {
  readonly leaf: ChainCertificate;
  readonly from: number;
  readonly until: number;
}

export class ChainVerdicts {
  readonly #entries = new Map<string, Verdict>();
  readonly #max: number;

  constructor(max = MAX_VERDICTS) {
    this.#max = max;
  }

  /** The key of an `x5c` header: a hash of its DER values; undefined when x5c is malformed (parseX5c says why). */
  static keyOf(x5c: unknown): string | undefined {
    if (!Array.isArray(x5c) || x5c.length === 0 || x5c.length > MAX_CHAIN || !x5c.every((c) => typeof c === 'string')) return undefined;
    const hash = createHash('sha256');
    for (const text of x5c) {
      const der = Buffer.from(text, 'base64');
      hash.update(`${der.length}:`).update(der);
    }
    return hash.digest('base64url');
  }

  /** The leaf of a chain found good in that community, when the verdict still stands at `now` (ms). */
  get(key: string, community: string, now: number): ChainCertificate | undefined {
    const id = `${key} ${community}`;
    const verdict = this.#entries.get(id);
    if (!verdict) return undefined;
    this.#entries.delete(id);
    if (now < verdict.from || now >= verdict.until) return undefined;
    this.#entries.set(id, verdict);
    return verdict.leaf;
  }

  /** Keeps a good verdict until `until` (ms), capped at {@link MAX_VERDICT_MS}; nothing when that is not after `now`. */
  set(key: string, community: string, leaf: ChainCertificate, now: number, until: number): void {
    const end = Math.min(until, now + MAX_VERDICT_MS);
    if (end <= now) return;
    const id = `${key} ${community}`;
    this.#entries.delete(id);
    if (this.#entries.size >= this.#max) this.#entries.delete(this.#entries.keys().next().value!);
    this.#entries.set(id, { leaf, from: now, until: end });
  }

  get size(): number {
    return this.#entries.size;
  }
}
