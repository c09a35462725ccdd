import type { Kysely } from 'kysely';
import Provider, { errors, type AdapterPayload, type ClientMetadata, type Configuration } from 'oidc-provider';
import type { Logger } from 'pino';

import type { AuditLog } from '../audit/audit.js';
import type { ClientCache } from '../clients/client-cache.js';
import type { UserCache } from '../users/user-cache.js';
import type { JwksCache } from '../clients/jwks-cache.js';
import type { CrlCache } from '../clients/crl-cache.js';
import type { ChainVerdicts } from '../udap/chain-verdicts.js';
import { grantLifetimeSeconds, type Config } from '../config/config.js';
import type { ReplicaReads } from '../db/replica.js';
import type { DB } from '../db/schema.js';
import type { SecretBox } from '../security/secret-box.js';
import { accountClientMetadata, ALLOWED_SCOPE_PROPERTY, checkClientMetadata, checkSelfWritten, ClientRuleError, CONSENT_PROPERTY, ORGANIZATION_PROPERTY, PAYER_ROLE_PROPERTY, pkceRequired, REGISTERED_JWKS_URI, SANDBOX_APP_PROPERTY, toRfc7591Metadata, UDAP_COMMUNITY_PROPERTY, UDAP_EXCHANGE_PURPOSE_PROPERTY, UDAP_ISS_PROPERTY } from '../smart/client-rules.js';
import { withTefcaIas } from './tefca-ias.js';
import { udapTokenClaims } from './udap-claims.js';
import { CLIENT_AUTH_METHODS, CLIENT_AUTH_SIGNING_ALGS, GRANT_ID_CLAIM, ROUTES, SESSION_TTL_SECONDS, STATIC_SCOPES } from '../smart/profile.js';
import { createAdapterFactory } from './adapters/factory.js';
import { oidcOf, type ErrorPage } from './context.js';
import { findAccount } from './accounts.js';
import { assertClientAssertion } from './client-auth.js';
import { generateClientId, generateClientSecret } from '../clients/registry.js';
import { bearerIntrospectionClient, introspectionAllowed } from './introspection.js';
import { installPipeline } from './pipeline.js';
import { refuseOtherResourceBeforeConsuming, rotateRefreshToken, smartInteractionPolicy, smartTokenClaims, validateLaunchParam } from './smart-launch.js';
import { defaultResource, getResourceServerInfo } from './resource-server.js';
import { validateIdpParam } from './tiered-oauth.js';
import { FaultMappingAdapter, mapDatabaseFaults } from './unavailable.js';
import { CookieKeys } from '../security/cookie-keys.js';

export interface ProviderDeps {
  readonly config: Config;
  readonly db: Kysely<DB>;
  /** Where the lookups that tolerate a replica's lag read: the key set, client registrations. */
  readonly replica: ReplicaReads;
  readonly box: SecretBox;
  readonly log: Logger;
  /** Private signing JWKs, the one to sign with first for each algorithm. */
  readonly signingKeys: readonly object[];
  /** Cookie-signing secrets, newest first. */
  readonly cookieKeys: readonly string[];
  readonly renderErrorPage: (page: ErrorPage) => Promise<string>;
  /** Renders one of views/ with the data given (escaped by the template). */
  readonly renderPage: (view: string, data: Record<string, unknown>) => Promise<string>;
  readonly jwks?: JwksCache | undefined;
  /** Client metadata, cached per process (see ClientCache). */
  readonly clients?: ClientCache<AdapterPayload> | undefined;
  /** Signed-in users, cached per process (see UserCache). */
  readonly users: UserCache;
  readonly audit: AuditLog;
  /** UDAP clients' certificate chains are checked against their community, with these CRLs. */
  readonly crls?: CrlCache | undefined;
  /** UDAP chains found good lately, so that a client's token requests do not validate its chain each time. */
  readonly verdicts?: ChainVerdicts | undefined;
}

/**
 * Builds the oidc-provider instance from our configuration. Everything SMART plugs in through the seams
 * oidc-provider documents (adapter, findAccount, policies, hooks, middleware); nothing is patched.
 */
export function createProvider(deps: ProviderDeps): Provider {
  const { config, log } = deps;
  const issuerPath = config.basePath;
  const bearerClient = bearerIntrospectionClient();
  const lifetime = grantLifetimeSeconds(config);
  const refreshTtlSeconds = lifetime.refresh;
  const iasDeps = { db: deps.db, jwks: deps.jwks, clockSkewSeconds: config.clockSkewSeconds };
  const adapterFor = createAdapterFactory({ db: deps.db, replica: deps.replica, box: deps.box, jwks: deps.jwks, registrationStatus: config.registrationStatus, clients: deps.clients, udap: config.udap, crls: deps.crls, verdicts: deps.verdicts });

  const configuration: Configuration = {
    adapter: (model) => new FaultMappingAdapter(adapterFor(model)),
    // Static clients: the identity Bearer-token introspection continues under (introspection.ts), and the
    // connected-apps page signing people in (account/routes.ts).
    clients: [bearerClient.metadata, accountClientMetadata(config.issuer) as ClientMetadata],
    clockTolerance: config.clockSkewSeconds,
    // Browser apps (public clients) call the token and revocation endpoints from their own pages: allowed
    // from the origin of one of their redirect URIs (a private-use scheme has the opaque origin "null",
    // never allowed). Confidential clients keep their secrets off browsers: no CORS for them.
    clientBasedCORS: (_ctx, origin, client) => origin !== 'null' && client.clientAuthMethod === 'none' && client.redirectUris?.some((uri) => URL.parse(uri)?.origin === origin) === true,
    jwks: { keys: deps.signingKeys },
    cookies: {
      // keygrip's signatures, compared without tsscmp's extra work (src/security/cookie-keys.ts).
      keys: new CookieKeys(deps.cookieKeys),
      names: { session: 'smart_session', interaction: 'smart_interaction', resume: 'smart_resume' },
      long: { httpOnly: true, sameSite: 'lax' },
      short: { httpOnly: true, sameSite: 'lax' },
    },
    routes: { ...ROUTES },
    // SMART App Launch 2.2 §Authorization code: `response_type=code` is the only response type.
    responseTypes: ['code'],
    scopes: [...STATIC_SCOPES],
    clientAuthMethods: [...CLIENT_AUTH_METHODS],
    // SMART App Launch 2.2 §PKCE: required for every client type, S256 only (oidc-provider 9 has no `plain`);
    // in sandbox mode an app the launcher registered may be let off (client-rules.ts, pkceRequired).
    pkce: { required: (_ctx, client) => pkceRequired(client.metadata(), config.sandbox) },
    // SMART App Launch 2.2 lists `redirect_uri` as required in the authorization request and in the code
    // exchange (RFC 6749 §4.1.3 too, as the request had one): not filled in from a single registered URI.
    allowOmittingSingleRegisteredRedirectUri: false,
    findAccount: mapDatabaseFaults((ctx, sub) => findAccount(deps.db, deps.users, config, ctx, sub)),
    claims: {
      openid: ['sub'],
      fhirUser: ['fhirUser'],
      profile: ['name'],
    },
    // fhirUser belongs in the id_token whenever it was granted, not only when no userinfo token was issued.
    conformIdTokenClaims: false,
    features: {
      // Never the development login pages: our interactions live under /interaction.
      devInteractions: { enabled: false },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx, form) => {
          ctx.type = 'html';
          ctx.body = await deps.renderPage('logout', { form, client: ctx.oidc.client?.clientName ?? null });
        },
        postLogoutSuccessSource: async (ctx) => {
          ctx.type = 'html';
          ctx.body = await deps.renderPage('signed-out', {});
        },
      },
      // Every access token is bound to a FHIR base (its audience), which oidc-provider's userinfo endpoint refuses;
      // SMART apps read fhirUser from the id_token. So no userinfo endpoint is served, nor advertised.
      userinfo: { enabled: false },
      // Not served (the Fastify bridge routes no /par), so not advertised: discovery lists only what answers.
      pushedAuthorizationRequests: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx, _client, oneOf) => defaultResource(config, ctx, oneOf),
        getResourceServerInfo: (ctx, indicator, client) => getResourceServerInfo(config, ctx, indicator, client),
        // Exchanging a code or refresh token yields a token for the FHIR server it was granted for, without
        // the client repeating `resource` (oidc-provider would otherwise issue a userinfo-only token).
        useGrantedResource: () => true,
      },
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: mapDatabaseFaults((ctx, client, token) => introspectionAllowed(deps.db, ctx, client, token)) },
      // RFC 7009 §2.1: a client revokes only its own tokens; revoking a refresh token ends its whole grant.
      revocation: {
        enabled: true,
        allowedPolicy: (_ctx, client, token) => {
          if (token.clientId === client.clientId) return true;
          if (client.clientAuthMethod === 'none') return false;
          throw new errors.InvalidRequest('this client may not revoke a token issued to another client');
        },
      },
      // SMART defines Bearer tokens; a DPoP-bound token would be refused by FHIR servers that do not check it.
      dPoP: { enabled: false },
      // RFC 7591 / 7592 at /reg: REGISTRATION says who may register; REGISTRATION_STATUS whether an
      // operator must approve a new client first.
      registration: {
        enabled: config.registration !== 'off',
        initialAccessToken: config.registration === 'token',
        issueRegistrationAccessToken: true,
        idFactory: () => generateClientId(),
        secretFactory: () => generateClientSecret(),
      },
      registrationManagement: { enabled: config.registration !== 'off', rotateRegistrationAccessToken: true },
    },
    assertJwtClientAuthClaimsAndHeader: (_ctx, claims, header, client) => {
      assertClientAssertion(config.clockSkewSeconds, claims, header, client);
    },
    // SMART App Launch 2.2 §Authorization request: `aud` names the FHIR server (validated as the resource
    // indicator in defaultResource); `launch` is the EHR's launch handle.
    extraParams: {
      aud: null,
      launch: mapDatabaseFaults((ctx, value, client) => validateLaunchParam(config, deps.db, deps.box, ctx, value, client.clientId)),
      // HL7 UDAP Security IG §6: the identity provider the app prefers, with the udap scope (Tiered OAuth).
      idp: (ctx, value) => {
        validateIdpParam(config, ctx, value);
      },
    },
    extraClientMetadata: {
      properties: [ALLOWED_SCOPE_PROPERTY, REGISTERED_JWKS_URI, CONSENT_PROPERTY, SANDBOX_APP_PROPERTY, 'launch_uri', UDAP_ISS_PROPERTY, UDAP_COMMUNITY_PROPERTY, UDAP_EXCHANGE_PURPOSE_PROPERTY, PAYER_ROLE_PROPERTY, ORGANIZATION_PROPERTY],
      // Called once per property; a registration is checked as a whole, once, when the first comes by.
      validator(ctx, key, _value, metadata) {
        if (key !== ALLOWED_SCOPE_PROPERTY) return;
        const oidc = ctx ? oidcOf(ctx) : undefined;
        // Clients read from our table were checked when written (admin API, or here).
        if (!oidc || (oidc.route !== 'registration' && oidc.route !== 'client_update')) return;
        try {
          checkSelfWritten(oidc.body as Record<string, unknown>);
          checkClientMetadata(toRfc7591Metadata(metadata), { writer: 'self', vouched: config.registration === 'token' || config.registrationStatus === 'pending', allowHttpJwksUri: config.outboundAllowPrivate });
        } catch (error) {
          if (!(error instanceof ClientRuleError)) throw error;
          // oidc-provider's error answers `invalid_redirect_uri` for a description about redirect_uris (RFC 7591 §3.2.2).
          throw new errors.InvalidClientMetadata(error.message);
        }
        // RFC 7591 `scope` carries SMART scopes, which oidc-provider would refuse as client metadata: they move
        // to our property (and back in the response and the table).
        const record = metadata as Record<string, unknown>;
        if (typeof record.scope === 'string') {
          record[ALLOWED_SCOPE_PROPERTY] = record.scope;
          delete record.scope;
        }
      },
    },
    // Refresh tokens (SMART App Launch 2.2 §Scopes for requesting a refresh token; ONC: offline tokens at
    // least 90 days, renewed at each use).
    issueRefreshToken: (_ctx, client, code) => client.grantTypeAllowed('refresh_token') && (code.scopes.has('offline_access') || code.scopes.has('online_access')),
    rotateRefreshToken: mapDatabaseFaults((ctx) => rotateRefreshToken(provider, deps.db, ctx)),
    // online_access is enforced when the refresh token is used (rotateRefreshToken), not by binding every
    // token to the browser session: a second launch of the same app would otherwise end the first one's tokens.
    expiresWithSession: () => false,
    extraTokenClaims: mapDatabaseFaults(async (ctx, token) => {
      const b2b = udapTokenClaims(ctx, token);
      const udap = b2b && (await withTefcaIas(iasDeps, ctx, b2b));
      const smart = await smartTokenClaims(deps.db, ctx, token);
      return udap ? { ...smart, ...udap } : smart;
    }),
    // A JWT access token is not stored: the gateway checks, at every request, that the grant it was issued
    // under still stands (not revoked, the app not disconnected), and so needs to know which grant that is.
    formats: {
      customizers: {
        jwt: (_ctx, token, jwt) => {
          if (token.kind === 'AccessToken' && 'grantId' in token && typeof token.grantId === 'string') jwt.payload[GRANT_ID_CLAIM] = token.grantId;
        },
      },
    },
    enabledJWA: {
      clientAuthSigningAlgValues: [...CLIENT_AUTH_SIGNING_ALGS],
      idTokenSigningAlgValues: ['RS256', 'RS384', 'ES256', 'ES384'],
    },
    interactions: {
      policy: smartInteractionPolicy(),
      url: (_ctx, interaction) => `${issuerPath}/interaction/${interaction.uid}`,
    },
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      ClientCredentials: 300,
      Grant: lifetime.grant,
      IdToken: 3600,
      Interaction: 3600,
      // Each rotation issues a new token with a full period; online_access tokens need no longer than a session.
      RefreshToken: (_ctx, token) => (token.scopes.has('offline_access') ? refreshTtlSeconds : SESSION_TTL_SECONDS),
      Session: SESSION_TTL_SECONDS,
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = await deps.renderErrorPage({ status: ctx.status, error: out.error, description: out.error_description });
    },
  };

  const provider = new Provider(config.issuer, configuration);
  // The Fastify bridge sets X-Forwarded-* from the configured issuer and Fastify's own proxy trust,
  // so trusting them here is trusting our own values (see provider-routes.ts).
  provider.proxy = true;
  refuseOtherResourceBeforeConsuming(provider);

  installPipeline(provider, { log, audit: deps.audit, db: deps.db, lifetime, introspectionAuditWindowSeconds: config.introspectionAuditWindowSeconds, sandbox: config.sandbox, bearerAuthorization: bearerClient.authorization, renderErrorPage: deps.renderErrorPage });
  return provider;
}
