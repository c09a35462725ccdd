import { randomBytes } from 'node:crypto';

import type Provider from 'oidc-provider';
import type { Client, ClientMetadata, KoaContextWithOIDC } from 'oidc-provider';

import { splitScopes } from '../smart/scopes/scope.js';
import { registeredScopes } from './resource-server.js';
import { ROUTES } from './routes.js';

/**
 * Introspection (RFC 7662, SMART App Launch 2.2 §Token Introspection). oidc-provider authenticates callers
 * as registered clients. SMART also lets a caller present an access token that carries the `introspect`
 * scope: that token is checked here, and the request then continues authenticated as a client that exists
 * only inside this process, with a secret generated at start-up that never leaves it.
 */
export const BEARER_INTROSPECTION_CLIENT_ID = 'urn:smart-auth:bearer-introspection';

export function bearerIntrospectionClient(): { metadata: ClientMetadata; authorization: string } {
  const secret = randomBytes(32).toString('base64url');
  return {
    metadata: {
      client_id: BEARER_INTROSPECTION_CLIENT_ID,
      client_secret: secret,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [],
      response_types: [],
      redirect_uris: [],
    },
    authorization: `Basic ${Buffer.from(`${encodeURIComponent(BEARER_INTROSPECTION_CLIENT_ID)}:${secret}`).toString('base64')}`,
  };
}

const BEARER = /^Bearer\s+([A-Za-z0-9._~+/-]+=*)\s*$/i;

/** Koa middleware (before oidc-provider's router): lets a Bearer token with `introspect` authenticate. */
export function bearerIntrospection(provider: Provider, internalAuthorization: string) {
  return async (ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> => {
    if (ctx.method !== 'POST' || ctx.path !== ROUTES.introspection) return next();
    const match = BEARER.exec(ctx.get('authorization'));
    if (!match) return next();
    const problem = await bearerProblem(provider, match[1]!);
    if (problem) {
      ctx.status = 401;
      ctx.set('www-authenticate', `Bearer error="invalid_token", error_description="${problem}"`);
      ctx.set('cache-control', 'no-store');
      ctx.body = { error: 'invalid_token', error_description: problem };
      return;
    }
    ctx.req.headers.authorization = internalAuthorization;
    return next();
  };
}

async function bearerProblem(provider: Provider, value: string): Promise<string | undefined> {
  const token = (await provider.AccessToken.find(value)) ?? (await provider.ClientCredentials.find(value));
  if (!token?.isValid) return 'the access token is unknown, expired or revoked';
  if (!splitScopes(token.scope).includes('introspect')) return 'the access token does not carry the introspect scope';
  return undefined;
}

/**
 * Who may learn about a token: the client it was issued to; a client registered for `introspect` (a
 * resource server), about any token; and a caller that presented an `introspect` token, likewise.
 */
export function introspectionAllowed(_ctx: KoaContextWithOIDC, client: Client, token: { clientId?: string }): boolean {
  if (client.clientId === BEARER_INTROSPECTION_CLIENT_ID) return true;
  if (registeredScopes(client)?.some((s) => s.kind === 'fixed' && s.name === 'introspect')) return true;
  return token.clientId === client.clientId;
}
