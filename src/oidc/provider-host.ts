import type { IncomingMessage, ServerResponse } from 'node:http';

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
  readonly #deps: HostDeps;

  private constructor(deps: HostDeps, provider: Provider, fingerprint: string) {
    this.#deps = deps;
    this.#provider = provider;
    this.#callback = provider.callback();
    this.#fingerprint = fingerprint;
  }

  static async create(deps: HostDeps): Promise<ProviderHost> {
    const { provider, fingerprint } = await build(deps);
    return new ProviderHost(deps, provider, fingerprint);
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
    const { provider, fingerprint } = await build(this.#deps, this.#fingerprint);
    if (!provider) return false;
    this.#provider = provider;
    this.#callback = provider.callback();
    this.#fingerprint = fingerprint;
    this.#deps.log.info({ keys: fingerprint }, 'key set changed; OAuth core reloaded');
    return true;
  }
}

async function build(deps: HostDeps): Promise<{ provider: Provider; fingerprint: string }>;
async function build(deps: HostDeps, unlessFingerprint: string): Promise<{ provider: Provider | undefined; fingerprint: string }>;
async function build(deps: HostDeps, unlessFingerprint?: string): Promise<{ provider: Provider | undefined; fingerprint: string }> {
  const [signing, cookies] = await Promise.all([loadSigningKeys(deps.db, deps.box), loadCookieKeys(deps.db, deps.box)]);
  const fingerprint = [...signing.rows.map((r) => `${r.kid}:${r.state}`), ...cookies.ids.map((id) => `cookie:${id}`)].join(',');
  if (fingerprint === unlessFingerprint) return { provider: undefined, fingerprint };
  const provider = createProvider({ ...deps, signingKeys: signing.keys, cookieKeys: cookies.secrets });
  return { provider, fingerprint };
}
