import type { Config } from '../../config/config.js';
import type { UdapCommunity } from '../../config/udap-config.js';
import { GRANT_TYPES, ROUTES } from '../profile.js';
import { SUPPORTED_SCOPES } from '../smart-configuration.js';
import { TEFCA_IAS_KEY } from './tefca-ias.js';

/**
 * The UDAP metadata document (HL7 UDAP Security IG §2.2, UDAP Server Metadata §1) served at
 * `{baseURL}/.well-known/udap`, without `signed_metadata`, which the caller adds (signed with the
 * community's certificate: {@link signedMetadataClaims}).
 */
export const UDAP_DISCOVERY_PATH = '/.well-known/udap';

/** Algorithms accepted for software statements, certifications and UDAP authentication tokens: RS256 is required by the IG. */
export const UDAP_SIGNING_ALGS = ['RS256', 'RS384', 'ES256', 'ES384'] as const;

/** The authorization extension this server understands; required for client_credentials (IG §5.2.1.1). */
export const B2B_EXTENSION = 'hl7-b2b';

export function udapMetadata(config: Config, community: UdapCommunity): Record<string, unknown> {
  const url = (path: string): string => `${config.issuer}${path}`;
  return {
    udap_versions_supported: ['1'],
    // IG §2.2: udap_to when the server supports Tiered OAuth (IG §6), as data holder and as identity provider.
    udap_profiles_supported: ['udap_dcr', 'udap_authn', 'udap_authz', ...(community.tieredOAuth ? ['udap_to'] : [])],
    // TEFCA Individual Access Services (tefca-ias.ts) in a TEFCA community.
    udap_authorization_extensions_supported: community.tefca ? [B2B_EXTENSION, TEFCA_IAS_KEY] : [B2B_EXTENSION],
    // Required in every client_credentials token request; an authorization_code request carries none.
    udap_authorization_extensions_required: [B2B_EXTENSION],
    udap_certifications_supported: [...community.certificationsSupported],
    ...(community.certificationsSupported.length ? { udap_certifications_required: [...community.certificationsRequired] } : {}),
    grant_types_supported: [...GRANT_TYPES],
    // IG §6: an identity provider lists openid and udap.
    scopes_supported: [...new Set([...SUPPORTED_SCOPES, ...(community.tieredOAuth ? ['udap'] : []), ...community.allowedScope.split(' ')])],
    authorization_endpoint: url(ROUTES.authorization),
    token_endpoint: url(ROUTES.token),
    // IG §2.2: a fixed array with one value.
    token_endpoint_auth_methods_supported: ['private_key_jwt'],
    token_endpoint_auth_signing_alg_values_supported: [...UDAP_SIGNING_ALGS],
    registration_endpoint: url(ROUTES.registration),
    registration_endpoint_jwt_signing_alg_values_supported: [...UDAP_SIGNING_ALGS],
  };
}

/** A year at most (IG §2.3); a day is enough for a document fetched at every registration. */
export const SIGNED_METADATA_LIFETIME_SECONDS = 24 * 3600;

/**
 * The claims of `signed_metadata` (IG §2.3): `iss` = `sub` = the base URL the document was requested at
 * (the server's certificate names it in its Subject Alternative Name), and the endpoints repeated.
 */
export function signedMetadataClaims(config: Config, baseUrl: string, now: number, jti: string): Record<string, unknown> {
  return {
    iss: baseUrl,
    sub: baseUrl,
    iat: now,
    exp: now + SIGNED_METADATA_LIFETIME_SECONDS,
    jti,
    authorization_endpoint: `${config.issuer}${ROUTES.authorization}`,
    token_endpoint: `${config.issuer}${ROUTES.token}`,
    registration_endpoint: `${config.issuer}${ROUTES.registration}`,
  };
}
