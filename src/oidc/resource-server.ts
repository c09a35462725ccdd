import { errors, type Client, type KoaContextWithOIDC, type ResourceServer } from 'oidc-provider';

import { fhirBaseOf, type Config } from '../config/config.js';
import { ALLOWED_SCOPE_PROPERTY, UDAP_COMMUNITY_PROPERTY } from '../smart/client-rules.js';
import { BACKEND_ACCESS_TOKEN_TTL, INTERACTIVE_ACCESS_TOKEN_TTL } from '../smart/profile.js';
import { grantableScopes, grantBackendScopes, parseRegisteredScopes, ScopeGrantError, scopeString, type RegisteredScopes } from '../smart/scopes/grant.js';
import { formatScope, parseScopes, splitScopes, type Scope } from '../smart/scopes/scope.js';
import { isIasRequest } from './tefca-ias.js';

/**
 * The seam between SMART scopes and oidc-provider. oidc-provider knows only a fixed list of scopes by name;
 * every other scope it accepts is a scope of a resource server, which it asks for per request through
 * `features.resourceIndicators.getResourceServerInfo`. Our FHIR base URLs are those resource servers, SMART's
 * `aud` is their resource indicator, and the scope engine decides what each request may carry:
 *
 * - at the authorization endpoint, the requested scopes are parsed (an invalid one refuses the request with
 *   `invalid_scope` naming it) and narrowed to what the client is registered for;
 * - at the token endpoint for client_credentials, every requested scope must be a pre-authorized system/
 *   scope (patient/ for a TEFCA Individual Access Services client: tefca-ias.ts), else `invalid_scope`;
 * - when a code or refresh token is exchanged, the scopes are the grant's, decided at consent.
 *
 * Identity, launch and refresh scopes are listed as resource-server scopes too, so that they appear in the
 * token response's `scope` and in introspection, as SMART requires (oidc-provider otherwise reports only
 * resource-server scopes there).
 */

/**
 * A JWT access token carries its scope string, and travels in an HTTP header that servers commonly cap at
 * 8 KiB. Past this many characters of scope the token is issued opaque instead (and is introspected).
 */
export const JWT_MAX_SCOPE_LENGTH = 4096;

export function registeredScopes(client: Client): RegisteredScopes {
  const value = (client as unknown as Record<string, unknown>)[ALLOWED_SCOPE_PROPERTY];
  return parseRegisteredScopes(typeof value === 'string' ? value : undefined);
}

/**
 * `resourceIndicators.defaultResource`: SMART's `aud` is the resource indicator. Required at the authorization
 * endpoint (SMART App Launch 2.2 §Authorization request) and checked here, before any page is shown;
 * backend services send none and get the first FHIR base. One exception: a UDAP client signing a person in
 * here as their identity provider (HL7 UDAP Security IG §6) asks for `openid udap` and no FHIR data, so no
 * `aud`; its request has no resource, and its tokens are for nothing but the id_token.
 */
export function defaultResource(config: Config, ctx: KoaContextWithOIDC, oneOf?: string | readonly string[]): string | readonly string[] | undefined {
  if (oneOf) return oneOf;
  const aud = ctx.oidc.params?.aud;
  if (ctx.oidc.route === 'authorization' || ctx.oidc.route === 'pushed_authorization_request') {
    if (aud === undefined && isUdapSignIn(config, ctx)) return undefined;
    return audBase(config, aud);
  }
  // The resume goes on with the request as /auth checked it, whose `aud` was required there unless the request
  // was a UDAP sign-in (whose `udap` scope oidc-provider has dropped from the stored request since): no resource.
  if (ctx.oidc.route === 'resume') return aud === undefined ? undefined : audBase(config, aud);
  return config.fhirBaseUrls[0]!;
}

/** The FHIR base an authorization request's `aud` names: required, and one of ours. */
function audBase(config: Config, aud: unknown): string {
  if (typeof aud !== 'string' || aud === '') throw new errors.InvalidRequest('aud is required: the base URL of the FHIR server the app wants to access');
  const base = fhirBaseOf(config, aud);
  if (!base) throw new errors.InvalidRequest(`aud ${aud} is not a FHIR server this server issues tokens for`);
  return base;
}

/** The scopes a sign-in at this server as a Tiered OAuth identity provider may ask for. */
const IDP_SCOPES = new Set(['openid', 'udap', 'profile', 'fhirUser']);

/** IG §6: a UDAP client of a community with Tiered OAuth on, asking for `openid udap` and identity scopes only. */
function isUdapSignIn(config: Config, ctx: KoaContextWithOIDC): boolean {
  const scopes = splitScopes(typeof ctx.oidc.params?.scope === 'string' ? ctx.oidc.params.scope : undefined);
  const client = ctx.oidc.client as unknown as Record<string, unknown> | undefined;
  const community = config.udap?.communities.find((c) => c.uri === client?.[UDAP_COMMUNITY_PROPERTY]);
  return community?.tieredOAuth !== undefined && scopes.includes('openid') && scopes.includes('udap') && scopes.every((s) => IDP_SCOPES.has(s));
}

/**
 * The answers of {@link getResourceServerInfo} already given, per client (oidc-provider keeps one Client object
 * per registration as long as its metadata stays the same: a changed registration is a new object, and starts
 * afresh): a backend asks for the same scopes at every token, and each answer parses the request's scopes and
 * the client's registered ones. At most {@link ANSWERS_PER_CLIENT} a client; refusals are not kept.
 */
const answers = new WeakMap<Client, Map<string, ResourceServer>>();
const ANSWERS_PER_CLIENT = 64;

export function getResourceServerInfo(config: Config, ctx: KoaContextWithOIDC, indicator: string, client: Client): ResourceServer {
  const backend = ctx.oidc.route === 'token' && ctx.oidc.params?.grant_type === 'client_credentials';
  // What the answer depends on besides the client and the configuration: the kind of request and its scopes.
  const exchange = ctx.oidc.route === 'token' && !backend;
  const kind = exchange ? 'grant' : backend ? (isIasRequest(ctx) ? 'ias' : 'backend') : 'request';
  if (ctx.oidc.route === 'authorization' || ctx.oidc.route === 'pushed_authorization_request') checkResourceMatchesAud(config, ctx, indicator);
  const scopes = exchange ? (ctx.oidc.entities.Grant?.getResourceScope(indicator) ?? '') : typeof ctx.oidc.params?.scope === 'string' ? ctx.oidc.params.scope : undefined;
  const key = JSON.stringify([kind, indicator, scopes ?? null]);
  let known = answers.get(client);
  const answer = known?.get(key);
  if (answer) return answer;

  const base = fhirBaseOf(config, indicator);
  if (!base) throw new errors.InvalidTarget(`${indicator} is not a FHIR server this server issues tokens for`);
  const scope = scopeString(scopesFor(kind, scopes, client));
  const jwt = config.jwtAccessTokenAudiences.includes(base) && scope.length <= JWT_MAX_SCOPE_LENGTH;
  const info: ResourceServer = Object.freeze({
    scope,
    audience: base,
    accessTokenTTL: backend ? BACKEND_ACCESS_TOKEN_TTL : INTERACTIVE_ACCESS_TOKEN_TTL,
    ...(jwt ? { accessTokenFormat: 'jwt' as const, jwt: Object.freeze({ sign: Object.freeze({ alg: 'RS256' as const }) }) } : { accessTokenFormat: 'opaque' as const }),
  });
  if (!known) answers.set(client, (known = new Map<string, ResourceServer>()));
  if (known.size >= ANSWERS_PER_CLIENT) known.clear();
  known.set(key, info);
  return info;
}

/**
 * An authorization request's `resource` (RFC 8707), when it sends one, is the one FHIR server its `aud` names
 * (checked where the request arrives: its resume carries the request as checked then).
 * `aud` is what the request is checked against (the launch's FHIR server, launch-policy.ts), while the token
 * is issued for the resource: a `resource` naming another FHIR server would carry a launch made for one server,
 * its patient, to a token for another. Two resources would leave the consent without one to grant for.
 */
function checkResourceMatchesAud(config: Config, ctx: KoaContextWithOIDC, indicator: string): void {
  const { aud, resource } = ctx.oidc.params ?? {};
  if (Array.isArray(resource) && resource.length > 1) throw new errors.InvalidTarget('one resource at most: the FHIR server aud names');
  const base = audBase(config, aud);
  if (base !== fhirBaseOf(config, indicator)) throw new errors.InvalidTarget(`resource ${indicator} is not the FHIR server aud names (${String(aud)})`);
  // The token is for the resource as spelled: another spelling of the base (a trailing slash) would become its
  // `aud` and the root of `fhirUser` (`…/fhir//Practitioner/…`).
  if (indicator !== base) throw new errors.InvalidTarget(`resource ${indicator}: name the FHIR server by its base URL, ${base}`);
}

/** Whether the registration allows the scope whole, as it would grant it today. */
function withinRegistration(scope: Scope, registered: NonNullable<RegisteredScopes>): boolean {
  const [granted, ...more] = grantableScopes([scope], registered).granted;
  return granted !== undefined && !more.length && formatScope(granted) === formatScope(scope);
}

function scopesFor(kind: 'grant' | 'ias' | 'backend' | 'request', scopes: string | undefined, client: Client): Scope[] {
  // Exchanging a code or refresh token: the grant holds what was decided at consent, as far as the client's
  // registration still allows it. A registration narrowed since (by an operator, or the client's own RFC 7592
  // update) applies at the next refresh, not when the grant ends: a grant's scope outside it is not issued
  // (whole: the access token can carry only the grant's own scope strings).
  if (kind === 'grant') {
    const granted = parseScopes(scopes).scopes;
    const registered = registeredScopes(client);
    return registered ? granted.filter((scope) => withinRegistration(scope, registered)) : granted;
  }
  const requested = parseRequested(scopes);
  if (kind === 'request') return grantableScopes(requested, registeredScopes(client)).granted;
  try {
    return grantBackendScopes(requested, registeredScopes(client), kind === 'ias' ? 'patient' : 'system');
  } catch (error) {
    if (error instanceof ScopeGrantError) throw new errors.InvalidScope(error.message, error.scope);
    throw error;
  }
}

/** @throws {errors.InvalidScope} naming every invalid scope in the request. */
function parseRequested(scope: string | undefined): Scope[] {
  const { scopes, errors: invalid } = parseScopes(scope);
  if (invalid.length) throw new errors.InvalidScope(invalid.map((e) => e.message).join('; '), invalid.map((e) => e.scope).join(' '));
  return scopes;
}
