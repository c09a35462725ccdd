import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Authenticated encryption at rest (AES-256-GCM) for private keys and client secrets.
 *
 * Each purpose ("signing-key", "client-secret", …) gets its own subkey derived with HKDF from SECRET_KEY, and
 * each value is bound to the row it belongs to through the GCM additional data, so a ciphertext copied onto
 * another row (or used for another purpose) does not decrypt. Sealed values name the key that sealed them,
 * so SECRET_KEY can be rotated: old keys stay readable through SECRET_KEYS_PREVIOUS.
 *
 * Format: `v1.<keyId>.<iv>.<ciphertext>.<tag>`, each part base64url.
 */
export class SecretBox {
  readonly #current: Key;
  readonly #byId: ReadonlyMap<string, Key>;
  /** The last value {@link bearerIds} hashed and its ids, kept until the next microtask. */
  #lastBearer: { readonly value: string; readonly ids: readonly string[] } | undefined;

  constructor(current: Buffer, previous: readonly Buffer[] = []) {
    this.#current = toKey(current);
    this.#byId = new Map([this.#current, ...previous.map(toKey)].map((k) => [k.id, k]));
  }

  /** Identifies the current key without revealing anything about it. */
  get keyId(): string {
    return this.#current.id;
  }

  seal(plaintext: string, purpose: string, context: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', subkey(this.#current, purpose), iv);
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return ['v1', this.#current.id, iv.toString('base64url'), ciphertext.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.');
  }

  /** @throws {SecretBoxError} when the value was sealed by an unknown key, for another row or purpose, or altered. */
  open(sealed: string, purpose: string, context: string): string {
    const [version, keyId, iv, ciphertext, tag, ...rest] = sealed.split('.');
    if (version !== 'v1' || !keyId || !iv || ciphertext === undefined || !tag || rest.length) {
      throw new SecretBoxError('sealed value is malformed');
    }
    const key = this.#byId.get(keyId);
    if (!key) throw new SecretBoxError(`sealed with an unknown key (${keyId}); is SECRET_KEY the one this database was created with?`);
    try {
      const decipher = createDecipheriv('aes-256-gcm', subkey(key, purpose), Buffer.from(iv, 'base64url'));
      decipher.setAAD(Buffer.from(context, 'utf8'));
      decipher.setAuthTag(Buffer.from(tag, 'base64url'));
      return Buffer.concat([decipher.update(Buffer.from(ciphertext, 'base64url')), decipher.final()]).toString('utf8');
    } catch {
      throw new SecretBoxError('sealed value failed authentication (altered, or sealed for another record)');
    }
  }

  /** A MAC of `data` under a subkey for `purpose` (base64url): for tokens that must not be forged, such as CSRF tokens. */
  mac(purpose: string, data: string): string {
    return this.macWith(this.#current.id, purpose, data)!.toString('base64url');
  }

  /**
   * A MAC of `data` under the subkey for `purpose` of the key `keyId`, or undefined when that key is neither
   * SECRET_KEY nor one of SECRET_KEYS_PREVIOUS: for MACs stored with the id of their key (the audit chain),
   * which must stay verifiable after SECRET_KEY changes.
   */
  macWith(keyId: string, purpose: string, data: string): Buffer | undefined {
    const key = this.#byId.get(keyId);
    return key && createHmac('sha256', subkey(key, purpose)).update(data).digest();
  }

  /** Whether `given` is the MAC of `data` for `purpose`, compared in constant time. */
  verifyMac(purpose: string, data: string, given: string): boolean {
    const expected = Buffer.from(this.mac(purpose, data));
    const actual = Buffer.from(given);
    return expected.length === actual.length && timingSafeEqual(expected, actual);
  }

  /**
   * The keyed hash a bearer value (a token, code or launch id) is stored under: `<keyId>.<HMAC-SHA256>`, so that
   * the database alone never yields a usable value, and a value hashed under a previous key is still found.
   */
  bearerId(value: string): string {
    const last = this.#lastBearer;
    return last?.value === value ? last.ids[0]! : bearerIdUnder(this.#current, value);
  }

  /** Every form the value may be stored under: the current key's first, then each previous key's. */
  bearerIds(value: string): string[] {
    // oidc-provider looks a token up in three models at once (introspection, revocation: lib/helpers/
    // token_find.js), each adapter asking for the same value's ids in the same synchronous run. The last
    // answer is kept for that run only (cleared in the next microtask, before any other request runs).
    const last = this.#lastBearer;
    if (last?.value === value) return [...last.ids];
    const ids = [...this.#byId.values()].map((key) => bearerIdUnder(key, value));
    if (!last) queueMicrotask(() => (this.#lastBearer = undefined));
    this.#lastBearer = { value, ids };
    return [...ids];
  }

  /** Whether values may be stored under more than one key (SECRET_KEYS_PREVIOUS is set). */
  get hasPreviousKeys(): boolean {
    return this.#byId.size > 1;
  }

  /** True when the value was sealed by an earlier key and should be sealed again with the current one. */
  isStale(sealed: string): boolean {
    return sealed.split('.')[1] !== this.#current.id;
  }
}

export class SecretBoxError extends Error {
  override name = 'SecretBoxError';
}

interface Key {
  readonly id: string;
  readonly material: Buffer;
  readonly subkeys: Map<string, Buffer>;
}

function toKey(material: Buffer): Key {
  if (material.length !== 32) throw new TypeError('secret key must be 32 bytes');
  const id = createHmac('sha256', material).update('smart-auth key id').digest().subarray(0, 6).toString('base64url');
  return { id, material, subkeys: new Map() };
}

function bearerIdUnder(key: Key, value: string): string {
  return `${key.id}.${createHmac('sha256', subkey(key, 'bearer-id')).update(value).digest('base64url')}`;
}

function subkey(key: Key, purpose: string): Buffer {
  let derived = key.subkeys.get(purpose);
  if (!derived) {
    derived = Buffer.from(hkdfSync('sha256', key.material, Buffer.alloc(0), `smart-auth:${purpose}`, 32));
    key.subkeys.set(purpose, derived);
  }
  return derived;
}
