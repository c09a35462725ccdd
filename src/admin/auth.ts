import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import type { ProviderHost } from '../oidc/provider-host.js';
import { bearerToken, sameSecret } from '../security/bearer.js';
import { splitScopes } from '../smart/scopes/scope.js';
import { ADMIN_ROLE, findUser } from '../users/users.js';

/**
 * Who may call the admin API: the holder of ADMIN_TOKEN, or an access token of this server that carries
 * `admin` (everything) or `ehr-launch` (creating launches only: an EHR's own backend client, so that it does
 * not hold the admin token). Checked in onRequest, before the body is read or validated: 401 before any 400.
 * A token issued on behalf of a person carries `admin` only as far as that person may administer the server:
 * their account must be enabled and hold the `admin` role now, whatever scope they consented to; a person
 * cannot hand an app more authority than they have.
 */
export const ADMIN_SCOPE = 'admin';
export const EHR_LAUNCH_SCOPE = 'ehr-launch';

export interface AdminActor {
  readonly type: 'admin' | 'client';
  /** `admin-token`, or the client_id the access token was issued to. */
  readonly id: string;
  readonly scopes: readonly string[];
}

declare module 'fastify' {
  interface FastifyRequest {
    adminActor?: AdminActor;
  }
  interface FastifyContextConfig {
    /** The scope a route needs besides ADMIN_TOKEN; `admin` when unset. */
    adminScope?: typeof ADMIN_SCOPE | typeof EHR_LAUNCH_SCOPE;
  }
}

export function adminAuthentication(adminToken: string | undefined, host: ProviderHost, db: Kysely<DB>) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const token = bearerToken(request.headers.authorization);
    const refuse = (status: 401 | 403, error: string, description: string) => {
      void reply
        .code(status)
        .header('www-authenticate', `Bearer realm="admin", error="${error}", error_description="${description}"`)
        .header('cache-control', 'no-store')
        .send({ error, error_description: description });
    };
    if (!token) {
      refuse(401, 'invalid_token', 'send Authorization: Bearer with ADMIN_TOKEN or an access token carrying the admin scope');
      return reply;
    }
    if (adminToken && sameSecret(token, adminToken)) {
      request.adminActor = { type: 'admin', id: 'admin-token', scopes: [ADMIN_SCOPE] };
      return;
    }
    const accessToken = (await host.provider.AccessToken.find(token)) ?? (await host.provider.ClientCredentials.find(token));
    // A suspended or removed client's tokens are stored still; the client adapter no longer finds the client.
    if (!accessToken?.isValid || !accessToken.clientId || !(await host.provider.Client.find(accessToken.clientId))) {
      refuse(401, 'invalid_token', 'the token is not ADMIN_TOKEN, nor an active access token of an active client of this server');
      return reply;
    }
    const scopes = splitScopes(accessToken.scope);
    const needed = request.routeOptions.config.adminScope ?? ADMIN_SCOPE;
    if (!scopes.includes(ADMIN_SCOPE) && !scopes.includes(needed)) {
      refuse(403, 'insufficient_scope', `this request needs an access token with the ${needed} scope`);
      return reply;
    }
    const accountId = 'accountId' in accessToken && typeof accessToken.accountId === 'string' ? accessToken.accountId : undefined;
    if (accountId !== undefined && scopes.includes(ADMIN_SCOPE)) {
      // The person as they are now: findUser knows no disabled user.
      const person = await findUser(db, accountId);
      if (!person?.roles.includes(ADMIN_ROLE)) {
        refuse(403, 'insufficient_scope', 'this access token acts for a person who does not hold the admin role: only an administrator can let an app administer this server');
        return reply;
      }
    }
    request.adminActor = { type: 'client', id: accessToken.clientId ?? 'unknown', scopes };
  };
}
