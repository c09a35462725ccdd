import { randomBytes } from 'node:crypto';

import { decodeProtectedHeader } from 'jose';
import type Provider from 'oidc-provider';
import type { Client, ClientMetadata, KoaContextWithOIDC } from 'oidc-provider';
import type { Kysely } from 'kysely';

import { splitScopes } from '../smart/scopes/scope.js';
import { registeredScopes } from './resource-server.js';
import { bearerToken } from '../security/bearer.js';
import { oidcOf } from './context.js';
import { ROUTES } from '../smart/profile.js';
import type { DB } from '../db/schema.js';
import { patientNoLongerActedFor } from './smart-launch.js';

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

/** Koa middleware (before oidc-provider's router): lets a Bearer token with `introspect` authenticate. */
export function bearerIntrospection(provider: Provider, internalAuthorization: string) {
  return async (ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> => {
    if (ctx.method !== 'POST' || ctx.path !== ROUTES.introspection) return next();
    const token = bearerToken(ctx.get('authorization'));
    if (!token) return next();
    const problem = await bearerProblem(provider, token);
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
  // A suspended or removed client's tokens are stored still, but worth nothing (the client adapter hides it).
  if (!token.clientId || !(await provider.Client.find(token.clientId))) return 'the access token was issued to a client that is suspended or removed';
  return undefined;
}

/**
 * RFC 7662 §2.2: a token that is not an access token of this server, whatever it is, is `{"active": false}`.
 * oidc-provider refuses every JWT with 400 `unsupported_token_type` instead; for a JWT that is not an access
 * token (an id_token, a client assertion, anything else) that answer becomes the inactive one. Our own JWT
 * access tokens (RFC 9068, `typ: at+jwt`, opt-in per FHIR base) keep the refusal: they are verified by
 * signature where they are used, and saying "inactive" of a valid one would be false.
 */
export function inactiveForForeignTokens() {
  return async (ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> => {
    await next();
    const body = ctx.body as { error?: unknown } | undefined;
    if (oidcOf(ctx)?.route === 'introspection' && ctx.status === 400 && body?.error === 'unsupported_token_type' && !isJwtAccessToken(ctx.oidc.params?.token)) {
      ctx.status = 200;
      ctx.body = { active: false };
    }
  };
}

function isJwtAccessToken(token: unknown): boolean {
  if (typeof token !== 'string') return false;
  try {
    return decodeProtectedHeader(token).typ?.toLowerCase() === 'at+jwt';
  } catch {
    return false;
  }
}

/**
 * Who may learn about a token: the client it was issued to; a client registered for `introspect` (a
 * resource server), about any token; and a caller that presented an `introspect` token, likewise.
 *
 * Refused (so `{"active": false}`, RFC 7662 §2.2) for a token of a user who may no longer act for the patient
 * in its context, and for a token whose client is suspended or removed: its rows
 * stay until they expire, but the client no longer exists for oidc-provider, which would otherwise answer
 * `active: true` for it, or fail on the missing client (a 500) where the token has a user.
 */
export async function introspectionAllowed(db: Kysely<DB>, ctx: KoaContextWithOIDC, client: Client, token: { clientId?: string; accountId?: string; grantId?: string }): Promise<boolean> {
  if (token.clientId !== client.clientId && (!token.clientId || !(await ctx.oidc.provider.Client.find(token.clientId)))) return false;
  // A token whose patient the user may no longer act for (a representative's designation ended) reaches no one at
  // the gateway: a resource server asking here must not be told it is active for that patient.
  if (await patientNoLongerActedFor(db, ctx, token)) return false;
  if (client.clientId === BEARER_INTROSPECTION_CLIENT_ID) return true;
  if (registeredScopes(client)?.some((s) => s.kind === 'fixed' && s.name === 'introspect')) return true;
  return token.clientId === client.clientId;
}
