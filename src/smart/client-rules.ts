import type { PayerRole } from '../db/tables/payer.js';
import { describeInputProblem, inputProblem } from '../security/text.js';
import { setContains } from './scopes/algebra.js';
import { operatorOnlyScopes } from './scopes/grant.js';
import { parseScope, parseScopes } from './scopes/scope.js';
import { ACCOUNT_CALLBACK_PATH, ACCOUNT_CLIENT_ID, CLIENT_AUTH_METHODS, GRANT_TYPES } from './profile.js';

/**
 * What a client may be: one set of rules for every path that creates or changes a client (the admin API and
 * the CLI through it, dynamic registration at /reg, and RFC 7592 updates at PUT /reg/:id), and the one
 * mapping between client metadata as stored (RFC 7591 names) and as oidc-provider is served it.
 *
 * Pure functions over plain metadata: the callers translate a {@link ClientRuleError} into their protocol's
 * error (`invalid_client_metadata` or `invalid_redirect_uri` for RFC 7591, `invalid_request` for the admin API).
 */

/**
 * RFC 7591 `scope` lists every scope a client may be granted, SMART ones included. oidc-provider would refuse
 * those as client metadata, so it is served them under this property, read by the scope engine.
 */
export const ALLOWED_SCOPE_PROPERTY = 'allowed_scope';
/**
 * A client registered by JWKS URL is served to oidc-provider with the keys we fetched inline (see the client
 * adapter); the URL as registered stays here, for the `jku` check and to be written back.
 */
export const REGISTERED_JWKS_URI = 'registered_jwks_uri';
/** Ours: `pre-approved` clients skip the consent page. Only an operator sets it. */
export const CONSENT_PROPERTY = 'consent';
export type ConsentPolicy = 'required' | 'pre-approved';
/**
 * Ours: an app the sandbox launcher registered for a developer, with its sandbox settings (`{ pkce }`); the
 * launcher may change it. Its settings count in sandbox mode only.
 */
export const SANDBOX_APP_PROPERTY = 'sandbox_app';
export type PkcePolicy = 'required' | 'optional';

export function isSandboxApp(metadata: ClientMetadata): boolean {
  const value = metadata[SANDBOX_APP_PROPERTY];
  return typeof value === 'object' && value !== null;
}

/**
 * SMART App Launch 2.2 §PKCE requires it of every client; a sandbox app may be let off, so that an app that
 * does not do PKCE yet can be tried (as smart-launcher-v2 allows).
 */
export function pkceRequired(metadata: ClientMetadata, sandbox: boolean): boolean {
  const value = metadata[SANDBOX_APP_PROPERTY];
  return !(sandbox && typeof value === 'object' && value !== null && (value as { pkce?: unknown }).pkce === 'optional');
}

/**
 * Ours: a client registered by UDAP (HL7 UDAP Security IG §3) carries the `iss` of its software statement (the
 * SAN URI of its certificate) and its trust community. It has no key set: it authenticates with the key of a
 * certificate that chains to the community's anchors and names this `iss`, sent along in `x5c`.
 */
export const UDAP_ISS_PROPERTY = 'udap_iss';
export const UDAP_COMMUNITY_PROPERTY = 'udap_community';
/** TEFCA: the exchange purpose the client registered for (one client per purpose). */
export const UDAP_EXCHANGE_PURPOSE_PROPERTY = 'udap_exchange_purpose';

/**
 * Ours: what a client is to a payer (CMS-0057-F). `patient-access` apps count in the Patient Access report;
 * `provider-access` clients reach only the members attributed to their organisation who have not opted out;
 * `payer-to-payer` clients only the members who opted in. Only an operator sets it.
 */
export const PAYER_ROLE_PROPERTY = 'payer_role';
/** Ours: the organisation a payer client acts for, as identifiers `system|value` (NPI, TIN). Only an operator sets it. */
export const ORGANIZATION_PROPERTY = 'organization_identifiers';
/** An identifier as `system|value` (FHIR token search syntax), the system an absolute URI. */
export const ORGANIZATION_IDENTIFIER_PATTERN = '^[a-zA-Z][a-zA-Z0-9+.-]*:[^|\\s]{1,250}\\|[^|\\s]{1,64}$';

/** Properties of ours that only the server and operators write: a client never sets them about itself. */
const INTERNAL_PROPERTIES = [ALLOWED_SCOPE_PROPERTY, REGISTERED_JWKS_URI, CONSENT_PROPERTY, SANDBOX_APP_PROPERTY, UDAP_ISS_PROPERTY, UDAP_COMMUNITY_PROPERTY, UDAP_EXCHANGE_PURPOSE_PROPERTY, PAYER_ROLE_PROPERTY, ORGANIZATION_PROPERTY] as const;

export type ClientMetadata = Readonly<Record<string, unknown>>;

/** Who writes the metadata: an operator (admin API, CLI), or the client itself (RFC 7591/7592). */
export type ClientWriter = 'operator' | 'self';

export interface ClientRulesOptions {
  readonly writer: ClientWriter;
  /**
   * Whether an operator vouches for self-registered clients, by approving each one (REGISTRATION_STATUS=pending)
   * or by handing out the initial access token it registers with (REGISTRATION=token). Only then may a client
   * register itself for system/ scopes.
   */
  readonly vouched: boolean;
  /** OUTBOUND_ALLOW_PRIVATE (development): a `jwks_uri` may use plain http. */
  readonly allowHttpJwksUri: boolean;
}

/** A rule broken; the message names the property first (`redirect_uris: …`), as RFC 7591 §3.2.2's errors are told apart by it. */
export class ClientRuleError extends Error {
  override name = 'ClientRuleError';
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);
/** Schemes that are never a place to send a browser with a code, whatever the client says. */
const FORBIDDEN_SCHEMES = new Set(['javascript:', 'data:', 'vbscript:', 'file:', 'blob:', 'about:', 'ftp:', 'ws:', 'wss:', 'mailto:', 'tel:']);
/** Key members that only a private or symmetric key has (RFC 7517 §6, RFC 7518 §6). */
const PRIVATE_KEY_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
/** Fetched by oidc-provider itself at registration, outside our SSRF-safe client: never accepted. */
const REFUSED_PROPERTIES: Readonly<Record<string, string>> = {
  sector_identifier_uri: 'sector_identifier_uri is not supported: this server issues public subject identifiers only',
  request_uris: 'request_uris is not supported: this server does not accept request objects by reference',
};

const fail = (message: string): never => {
  throw new ClientRuleError(message);
};

const strings = (value: unknown, name: string): string[] => {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) return fail(`${name} must be an array of strings`);
  return value;
};

/**
 * The redirect URI rules (RFC 9700 §2.1 and RFC 8252 §7): https; plain http only to a loopback host (native
 * apps' loopback redirection); or a private-use scheme in reverse-domain form such as `com.example.app:/cb`.
 * No fragment (RFC 6749 §3.1.2).
 */
export function checkRedirectUri(uri: string, name = 'redirect_uris'): void {
  const url = URL.parse(uri);
  const refuse = (why: string): never => {
    throw new ClientRuleError(`${name}: ${uri} ${why}`);
  };
  if (!url) return refuse('is not an absolute URL');
  if (uri.includes('#')) refuse('must not have a fragment');
  if (url.protocol === 'https:') return;
  if (url.protocol === 'http:') {
    if (!LOOPBACK_HOSTS.has(url.hostname)) refuse('must use https (http only on localhost)');
    return;
  }
  if (FORBIDDEN_SCHEMES.has(url.protocol)) refuse(`must not use the ${url.protocol.slice(0, -1)} scheme`);
  // RFC 8252 §7.1: a private-use scheme is a reverse domain name the app controls, so it contains a period.
  if (!url.protocol.slice(0, -1).includes('.')) refuse('must use https, http on localhost, or a private-use scheme in reverse-domain form (com.example.app:/callback)');
}

/** An http(s) URL for a person to follow or an app to be opened at; http only on a loopback host. */
function checkWebUrl(value: unknown, name: string, { httpAnywhere = false } = {}): void {
  if (value === undefined) return;
  const url = typeof value === 'string' ? URL.parse(value) : null;
  if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) fail(`${name} must be an absolute http(s) URL`);
  if (url!.protocol === 'http:' && !httpAnywhere && !LOOPBACK_HOSTS.has(url!.hostname)) fail(`${name} must use https (http only on localhost)`);
  if (url!.username || url!.password) fail(`${name} must not carry a user name or password`);
}

/** Does the client authenticate with a secret we generate (and must hold)? */
export function needsSecret(metadata: ClientMetadata): boolean {
  const method = metadata.token_endpoint_auth_method ?? 'client_secret_basic';
  return method === 'client_secret_basic' || method === 'client_secret_post';
}

/**
 * Checks metadata in RFC 7591 names (as stored, `scope` and `jwks_uri` under their own names) against the
 * rules. Defaults are RFC 7591's: `client_secret_basic`, `["authorization_code"]`.
 * @throws {ClientRuleError} naming the first property at fault and what it must be.
 */
export function checkClientMetadata(metadata: ClientMetadata, options: ClientRulesOptions): void {
  const unfit = inputProblem(metadata, '');
  if (unfit) fail(describeInputProblem(unfit));
  checkSizes(metadata);
  for (const [name, why] of Object.entries(REFUSED_PROPERTIES)) if (metadata[name] !== undefined) fail(why);

  const method = metadata.token_endpoint_auth_method ?? 'client_secret_basic';
  if (typeof method !== 'string' || !(CLIENT_AUTH_METHODS as readonly string[]).includes(method)) fail(`token_endpoint_auth_method must be one of ${CLIENT_AUTH_METHODS.join(', ')}`);
  const grants = metadata.grant_types === undefined ? ['authorization_code'] : strings(metadata.grant_types, 'grant_types');
  for (const grant of grants) if (!(GRANT_TYPES as readonly string[]).includes(grant)) fail(`grant_types: ${grant} is not supported; use ${GRANT_TYPES.join(', ')}`);
  if (grants.includes('client_credentials') && method === 'none') {
    fail('token_endpoint_auth_method: none cannot be used with client_credentials; backend services authenticate with private_key_jwt');
  }

  const redirects = strings(metadata.redirect_uris, 'redirect_uris');
  if (grants.includes('authorization_code') && !redirects.length) {
    fail('redirect_uris: at least one is required for the authorization_code grant');
  }
  for (const uri of redirects) checkRedirectUri(uri);
  for (const uri of strings(metadata.post_logout_redirect_uris, 'post_logout_redirect_uris')) checkRedirectUri(uri, 'post_logout_redirect_uris');

  if (metadata.jwks !== undefined && metadata.jwks_uri !== undefined) fail('jwks and jwks_uri are mutually exclusive');
  if (metadata.jwks !== undefined) checkJwks(metadata.jwks);
  if (metadata.jwks_uri !== undefined) {
    const url = typeof metadata.jwks_uri === 'string' ? URL.parse(metadata.jwks_uri) : null;
    if (!url || !(url.protocol === 'https:' || (options.allowHttpJwksUri && url.protocol === 'http:'))) fail('jwks_uri must be an absolute https URL');
  }
  const certified = typeof metadata[UDAP_ISS_PROPERTY] === 'string';
  if (certified && (metadata.jwks !== undefined || metadata.jwks_uri !== undefined)) fail('jwks and jwks_uri are not used by a UDAP client: its keys are its certificates');
  if (method === 'private_key_jwt' && !certified && metadata.jwks === undefined && metadata.jwks_uri === undefined) fail('jwks or jwks_uri is required for private_key_jwt');

  checkWebUrl(metadata.launch_uri, 'launch_uri');
  for (const name of ['logo_uri', 'client_uri', 'policy_uri', 'tos_uri']) checkWebUrl(metadata[name], name, { httpAnywhere: true });

  if (metadata.scope !== undefined) {
    if (typeof metadata.scope !== 'string') fail('scope must be a space-separated string');
    const { scopes, errors } = parseScopes(metadata.scope as string);
    if (errors.length) fail(`scope: ${errors.map((e) => e.message).join('; ')}`);
    // A UDAP client's certificate is the trust an operator would otherwise give: its scopes were narrowed to
    // what its community allows (udapRegisteredScope) instead.
    const reserved = options.writer === 'self' && !certified ? operatorOnlyScopes(scopes, options.vouched) : [];
    if (reserved.length) fail(`scope ${reserved.join(' ')}: only an operator can register a client for this (admin API, or REGISTRATION_STATUS=pending for approval)`);
  }
  const consent = metadata[CONSENT_PROPERTY];
  if (consent !== undefined && consent !== 'required' && consent !== 'pre-approved') fail('consent must be required or pre-approved');
  checkPayerRole(metadata, grants);
}

/**
 * How large a registration may be, whoever writes it: a client registering itself (RFC 7591) as much as an
 * operator (the admin API's schema takes the same figures). Lengths in characters (code points), as JSON
 * Schema counts them.
 */
export const METADATA_LIMITS = { name: 200, uri: 2048, uris: 50, contacts: 20, contact: 320, scope: 16_384 } as const;

/** URIs a registration may carry, each at most METADATA_LIMITS.uri long. */
const URI_PROPERTIES = ['jwks_uri', 'launch_uri', 'logo_uri', 'client_uri', 'policy_uri', 'tos_uri', 'initiate_login_uri', 'sector_identifier_uri'] as const;

function checkSizes(metadata: ClientMetadata): void {
  // Code points, as JSON Schema's maxLength counts them (an astral character is one, not two UTF-16 units).
  const length = (value: string) => value.length - (value.match(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g)?.length ?? 0);
  const name = metadata.client_name;
  if (typeof name === 'string' && length(name) > METADATA_LIMITS.name) fail(`client_name is longer than ${METADATA_LIMITS.name} characters`);
  for (const list of ['redirect_uris', 'post_logout_redirect_uris'] as const) {
    const uris = metadata[list];
    if (!Array.isArray(uris)) continue;
    if (uris.length > METADATA_LIMITS.uris) fail(`${list}: at most ${METADATA_LIMITS.uris}`);
    for (const uri of uris) if (typeof uri === 'string' && length(uri) > METADATA_LIMITS.uri) fail(`${list}: each at most ${METADATA_LIMITS.uri} characters`);
  }
  for (const property of URI_PROPERTIES) {
    const uri = metadata[property];
    if (typeof uri === 'string' && length(uri) > METADATA_LIMITS.uri) fail(`${property} is longer than ${METADATA_LIMITS.uri} characters`);
  }
  const contacts = metadata.contacts;
  if (Array.isArray(contacts)) {
    if (contacts.length > METADATA_LIMITS.contacts) fail(`contacts: at most ${METADATA_LIMITS.contacts}`);
    for (const contact of contacts) if (typeof contact === 'string' && length(contact) > METADATA_LIMITS.contact) fail(`contacts: each at most ${METADATA_LIMITS.contact} characters`);
  }
  if (typeof metadata.scope === 'string' && length(metadata.scope) > METADATA_LIMITS.scope) fail(`scope is longer than ${METADATA_LIMITS.scope} characters`);
}

/** Every payer role, and only those: the compiler holds this to the stored type (db/tables/payer.ts PAYER_ROLES). */
const PAYER_ROLE_NAMES: Readonly<Record<PayerRole, true>> = { 'patient-access': true, 'provider-access': true, 'payer-to-payer': true };

function checkPayerRole(metadata: ClientMetadata, grants: readonly string[]): void {
  const role = metadata[PAYER_ROLE_PROPERTY];
  if (role !== undefined && !(typeof role === 'string' && Object.hasOwn(PAYER_ROLE_NAMES, role))) fail(`${PAYER_ROLE_PROPERTY} must be one of ${Object.keys(PAYER_ROLE_NAMES).join(', ')}`);
  const organizations = strings(metadata[ORGANIZATION_PROPERTY], ORGANIZATION_PROPERTY);
  const pattern = new RegExp(ORGANIZATION_IDENTIFIER_PATTERN);
  for (const o of organizations) if (!pattern.test(o)) fail(`${ORGANIZATION_PROPERTY}: ${o} is not an identifier system|value (e.g. http://hl7.org/fhir/sid/us-npi|1234567893)`);
  // CMS-0057-F Provider Access: a provider organisation reaches the members attributed to it, so it must say which organisation it is.
  if (role === 'provider-access' && !organizations.length) fail(`${ORGANIZATION_PROPERTY}: a provider-access client needs the identifier (NPI or TIN) of the organisation it acts for`);
  if ((role === 'provider-access' || role === 'payer-to-payer') && !grants.includes('client_credentials')) fail(`${PAYER_ROLE_PROPERTY}: a ${role} client is a backend service: it needs the client_credentials grant`);
  if (role === 'patient-access' && !grants.includes('authorization_code')) fail(`${PAYER_ROLE_PROPERTY}: a patient-access app is launched by the member: it needs the authorization_code grant`);
}

function checkJwks(jwks: unknown): void {
  const keys: unknown = (jwks as { keys?: unknown } | null)?.keys;
  const isKey = (k: unknown): k is Record<string, unknown> => k !== null && typeof k === 'object' && typeof (k as { kty?: unknown }).kty === 'string';
  if (!Array.isArray(keys) || !keys.every(isKey)) return fail('jwks must be a JWK Set: {"keys": [{"kty": …}, …]}');
  if (keys.some((k) => PRIVATE_KEY_MEMBERS.some((part) => part in k))) fail('jwks: publish public keys only (a key holds private or symmetric material)');
}

/**
 * A client writing its own registration (RFC 7591 §2, RFC 7592 §2.2) never sets our internal properties:
 * pre-approval is an operator's decision, and the others are the server's bookkeeping.
 * @throws {ClientRuleError} naming the property.
 */
export function checkSelfWritten(body: ClientMetadata): void {
  for (const name of INTERNAL_PROPERTIES) {
    if (body[name] !== undefined) fail(name === CONSENT_PROPERTY || name === PAYER_ROLE_PROPERTY || name === ORGANIZATION_PROPERTY ? `${name} can only be set by an operator` : `${name} is not client metadata a client can set`);
  }
}

/**
 * What a change of registration adds to what the client may do or where it may send people: wider scopes,
 * more grant types, another authentication method, new redirect or launch URLs, other keys. Names the
 * properties that widen; an empty list means the change only narrows or renames. Metadata in RFC 7591 names.
 */
export function widenedProperties(before: ClientMetadata, after: ClientMetadata): string[] {
  const widened: string[] = [];
  const set = (m: ClientMetadata, name: string) => new Set(Array.isArray(m[name]) ? (m[name] as unknown[]).map(String) : []);
  const grows = (name: string) => {
    const old = set(before, name);
    return [...set(after, name)].some((v) => !old.has(v));
  };
  if (!scopesWithin(after.scope, before.scope)) widened.push('scope');
  if (grows('grant_types')) widened.push('grant_types');
  if ((after.token_endpoint_auth_method ?? 'client_secret_basic') !== (before.token_endpoint_auth_method ?? 'client_secret_basic')) widened.push('token_endpoint_auth_method');
  if (grows('redirect_uris')) widened.push('redirect_uris');
  if (grows('post_logout_redirect_uris')) widened.push('post_logout_redirect_uris');
  if (after.launch_uri !== undefined && after.launch_uri !== before.launch_uri) widened.push('launch_uri');
  if (after.jwks_uri !== undefined && after.jwks_uri !== before.jwks_uri) widened.push('jwks_uri');
  if (after.jwks !== undefined && !keysWithin(after.jwks, before.jwks)) widened.push('jwks');
  return widened;
}

/** Is every scope of `after` contained in the scopes of `before`? No registered scope means any patient/user scope. */
function scopesWithin(after: unknown, before: unknown): boolean {
  if (after === before) return true;
  if (typeof after !== 'string') return before === undefined;
  if (typeof before !== 'string') return false;
  const old = parseScopes(before).scopes;
  return parseScopes(after).scopes.every((s) => setContains(old, s));
}

function keysWithin(after: unknown, before: unknown): boolean {
  const keys = (jwks: unknown) => ((jwks as { keys?: unknown[] } | undefined)?.keys ?? []).map((k) => JSON.stringify(canonicalKey(k)));
  const old = new Set(keys(before));
  return keys(after).every((k) => old.has(k));
}

function canonicalKey(key: unknown): Record<string, unknown> {
  const record = (key ?? {}) as Record<string, unknown>;
  return Object.fromEntries(Object.keys(record).sort().map((k) => [k, record[k]]));
}

/**
 * The scope a UDAP client is registered for: those of the requested scopes that the community's allowed
 * scopes contain (IG §3.1: the server decides, considering the request). Where this server is a Tiered OAuth
 * identity provider (`identityProvider`), a client may register for `openid udap` and no FHIR data (IG §6: a
 * data holder registering to send people here to sign in).
 * @throws {ClientRuleError} when none is left, or one cannot be parsed.
 */
export function udapRegisteredScope(requested: string, allowed: string, identityProvider = false): string {
  const { errors } = parseScopes(requested);
  if (errors.length) fail(`scope: ${errors.map((e) => e.message).join('; ')}`);
  const permitted = parseScopes(allowed).scopes;
  const kept = requested.split(' ').filter((word) => {
    if (word === '') return false;
    const scope = parseScope(word);
    if (scope.kind === 'resource') return setContains(permitted, scope);
    return scope.kind === 'launch-context' || (scope.kind === 'fixed' && IDENTITY_SCOPES.has(scope.name));
  });
  const signInOnly = identityProvider && kept.includes('openid') && kept.includes('udap');
  if (!signInOnly && !kept.some((w) => w.includes('/') && !w.startsWith('launch/'))) fail(`scope: none of ${requested} is allowed in this trust community (allowed: ${allowed})`);
  return kept.join(' ');
}

/** Scopes that name no FHIR data: any UDAP client may register for them. */
const IDENTITY_SCOPES = new Set<string>(['openid', 'fhirUser', 'profile', 'offline_access', 'online_access', 'launch', 'udap']);

/**
 * Stored metadata (RFC 7591 names) as oidc-provider is served it: `scope` under {@link ALLOWED_SCOPE_PROPERTY},
 * `jwks_uri` under {@link REGISTERED_JWKS_URI} with an empty key set that the client adapter fills.
 */
export function toProviderMetadata(stored: ClientMetadata): Record<string, unknown> {
  const { scope, jwks_uri: jwksUri, ...rest } = stored;
  const out: Record<string, unknown> = { ...rest };
  if (typeof scope === 'string') out[ALLOWED_SCOPE_PROPERTY] = scope;
  if (typeof jwksUri === 'string') {
    out[REGISTERED_JWKS_URI] = jwksUri;
    out.jwks = { keys: [] };
  }
  // Filled by the client adapter from the certificate the client authenticates with.
  if (typeof stored[UDAP_ISS_PROPERTY] === 'string') out.jwks = { keys: [] };
  // UDAP contacts are URIs (mailto:…); oidc-provider takes e-mail addresses only.
  if (Array.isArray(stored.contacts)) out.contacts = stored.contacts.filter((c): c is string => typeof c === 'string').map((c) => c.replace(/^mailto:/i, '')).filter((c) => /^[^\s@:]+@[^\s@]+$/.test(c));
  return out;
}

/** oidc-provider's metadata back in RFC 7591 names: the inverse of {@link toProviderMetadata}. */
export function toRfc7591Metadata(served: ClientMetadata): Record<string, unknown> {
  const { [ALLOWED_SCOPE_PROPERTY]: allowed, [REGISTERED_JWKS_URI]: registered, ...rest } = served;
  const out: Record<string, unknown> = { ...rest };
  if (typeof allowed === 'string') out.scope = allowed;
  if (typeof registered === 'string') {
    out.jwks_uri = registered;
    delete out.jwks;
  }
  return out;
}

/**
 * The connected-apps page is a static OpenID client of this server, pre-approved so that signing in to it
 * asks nothing more. It is granted `openid` and nothing else: a pre-approved client that could ask for FHIR
 * scopes would hand its user a token no consent page ever showed.
 */
export function accountClientMetadata(issuer: string): Record<string, unknown> {
  return {
    client_id: ACCOUNT_CLIENT_ID,
    client_name: 'Your account',
    redirect_uris: [`${issuer}${ACCOUNT_CALLBACK_PATH}`],
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    consent: 'pre-approved',
    [ALLOWED_SCOPE_PROPERTY]: 'openid',
  };
}
