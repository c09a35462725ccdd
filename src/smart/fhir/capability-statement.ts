import type { Config } from '../../config/config.js';
import { ACCOUNT_APPS_PATH, ROUTES } from '../profile.js';

/**
 * The SMART security section of a FHIR server's CapabilityStatement (SMART App Launch 2.2 §Conformance:
 * `rest.security.service` coded SMART-on-FHIR, and the `oauth-uris` extension naming the OAuth endpoints).
 * The upstream's own statement is kept; its security section is ours, since we are the door.
 */
export const OAUTH_URIS_EXTENSION = 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris';
export const RESTFUL_SECURITY_SERVICE = 'http://terminology.hl7.org/CodeSystem/restful-security-service';

export function smartSecurity(config: Pick<Config, 'issuer' | 'registration'>): Record<string, unknown> {
  const url = (path: string): string => `${config.issuer}${path}`;
  const uris: [string, string][] = [
    ['authorize', url(ROUTES.authorization)],
    ['token', url(ROUTES.token)],
    ['revoke', url(ROUTES.revocation)],
    ['introspect', url(ROUTES.introspection)],
    ...(config.registration === 'off' ? [] : ([['register', url(ROUTES.registration)]] as [string, string][])),
    ['manage', url(ACCOUNT_APPS_PATH)],
  ];
  return {
    extension: [{ url: OAUTH_URIS_EXTENSION, extension: uris.map(([name, valueUri]) => ({ url: name, valueUri })) }],
    cors: true,
    service: [{ coding: [{ system: RESTFUL_SECURITY_SERVICE, code: 'SMART-on-FHIR', display: 'SMART-on-FHIR' }], text: 'OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)' }],
    description: `Every request needs an access token from ${config.issuer} (SMART App Launch 2.2); see ${config.issuer}/.well-known/smart-configuration.`,
  };
}

/** The upstream's CapabilityStatement with our security section on every `rest` entry of server mode. */
export function withSmartSecurity(statement: Record<string, unknown>, security: Record<string, unknown>): Record<string, unknown> {
  const rest = Array.isArray(statement.rest) && statement.rest.length ? (statement.rest as Record<string, unknown>[]) : [{ mode: 'server' }];
  return { ...statement, rest: rest.map((r) => (r.mode === 'client' ? r : { ...r, security })) };
}
