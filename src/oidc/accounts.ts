import type { Kysely } from 'kysely';
import type { Account, KoaContextWithOIDC } from 'oidc-provider';

import { fhirBaseOf, type Config } from '../config/config.js';
import type { DB } from '../db/schema.js';
import type { UserCache } from '../users/user-cache.js';
import { oidcOf, stateOf } from './context.js';

/**
 * oidc-provider's `findAccount`: the user behind a session or token, or undefined when the user no
 * longer exists or was disabled (which ends their sessions and invalidates their tokens).
 */
export async function findAccount(db: Kysely<DB>, users: UserCache, config: Config, ctx: KoaContextWithOIDC, sub: string): Promise<Account | undefined> {
  const prefetched = stateOf(ctx).prefetchedUser;
  const user = prefetched?.id === sub ? prefetched.user : await users.find(db, sub);
  if (!user) return undefined;
  return {
    accountId: user.id,
    claims: () => ({
      sub: user.id,
      // SMART App Launch 2.2 §fhirUser: an absolute URL of the user's FHIR resource, under the FHIR base
      // the token is for.
      fhirUser: `${fhirBaseFor(config, ctx)}/${user.fhirUser}`,
      name: user.name,
    }),
  };
}

/**
 * The FHIR base of the request being served: the audience of the access token it issues (a code exchange or a
 * refresh names no `aud`: the token is for the FHIR server of its grant), else its `aud`/`resource` when it is
 * one of ours, else the first configured.
 */
function fhirBaseFor(config: Config, ctx: KoaContextWithOIDC): string {
  const oidc = oidcOf(ctx);
  const params = oidc?.params;
  const candidates = [oidc?.entities.AccessToken?.aud, params?.aud, params?.resource].flat();
  for (const candidate of candidates) {
    const base = typeof candidate === 'string' ? fhirBaseOf(config, candidate) : undefined;
    if (base) return base;
  }
  return config.fhirBaseUrls[0]!;
}
