import type { FastifyInstance } from 'fastify';

import type { Config } from '../config/config.js';
import { ACCOUNT_APPS_PATH, CLIENT_AUTH_METHODS, CLIENT_AUTH_SIGNING_ALGS, GRANT_TYPES, JWKS_MAX_AGE_SECONDS, STATIC_SCOPES } from './profile.js';
import { ROUTES } from '../oidc/routes.js';
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
  };
}

/**
 * Serves the document at the issuer and under the path of every configured FHIR base URL (a FHIR server
 * on the same origin, or a proxy in front of one, can route `{fhirBase}/.well-known/smart-configuration`
 * here). Any origin may read it; the answer is JSON whatever the Accept header says.
 */
export async function smartConfigurationRoutes(
  app: FastifyInstance,
  options: { readonly config: Config },
): Promise<void> {
  const document = JSON.stringify(buildSmartConfiguration(options.config));
  const paths = new Set<string>([`${new URL(options.config.issuer).pathname.replace(/\/$/, '')}${SMART_CONFIGURATION_PATH}`]);
  for (const base of options.config.fhirBaseUrls) paths.add(`${new URL(base).pathname.replace(/\/$/, '')}${SMART_CONFIGURATION_PATH}`);

  for (const url of paths) {
    app.route({
      method: 'GET',
      url,
      handler: async (_request, reply) => {
        void reply
          .header('access-control-allow-origin', '*')
          .header('cache-control', `public, max-age=${JWKS_MAX_AGE_SECONDS}`)
          .type('application/json; charset=utf-8');
        return document;
      },
    });
    app.route({
      method: 'OPTIONS',
      url,
      handler: async (_request, reply) => {
        void reply
          .code(204)
          .header('access-control-allow-origin', '*')
          .header('access-control-allow-methods', 'GET')
          .header('access-control-max-age', '3600');
        return reply.send();
      },
    });
  }
}
