import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * The signatures of oidc-provider's cookies: keygrip's (HMAC-SHA1 under the newest key, base64url; the older keys
 * still verify), so the cookies browsers hold stay valid, compared with crypto.timingSafeEqual. keygrip compares
 * through tsscmp, which draws random bytes and computes two more HMACs at each comparison: about 1.5 % of the
 * server's CPU in a signed-in launch, where every request reads two or three signed cookies.
 */
export class CookieKeys {
  readonly #keys: readonly string[];

  constructor(keys: readonly string[]) {
    if (!keys.length) throw new Error('cookie signing needs at least one key');
    this.#keys = [...keys];
  }

  sign(data: string): string {
    return signature(this.#keys[0]!, data);
  }

  verify(data: string, digest: string): boolean {
    return this.index(data, digest) > -1;
  }

  /** The position of the key that signed `data` with `digest`, or -1. */
  index(data: string, digest: string): number {
    const given = Buffer.from(digest);
    for (let i = 0; i < this.#keys.length; i++) {
      const expected = Buffer.from(signature(this.#keys[i]!, data));
      // The length of a signature is public (27 characters): only equal lengths are compared, in constant time.
      if (given.length === expected.length && timingSafeEqual(given, expected)) return i;
    }
    return -1;
  }
}

const signature = (key: string, data: string): string => createHmac('sha1', key).update(data).digest('base64url');
