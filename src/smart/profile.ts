/**
 * The server profile: what this server offers, in one place. oidc-provider is configured from these
 * constants (src/oidc/provider.ts), the discovery documents list them (smart-configuration.ts), and the
 * client rules (client-rules.ts) check registrations against them, so the three cannot disagree.
 */

/**
 * Where the OAuth endpoints live, relative to the issuer (oidc-provider's `routes`). Named after what they do
 * rather than oidc-provider's defaults (`/token/introspection`, `/me`), as the design's request flow lists them.
 */
export const ROUTES = {
  authorization: '/auth',
  token: '/token',
  userinfo: '/userinfo',
  jwks: '/jwks',
  registration: '/reg',
  introspection: '/introspect',
  revocation: '/revoke',
  end_session: '/logout',
  pushed_authorization_request: '/par',
  backchannel_authentication: '/backchannel',
  code_verification: '/device',
  device_authorization: '/device/auth',
  challenge: '/challenge',
  credential: '/credential',
} as const;

export const OIDC_DISCOVERY_PATH = '/.well-known/openid-configuration';
export const OAUTH_DISCOVERY_PATH = '/.well-known/oauth-authorization-server';

/** Token endpoint client authentication (SMART App Launch 2.2 §Client authentication). */
export const CLIENT_AUTH_METHODS = ['private_key_jwt', 'client_secret_basic', 'client_secret_post', 'none'] as const;
export type ClientAuthMethodName = (typeof CLIENT_AUTH_METHODS)[number];

/** `private_key_jwt` assertion algorithms: SMART requires RS384 and ES384; RS256/ES256 for clients registered for them. */
export const CLIENT_AUTH_SIGNING_ALGS = ['RS384', 'ES384', 'RS256', 'ES256'] as const;

export const GRANT_TYPES = ['authorization_code', 'refresh_token', 'client_credentials'] as const;
export type GrantTypeName = (typeof GRANT_TYPES)[number];

/**
 * The scopes oidc-provider handles by name: OpenID Connect's, whose claims it puts in id_tokens, and
 * offline_access, which decides refresh tokens. Every other SMART scope is a resource-server scope
 * (src/oidc/resource-server.ts).
 */
export const STATIC_SCOPES: readonly string[] = ['openid', 'fhirUser', 'profile', 'offline_access'];

/** The connected-apps page: SMART discovery's `management_endpoint`. */
export const ACCOUNT_APPS_PATH = '/account/apps';
export const ACCOUNT_CALLBACK_PATH = '/account/callback';
/** The member's privacy choices (CMS-0057-F): opt-out, opt-in, sensitive data, representatives. */
export const ACCOUNT_PRIVACY_PATH = '/account/privacy';
export const ACCOUNT_CLIENT_ID = 'urn:smart-auth:account';

/** A session lasts a working day; an app that needs longer asks for offline_access. */
export const SESSION_TTL_SECONDS = 12 * 3600;
/** Access tokens of interactive launches (SMART: at most an hour). */
export const INTERACTIVE_ACCESS_TOKEN_TTL = 3600;
/** SMART Backend Services: access tokens live five minutes at most. */
export const BACKEND_ACCESS_TOKEN_TTL = 300;
/** Authorization codes are single use and short-lived (SMART checklist: about a minute). */
export const AUTHORIZATION_CODE_TTL = 60;
/** How long clients may cache the JWKS and the discovery documents. Key rotation waits at least this long. */
export const JWKS_MAX_AGE_SECONDS = 300;

/** The claim of a JWT access token naming the grant it was issued under (the gateway checks the grant stands). */
export const GRANT_ID_CLAIM = 'grant_id';
