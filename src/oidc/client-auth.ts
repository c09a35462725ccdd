import { errors, type Client } from 'oidc-provider';

import { REGISTERED_JWKS_URI, UDAP_ISS_PROPERTY } from '../smart/client-rules.js';
import { UDAP_SIGNING_ALGS } from '../smart/udap/metadata.js';

/**
 * SMART's rules for `private_key_jwt` client assertions (SMART App Launch 2.2 §Client Authentication:
 * Asymmetric, and §Backend Services) that oidc-provider does not check itself. It calls this after it has
 * verified the signature and checked `iss`, `exp` (not past), `jti` present and `aud` (the token endpoint, as
 * SMART says, the endpoint called, or the issuer, as RFC 7523bis asks and current OAuth libraries send), and before it records the `jti` (see {@link ReplayDetectionAdapter}).
 * Every failure is `invalid_client` with a description that says what to fix.
 */

/** The alg SMART requires servers to accept; RS256 and ES256 only from clients registered for them. */
const ALWAYS_ACCEPTED_ALGS = new Set(['RS384', 'ES384']);
const MAX_LIFETIME_SECONDS = 300;

export function assertClientAssertion(
  clockSkewSeconds: number,
  claims: Record<string, unknown>,
  header: Record<string, unknown>,
  client: Client,
): void {
  const fail = (detail: string): never => {
    throw new errors.InvalidClientAuth(`client assertion rejected: ${detail}`);
  };
  const alg = String(header.alg);
  if (typeof (client as unknown as Record<string, unknown>)[UDAP_ISS_PROPERTY] === 'string') {
    assertUdapAssertion(clockSkewSeconds, claims, header, client, fail);
    return;
  }
  if (!ALWAYS_ACCEPTED_ALGS.has(alg) && client.clientAuthSigningAlg !== alg) {
    fail(`alg ${alg} is accepted only from clients registered with token_endpoint_auth_signing_alg ${alg}; sign with RS384 or ES384`);
  }
  if (typeof header.kid !== 'string' || header.kid === '') fail('the kid header is required');
  if (header.typ !== undefined && header.typ !== 'JWT') fail(`the typ header must be JWT, not ${JSON.stringify(header.typ)}`);
  if (header.typ === undefined) fail('the typ header is required and must be JWT');
  const registered = (client as unknown as Record<string, unknown>)[REGISTERED_JWKS_URI];
  const registeredJku = typeof registered === 'string' ? registered : undefined;
  if (header.jku !== undefined && header.jku !== registeredJku) {
    fail(registeredJku ? `jku ${JSON.stringify(header.jku)} is not the registered jwks_uri ${registeredJku}` : 'jku is not accepted: this client has no registered jwks_uri');
  }
  if (claims.sub !== client.clientId) fail(`sub must equal iss and the client_id (${client.clientId})`);

  const now = Math.floor(Date.now() / 1000);
  const exp = claims.exp as number;
  if (exp > now + MAX_LIFETIME_SECONDS + clockSkewSeconds) fail(`exp is ${exp - now} s in the future; at most ${MAX_LIFETIME_SECONDS} s (5 minutes) is allowed`);

  const keys = ((client.metadata() as { jwks?: { keys?: { kid?: string; kty?: string }[] } }).jwks?.keys ?? []).filter((k) => k.kid === header.kid && k.kty === ktyOf(alg));
  if (keys.length !== 1) fail(`${keys.length} keys of type ${ktyOf(alg)} have kid ${String(header.kid)} in the client's key set; exactly one must`);
}

/**
 * A UDAP client (HL7 UDAP Security IG §5.2.1, §7.1): signed with the key of its certificate, sent in `x5c`
 * (whose chain the client adapter validated against the community before handing oidc-provider that key),
 * RS256 accepted as UDAP requires, `iat` required and `exp` at most 5 minutes after it.
 */
function assertUdapAssertion(clockSkewSeconds: number, claims: Record<string, unknown>, header: Record<string, unknown>, client: Client, fail: (detail: string) => never): void {
  const alg = String(header.alg);
  if (!(UDAP_SIGNING_ALGS as readonly string[]).includes(alg)) fail(`alg ${alg} is not accepted; use ${UDAP_SIGNING_ALGS.join(', ')}`);
  if (!Array.isArray(header.x5c)) fail('a UDAP client signs with the key of its certificate, sent with its chain in the x5c header');
  if (claims.sub !== client.clientId) fail(`sub must equal iss and the client_id (${client.clientId})`);
  const { iat, exp } = claims as { iat?: unknown; exp: number };
  if (typeof iat !== 'number') fail('iat is required');
  if (exp - iat > MAX_LIFETIME_SECONDS) fail(`exp must be at most ${MAX_LIFETIME_SECONDS} s (5 minutes) after iat`);
  const now = Math.floor(Date.now() / 1000);
  if (exp > now + MAX_LIFETIME_SECONDS + clockSkewSeconds) fail(`exp is ${exp - now} s in the future; at most ${MAX_LIFETIME_SECONDS} s (5 minutes) is allowed`);
}

function ktyOf(alg: string): string {
  return alg.startsWith('ES') ? 'EC' : 'RSA';
}
