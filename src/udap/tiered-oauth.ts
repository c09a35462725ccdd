import { createHash, randomBytes, randomUUID } from 'node:crypto';

import type { Kysely } from 'kysely';
import { createLocalJWKSet, errors as joseErrors, jwtVerify, SignJWT, type JWTPayload } from 'jose';

import { cleanText } from '../audit/sanitize.js';
import type { CrlCache } from '../clients/crl-cache.js';
import type { JwksCache } from '../clients/jwks-cache.js';
import { OutboundError, outboundGet, outboundPost, type OutboundOptions, type OutboundResponse } from '../clients/outbound.js';
import { findIdpClientId, forgetIdpClientId, saveIdpClientId } from '../clients/tiered-oauth-clients.js';
import type { Config } from '../config/config.js';
import type { UdapCommunity, UdapConfig } from '../config/udap-config.js';
import type { DB } from '../db/schema.js';
import { isStorableText } from '../security/text.js';
import { UDAP_DISCOVERY_PATH, UDAP_SIGNING_ALGS } from '../smart/udap/metadata.js';
import { splitScopes } from '../smart/scopes/scope.js';
import { verifyCommunityJwt } from './trust.js';

/**
 * UDAP Tiered OAuth for User Authentication (HL7 UDAP Security IG §6), this server as the data holder: a client
 * app names the person's identity provider in `idp` (with the `udap` scope); this server checks that the IdP
 * is trusted (its signed UDAP metadata chains to an anchor of a community with Tiered OAuth on), registers
 * itself there once per community with its own software statement, sends the person there as an OpenID
 * Connect client (`openid udap`, state, nonce, PKCE), and at the callback exchanges the code with a UDAP
 * authentication token (IG §4.2.2) and validates the id_token (OpenID Connect Core §3.1.3.7).
 *
 * Failures are {@link TieredOAuthError}s: the client app receives `invalid_idp` for an IdP that is not trusted
 * or cannot be used (IG §6: "the data holder MAY reject the client app's authorization request … using the
 * extension error code of invalid_idp").
 */
export interface TieredOAuthDeps {
  readonly config: Config;
  readonly udap: UdapConfig;
  readonly db: Kysely<DB>;
  readonly crls: CrlCache;
  readonly jwks: JwksCache;
  readonly outbound: OutboundOptions;
}

/** An IdP that cannot be used, or whose answer is not valid: `invalid_idp` for the app, with this description. */
export class TieredOAuthError extends Error {
  override name = 'TieredOAuthError';
  readonly code = 'invalid_idp';
  constructor(
    message: string,
    /** For the audit trail: which step failed. */
    readonly step: 'discovery' | 'registration' | 'token' | 'id_token',
    /** The IdP answered invalid_client: it no longer knows our client_id (forgotten here already). */
    readonly clientUnknown = false,
  ) {
    super(message);
  }
}

/** The callback this server registers at IdPs, relative to the issuer. */
export const TIERED_CALLBACK_PATH = '/tiered-oauth/callback';
/** The cookie binding an attempt to the browser sent to the IdP, named per interaction (TieredAttempt.browser). */
export function tieredBrowserCookie(uid: string): string {
  return `smart_tiered_${uid}`;
}

/** Where IdPs send people back to this server. */
function callbackUrl(config: Config): string {
  return `${config.issuer}${TIERED_CALLBACK_PATH}`;
}

/** IG §6: the authentication request's scope holds at least these two. */
export const TIERED_IDP_SCOPE = 'openid udap';

/** The communities Tiered OAuth is on in. */
export function tieredCommunities(udap: UdapConfig | undefined): UdapCommunity[] {
  return udap?.communities.filter((c) => c.tieredOAuth !== undefined) ?? [];
}

/**
 * Whether an authorization request asks for Tiered OAuth: the `udap` scope and an `idp` (IG §6: `idp` means
 * nothing without `udap`).
 */
export function requestedIdp(scope: unknown, idp: unknown): string | undefined {
  if (typeof idp !== 'string' || typeof scope !== 'string') return undefined;
  return splitScopes(scope).includes('udap') ? idp : undefined;
}

/**
 * A problem with `idp` itself, for `invalid_request` before any page: an absolute https URL without query or
 * fragment (http on loopback and private addresses when OUTBOUND_ALLOW_PRIVATE allows them).
 */
export function idpParamProblem(idp: string, allowPrivate: boolean): string | undefined {
  const url = URL.parse(idp);
  if (!url || (url.protocol !== 'https:' && !(allowPrivate && url.protocol === 'http:'))) return `idp must be the https base URL of an identity provider; ${JSON.stringify(idp.slice(0, 200))} is not`;
  if (url.search || url.hash || idp.includes('#') || url.username || url.password) return 'idp must be a base URL, without query, fragment or credentials';
  return undefined;
}

/** An IdP whose metadata this server trusts, and what it needs to send a person there. */
export interface TrustedIdp {
  readonly idp: string;
  readonly community: UdapCommunity;
  readonly authorizationEndpoint: string;
  readonly tokenEndpoint: string;
  readonly registrationEndpoint: string;
  readonly jwksUri: string;
  readonly profiles: readonly string[];
}

/**
 * IG §6 "Data Holder Authentication Request to IdP": the IdP's UDAP metadata, fetched at `{idp}/.well-known/udap`
 * for each community with Tiered OAuth on (`?community=`, IG §2.1) and accepted when its `signed_metadata` chains
 * to that community's anchors, names the IdP (`iss` = `sub` = the idp URL, in the certificate's SAN) and lists
 * `udap_to` and the scopes `openid` and `udap`. The endpoints are the signed ones (IG §2.3). The JWKS URL comes
 * from the IdP's OpenID Connect discovery, whose `issuer` must be the idp URL too.
 * @throws {TieredOAuthError} invalid_idp, saying why.
 */
export async function discoverIdp(deps: TieredOAuthDeps, idp: string): Promise<TrustedIdp> {
  const fail = (message: string): never => {
    throw new TieredOAuthError(message, 'discovery');
  };
  const communities = tieredCommunities(deps.udap).filter((c) => !c.tieredOAuth?.idps || c.tieredOAuth.idps.includes(idp));
  if (!communities.length) fail(`${idp} is not an identity provider this server accepts`);
  let refusal = '';
  for (const community of communities) {
    let metadata: Record<string, unknown>;
    try {
      metadata = await fetchJson(deps, `${idp}${UDAP_DISCOVERY_PATH}?community=${encodeURIComponent(community.uri)}`, 'its UDAP metadata');
    } catch (error) {
      // IG §2.1: 204 is "not a member of that community"; another community may still do.
      if (!(error instanceof TieredOAuthError)) throw error;
      refusal = error.message;
      continue;
    }
    if (typeof metadata.signed_metadata !== 'string') {
      refusal = 'its UDAP metadata has no signed_metadata';
      continue;
    }
    const trusted = await verifyCommunityJwt(metadata.signed_metadata, [community], deps.crls);
    if (!trusted.ok) {
      refusal = `its signed_metadata is not trusted: ${trusted.message}`;
      continue;
    }
    const claims = trusted.claims;
    if (claims.iss !== idp || claims.sub !== idp) fail(`its signed_metadata must have iss and sub ${idp}`);
    if (!trusted.leaf.sanUris.includes(idp)) fail(`the certificate that signed its metadata does not name ${idp} in its Subject Alternative Name`);
    const now = Math.floor(Date.now() / 1000);
    if (typeof claims.exp !== 'number' || claims.exp <= now - deps.config.clockSkewSeconds) fail('its signed_metadata has expired (exp)');
    const strings = (value: unknown): string[] => (Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : []);
    if (!strings(metadata.udap_versions_supported).includes('1')) fail('its metadata does not list UDAP version 1');
    const profiles = strings(metadata.udap_profiles_supported);
    // IG §2.2: a server that supports the user authentication workflow lists udap_to; IG §6: an IdP lists openid and udap.
    if (!profiles.includes('udap_to')) fail('its metadata does not list udap_to in udap_profiles_supported: it is no Tiered OAuth identity provider');
    const scopes = strings(metadata.scopes_supported);
    if (!scopes.includes('openid') || !scopes.includes('udap')) fail('its metadata must list openid and udap in scopes_supported');
    const endpoint = (name: string): string => {
      const value = claims[name];
      if (typeof value !== 'string' || !endpointAllowed(value, deps.outbound.allowPrivate)) return fail(`its signed_metadata has no usable ${name}`);
      return value;
    };
    const oidc = await fetchJson(deps, `${idp}/.well-known/openid-configuration`, 'its OpenID Connect discovery');
    if (oidc.issuer !== idp) fail(`its OpenID Connect discovery names issuer ${JSON.stringify(oidc.issuer)}, not ${idp}`);
    if (typeof oidc.jwks_uri !== 'string' || !endpointAllowed(oidc.jwks_uri, deps.outbound.allowPrivate)) fail('its OpenID Connect discovery has no usable jwks_uri');
    return {
      idp,
      community,
      authorizationEndpoint: endpoint('authorization_endpoint'),
      tokenEndpoint: endpoint('token_endpoint'),
      registrationEndpoint: endpoint('registration_endpoint'),
      jwksUri: oidc.jwks_uri as string,
      profiles,
    };
  }
  return fail(`${idp} is not a trusted identity provider: ${refusal}`);
}

/**
 * This server's client_id at the IdP: the one registered before in this community, or a new registration (IG
 * §3) with a software statement signed by this server's certificate of the community.
 * @returns the client_id, and whether it was registered now.
 */
export async function idpClientId(deps: TieredOAuthDeps, trusted: TrustedIdp): Promise<{ clientId: string; registered: boolean }> {
  const key = { community: trusted.community.uri, idp: trusted.idp, redirectUri: callbackUrl(deps.config) };
  const known = await findIdpClientId(deps.db, key);
  if (known) return { clientId: known, registered: false };
  const fail = (message: string): never => {
    throw new TieredOAuthError(`${trusted.idp} did not register this server: ${message}`, 'registration');
  };
  if (!trusted.profiles.includes('udap_dcr')) fail('it offers no UDAP dynamic registration (udap_dcr)');
  const statement = await softwareStatement(deps.config, trusted.community, trusted.registrationEndpoint);
  const response = await send(() => outboundPost(trusted.registrationEndpoint, deps.outbound, { type: 'application/json', text: JSON.stringify({ software_statement: statement, udap: '1' }) }), 'registration');
  const body = jsonObject(response);
  if ((response.status !== 201 && response.status !== 200) || typeof body?.client_id !== 'string' || body.client_id === '') {
    return fail(`it answered ${response.status}${describeOAuthError(body)}`);
  }
  await saveIdpClientId(deps.db, key, body.client_id);
  return { clientId: body.client_id, registered: true };
}

/** What the callback needs to finish a sign-in at an IdP; kept in the interaction meanwhile. */
export interface TieredAttempt {
  readonly idp: string;
  readonly community: string;
  readonly clientId: string;
  readonly tokenEndpoint: string;
  readonly jwksUri: string;
  /** The random part of `state` (the interaction's uid is the other). */
  readonly state: string;
  readonly nonce: string;
  readonly verifier: string;
  /**
   * The value of the cookie set on the browser sent to the IdP ({@link tieredBrowserCookie}): the callback takes the
   * answer only from that browser (OAuth 2.0 Security BCP §4.7). The state alone names the interaction, not
   * the browser: an IdP link forwarded to someone else would sign them in to the interaction of whoever
   * started it.
   */
  readonly browser: string;
  /** This attempt follows one the IdP refused with invalid_client (one such retry per authorization). */
  readonly retry: boolean;
}

/** IG §6 (OpenID Connect Core §3.1.2.1): the authentication request, and what to keep for the callback. */
export function authenticationRequest(config: Config, trusted: TrustedIdp, clientId: string, uid: string, retry: boolean): { url: string; attempt: TieredAttempt } {
  const attempt: TieredAttempt = {
    retry,
    idp: trusted.idp,
    community: trusted.community.uri,
    clientId,
    tokenEndpoint: trusted.tokenEndpoint,
    jwksUri: trusted.jwksUri,
    state: randomBytes(24).toString('base64url'),
    nonce: randomBytes(24).toString('base64url'),
    verifier: randomBytes(32).toString('base64url'),
    browser: randomBytes(24).toString('base64url'),
  };
  const url = new URL(trusted.authorizationEndpoint);
  url.searchParams.set('response_type', 'code');
  url.searchParams.set('client_id', clientId);
  url.searchParams.set('redirect_uri', callbackUrl(config));
  url.searchParams.set('scope', TIERED_IDP_SCOPE);
  url.searchParams.set('state', `${uid}.${attempt.state}`);
  url.searchParams.set('nonce', attempt.nonce);
  url.searchParams.set('code_challenge', createHash('sha256').update(attempt.verifier).digest('base64url'));
  url.searchParams.set('code_challenge_method', 'S256');
  return { url: url.href, attempt };
}

/** The interaction uid and the random part of a `state` this server sent; undefined when it is not one. */
export function parseState(state: unknown): { uid: string; random: string } | undefined {
  if (typeof state !== 'string' || state.length > 256) return undefined;
  const match = /^([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{1,64})$/.exec(state);
  return match ? { uid: match[1]!, random: match[2]! } : undefined;
}

/** The person the IdP signed in: the pair that names them over time (IG §6), and a display name when given. */
export interface IdpIdentity {
  readonly iss: string;
  readonly sub: string;
  readonly name: string | undefined;
}

/**
 * IG §6 and OpenID Connect Core §3.1.3: exchanges the code at the IdP's token endpoint, authenticating with a
 * UDAP authentication token (IG §4.2.2: private_key_jwt with x5c), and validates the id_token (§3.1.3.7):
 * signature by a key of the IdP's JWKS, `iss` = idp, `aud` = our client_id there (and `azp` when there are
 * several), `nonce` as sent, `exp` not past, `iat` not in the future. An IdP that answers `invalid_client` no
 * longer knows our client_id: it is forgotten, so that the next attempt registers again.
 * @throws {TieredOAuthError} invalid_idp.
 */
export async function redeemCode(deps: TieredOAuthDeps, attempt: TieredAttempt, code: string): Promise<IdpIdentity> {
  const community = deps.udap.communities.find((c) => c.uri === attempt.community);
  if (!community) throw new TieredOAuthError(`this server is no longer a member of the community ${attempt.community}`, 'token');
  const assertion = await authenticationToken(community, attempt.clientId, attempt.tokenEndpoint);
  const form = new URLSearchParams({
    grant_type: 'authorization_code',
    code,
    redirect_uri: callbackUrl(deps.config),
    code_verifier: attempt.verifier,
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: assertion,
    udap: '1',
  });
  const response = await send(() => outboundPost(attempt.tokenEndpoint, deps.outbound, { type: 'application/x-www-form-urlencoded', text: form.toString() }), 'token');
  const body = jsonObject(response);
  if (response.status !== 200 || !body) {
    const clientUnknown = body?.error === 'invalid_client';
    if (clientUnknown) await forgetIdpClientId(deps.db, { community: attempt.community, idp: attempt.idp, redirectUri: callbackUrl(deps.config) }, attempt.clientId);
    throw new TieredOAuthError(`${attempt.idp} refused the code: it answered ${response.status}${describeOAuthError(body)}`, 'token', clientUnknown);
  }
  if (typeof body.id_token !== 'string') throw new TieredOAuthError(`${attempt.idp} returned no id_token`, 'id_token');
  return validateIdToken(deps, attempt, body.id_token);
}

/** Longest an id_token may have been issued before it arrives here. */
const ID_TOKEN_MAX_AGE_SECONDS = 600;

async function validateIdToken(deps: TieredOAuthDeps, attempt: TieredAttempt, idToken: string): Promise<IdpIdentity> {
  const fail = (message: string): never => {
    throw new TieredOAuthError(`the id_token of ${attempt.idp} is not valid: ${message}`, 'id_token');
  };
  let kid: string | undefined;
  try {
    const header = JSON.parse(Buffer.from(idToken.split('.')[0] ?? '', 'base64url').toString('utf8')) as { kid?: unknown };
    kid = typeof header.kid === 'string' ? header.kid : undefined;
  } catch {
    fail('it is not a JWT');
  }
  const keys = await deps.jwks.get(attempt.jwksUri, kid);
  if ('error' in keys) return fail(`its keys could not be had: ${keys.error}`);
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(idToken, createLocalJWKSet({ keys: [...keys.keys] }), {
      issuer: attempt.idp,
      audience: attempt.clientId,
      algorithms: [...UDAP_SIGNING_ALGS],
      clockTolerance: deps.config.clockSkewSeconds,
      maxTokenAge: ID_TOKEN_MAX_AGE_SECONDS,
      requiredClaims: ['sub', 'iat', 'exp'],
    }));
  } catch (error) {
    if (error instanceof joseErrors.JWTClaimValidationFailed) return fail(`${error.claim}: ${error.reason === 'check_failed' ? `must be ${claimExpectation(error.claim, attempt)}` : error.message}`);
    if (error instanceof joseErrors.JWTExpired) return fail('it has expired (exp)');
    if (error instanceof joseErrors.JOSEError) return fail(error.code === 'ERR_JWKS_NO_MATCHING_KEY' ? 'no key of its JWKS matches its kid and alg' : error.message);
    throw error;
  }
  if (Array.isArray(payload.aud) && payload.aud.length > 1 && payload.azp !== attempt.clientId) fail(`azp must be ${attempt.clientId} when aud names several parties`);
  if (payload.nonce !== attempt.nonce) fail('nonce is not the one this server sent');
  // sub is looked up and stored as it is, and name stored: text Postgres refuses (NUL) would be a server error,
  // and a lone surrogate would be stored as U+FFFD, another sub than the one asserted (src/security/text.ts).
  if (typeof payload.sub !== 'string' || payload.sub === '' || payload.sub.length > 255 || !isStorableText(payload.sub)) fail('sub must be a string of 1 to 255 characters, without NUL or lone surrogates');
  // A display name only: one that cannot be stored is left out, as if none was given.
  const given = typeof payload.name === 'string' && isStorableText(payload.name) ? payload.name.trim() : '';
  const name = given !== '' ? given.slice(0, 200).toWellFormed() : undefined;
  return { iss: attempt.idp, sub: payload.sub as string, name };
}

function claimExpectation(claim: string, attempt: TieredAttempt): string {
  if (claim === 'iss') return attempt.idp;
  if (claim === 'aud') return `this server's client_id at the IdP, ${attempt.clientId}`;
  return 'valid';
}

/** The URI that names this server in its certificate of the community: the issuer, when the SAN holds it. */
function ownIss(config: Config, community: UdapCommunity): string {
  const sans = (community.chain[0]?.subjectAltName ?? '').split(', ').filter((n) => n.startsWith('URI:')).map((n) => n.slice(4));
  return sans.includes(config.issuer) ? config.issuer : (sans[0] ?? config.issuer);
}

/** UDAP DCR §2 (IG §3.1): this server as an OpenID Connect client of the IdP. */
function softwareStatement(config: Config, community: UdapCommunity, registrationEndpoint: string): Promise<string> {
  const policy = community.tieredOAuth!;
  const iss = ownIss(config, community);
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({
    iss,
    sub: iss,
    aud: registrationEndpoint,
    iat: now,
    exp: now + 300,
    jti: randomUUID(),
    client_name: policy.clientName ?? new URL(config.issuer).host,
    contacts: [policy.contact],
    logo_uri: policy.logoUri,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [callbackUrl(config)],
    token_endpoint_auth_method: 'private_key_jwt',
    scope: TIERED_IDP_SCOPE,
  })
    .setProtectedHeader({ alg: community.signingAlg, x5c: x5cOf(community) })
    .sign(community.privateKey);
}

/** IG §4.2.2: the authentication token at the IdP's token endpoint, signed with the community certificate. */
function authenticationToken(community: UdapCommunity, clientId: string, tokenEndpoint: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: clientId, sub: clientId, aud: tokenEndpoint, iat: now, exp: now + 300, jti: randomUUID() })
    .setProtectedHeader({ alg: community.signingAlg, x5c: x5cOf(community) })
    .sign(community.privateKey);
}

function x5cOf(community: UdapCommunity): string[] {
  return community.chain.map((c) => c.raw.toString('base64'));
}

function endpointAllowed(value: string, allowPrivate: boolean): boolean {
  const url = URL.parse(value);
  return url !== null && (url.protocol === 'https:' || (allowPrivate && url.protocol === 'http:'));
}

async function fetchJson(deps: TieredOAuthDeps, url: string, what: string): Promise<Record<string, unknown>> {
  const response = await send(() => outboundGet(url, deps.outbound), 'discovery');
  const body = jsonObject(response);
  if (response.status !== 200 || !body) throw new TieredOAuthError(`${what} at ${url} could not be read (${response.status}${body ? '' : ', not a JSON object'})`, 'discovery');
  return body;
}

async function send(request: () => Promise<OutboundResponse>, step: TieredOAuthError['step']): Promise<OutboundResponse> {
  try {
    return await request();
  } catch (error) {
    if (error instanceof OutboundError) throw new TieredOAuthError(error.message, step);
    throw error;
  }
}

function jsonObject(response: OutboundResponse): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(response.body.toString('utf8'));
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** `: error (description)` of an OAuth error body, cut short; empty otherwise. */
function describeOAuthError(body: Record<string, unknown> | undefined): string {
  if (typeof body?.error !== 'string') return '';
  // The IdP's words end up in the interaction and the audit trail: without what Postgres cannot store (NUL),
  // and never cut inside a character (a lone surrogate), which would make the error a failure of its own.
  const description = typeof body.error_description === 'string' ? ` (${cleanText(body.error_description, 300)})` : '';
  return `: ${cleanText(body.error, 100)}${description}`;
}
