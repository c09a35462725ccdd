import type { Config } from '../config/config.js';
import { ACCOUNT_APPS_PATH, CLIENT_AUTH_METHODS, CLIENT_AUTH_SIGNING_ALGS, GRANT_TYPES, ROUTES, STATIC_SCOPES } from './profile.js';
import { CAPABILITIES } from './capabilities.js';

export const SMART_CONFIGURATION_PATH = '/.well-known/smart-configuration';

/** What `scopes_supported` says: oidc-provider's own scopes, then ours. */
export const SUPPORTED_SCOPES = [
  ...STATIC_SCOPES,
  'online_access',
  'launch',
  'launch/patient',
  'launch/encounter',
  'patient/*.cruds',
  'user/*.cruds',
  'system/*.cruds',
  'introspect',
];

/**
 * The SMART discovery document (SMART App Launch 2.2 §Conformance, `.well-known/smart-configuration`).
 * Requirement levels from the spec are noted per field; every URL is absolute. The lists come from the
 * same constants that configure oidc-provider, so this document and the OpenID one cannot disagree.
 */
export function buildSmartConfiguration(config: Config): Record<string, unknown> {
  const url = (path: string): string => `${config.issuer}${path}`;
  return {
    // CONDITIONAL (required with sso-openid-connect): the OpenID issuer.
    issuer: config.issuer,
    // CONDITIONAL (required with sso-openid-connect).
    jwks_uri: url(ROUTES.jwks),
    // CONDITIONAL (required with launch-ehr or launch-standalone).
    authorization_endpoint: url(ROUTES.authorization),
    // REQUIRED.
    grant_types_supported: [...GRANT_TYPES],
    // REQUIRED.
    token_endpoint: url(ROUTES.token),
    // RECOMMENDED.
    token_endpoint_auth_methods_supported: [...CLIENT_AUTH_METHODS],
    token_endpoint_auth_signing_alg_values_supported: [...CLIENT_AUTH_SIGNING_ALGS],
    // RECOMMENDED: the fixed scopes, and patterns of the resource scopes that work today.
    scopes_supported: [...SUPPORTED_SCOPES],
    // RECOMMENDED.
    response_types_supported: ['code'],
    // REQUIRED: the capabilities that work, each proven by a test (capabilities.ts).
    capabilities: CAPABILITIES.map((c) => c.name),
    // REQUIRED: S256 only, never plain.
    code_challenge_methods_supported: ['S256'],
    // RECOMMENDED.
    introspection_endpoint: url(ROUTES.introspection),
    // RECOMMENDED.
    revocation_endpoint: url(ROUTES.revocation),
    // RECOMMENDED: where a user reviews and revokes the apps holding access.
    management_endpoint: url(ACCOUNT_APPS_PATH),
    // RECOMMENDED where dynamic registration is offered (RFC 7591): as the OpenID document says it.
    ...(config.registration !== 'off' ? { registration_endpoint: url(ROUTES.registration) } : {}),
  };
}
