import type { IncomingMessage, ServerResponse } from 'node:http';

import type { JSONWebKeySet, JWK } from 'jose';
import type Provider from 'oidc-provider';

import { loadCookieKeys } from '../keys/cookie-keys.js';
import { loadSigningKeys } from '../keys/signing-keys.js';
import { createProvider, type ProviderDeps } from './provider.js';

type Callback = (req: IncomingMessage, res: ServerResponse) => Promise<void>;
export type HostDeps = Omit<ProviderDeps, 'signingKeys' | 'cookieKeys'>;

/**
 * Holds the live oidc-provider instance. oidc-provider reads its keys once, at construction, so a changed
 * key set (a rotation here or in another process, a retired key reaching the end of its publication) is
 * applied by building a new instance and swapping it in; requests already in flight finish on the old one.
 */
export class ProviderHost {
  #provider: Provider;
  #callback: Callback;
  #fingerprint: string;
  #verificationKeys: JSONWebKeySet;
  readonly #deps: HostDeps;

  private constructor(deps: HostDeps, built: Built) {
    this.#deps = deps;
    this.#provider = built.provider;
    this.#callback = built.provider.callback();
    this.#fingerprint = built.fingerprint;
    this.#verificationKeys = built.verificationKeys;
  }

  static async create(deps: HostDeps): Promise<ProviderHost> {
    return new ProviderHost(deps, await build(deps));
  }

  /** The public keys of every published signing key: what verifies the tokens this server signed. */
  get verificationKeys(): JSONWebKeySet {
    return this.#verificationKeys;
  }

  get provider(): Provider {
    return this.#provider;
  }

  /** The Node request handler of the current instance. */
  get callback(): Callback {
    return this.#callback;
  }

  /** Identifies the key set in use: kid and state of every published signing key, and the cookie keys. */
  get fingerprint(): string {
    return this.#fingerprint;
  }

  /**
   * Re-reads the keys from the database and swaps in a new provider when they changed.
   * @returns whether the provider was replaced.
   */
  async refresh(): Promise<boolean> {
    const built = await build(this.#deps, this.#fingerprint);
    if (!built) return false;
    this.#provider = built.provider;
    this.#callback = built.provider.callback();
    this.#fingerprint = built.fingerprint;
    this.#verificationKeys = built.verificationKeys;
    this.#deps.log.info({ keys: built.fingerprint }, 'key set changed; OAuth core reloaded');
    return true;
  }
}

interface Built {
  readonly provider: Provider;
  readonly fingerprint: string;
  readonly verificationKeys: JSONWebKeySet;
}

/** Members of a private JWK that its public form leaves out. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

async function build(deps: HostDeps): Promise<Built>;
async function build(deps: HostDeps, unlessFingerprint: string): Promise<Built | undefined>;
async function build(deps: HostDeps, unlessFingerprint?: string): Promise<Built | undefined> {
  const keyStore = deps.replica.db('signing-keys');
  const [signing, cookies] = await Promise.all([loadSigningKeys(keyStore, deps.box), loadCookieKeys(keyStore, deps.box)]);
  const fingerprint = [...signing.rows.map((r) => `${r.kid}:${r.state}`), ...cookies.ids.map((id) => `cookie:${id}`)].join(',');
  if (fingerprint === unlessFingerprint) return undefined;
  const provider = createProvider({ ...deps, signingKeys: signing.keys, cookieKeys: cookies.secrets });
  const keys = signing.keys.map((key) => Object.fromEntries(Object.entries(key).filter(([name]) => !PRIVATE_MEMBERS.includes(name))) as JWK);
  return { provider, fingerprint, verificationKeys: { keys } };
}
