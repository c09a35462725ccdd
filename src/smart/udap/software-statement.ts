import { checkRedirectUri, ClientRuleError } from '../client-rules.js';

/**
 * What a UDAP software statement must say (HL7 UDAP Security IG §3.1, UDAP Dynamic Client Registration §2
 * and §4), apart from its signature and certificate chain (certificates.ts). Pure.
 *
 * Errors are the IG's (UDAP DCR §5.2): the statement's JWT claims wrong → `invalid_software_statement`; the
 * registration it asks for wrong → `invalid_client_metadata`; not trusted → `unapproved_software_statement`.
 */
export type UdapRegistrationErrorCode = 'invalid_software_statement' | 'unapproved_software_statement' | 'invalid_client_metadata';

export class UdapRegistrationError extends Error {
  override name = 'UdapRegistrationError';
  constructor(
    readonly code: UdapRegistrationErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** IG §3.1: `exp` no more than 5 minutes after `iat`. */
export const MAX_STATEMENT_LIFETIME_SECONDS = 300;

export interface StatementClaims {
  readonly iss: string;
  readonly jti: string;
  readonly exp: number;
}

/**
 * The JWT claims: `iss` (a URI), `sub` = `iss`, `aud` = the registration endpoint, `iat` not in the future,
 * `exp` not past and at most 5 minutes after `iat`, `jti` present.
 * @throws {UdapRegistrationError} invalid_software_statement, naming the claim.
 */
export function checkStatementClaims(claims: Record<string, unknown>, registrationUrl: string, now: number, clockSkewSeconds: number): StatementClaims {
  const fail = (message: string): never => {
    throw new UdapRegistrationError('invalid_software_statement', message);
  };
  const { iss, sub, aud, iat, exp, jti } = claims;
  if (typeof iss !== 'string' || !URL.canParse(iss)) fail('iss must be the URI that names the client in its certificate');
  if (sub !== iss) fail('sub must equal iss');
  const audiences = Array.isArray(aud) ? aud : [aud];
  if (audiences.length !== 1 || audiences[0] !== registrationUrl) fail(`aud must be the registration endpoint, ${registrationUrl}`);
  if (typeof iat !== 'number' || !Number.isInteger(iat)) fail('iat is required: seconds since the epoch');
  if (typeof exp !== 'number' || !Number.isInteger(exp)) fail('exp is required: seconds since the epoch');
  if ((iat as number) > now + clockSkewSeconds) fail('iat is in the future');
  if ((exp as number) <= now - clockSkewSeconds) fail('the software statement has expired (exp)');
  if ((exp as number) - (iat as number) > MAX_STATEMENT_LIFETIME_SECONDS) fail(`exp must be at most ${MAX_STATEMENT_LIFETIME_SECONDS} s (5 minutes) after iat; it is ${(exp as number) - (iat as number)} s`);
  if (typeof jti !== 'string' || jti === '' || jti.length > 256) fail('jti is required: a unique string of at most 256 characters');
  return { iss: iss as string, jti: jti as string, exp: exp as number };
}

/**
 * The registration the statement asks for (IG §3.1's table), as RFC 7591 metadata, or `cancel` when
 * grant_types is empty (IG §3.4). The general client rules (client-rules.ts) run on the result afterwards.
 * `loopbackHttp` (development and tests only, with OUTBOUND_ALLOW_PRIVATE) lets redirect URIs be http on
 * loopback, as they are for other clients.
 * @throws {UdapRegistrationError} invalid_client_metadata, naming the claim.
 */
export function statementMetadata(claims: Record<string, unknown>, options: { readonly loopbackHttp: boolean }): Record<string, unknown> | 'cancel' {
  const fail = (message: string): never => {
    throw new UdapRegistrationError('invalid_client_metadata', message);
  };
  const strings = (name: string): string[] | undefined => {
    const value = claims[name];
    if (value === undefined) return undefined;
    if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) return fail(`${name} must be an array of strings`);
    return value;
  };
  const grants = strings('grant_types');
  if (!grants) return fail('grant_types is required');
  if (grants.length === 0) return 'cancel';
  const code = grants.includes('authorization_code');
  const credentials = grants.includes('client_credentials');
  if (code === credentials) fail('grant_types must include either authorization_code or client_credentials, not both');
  for (const grant of grants) if (!['authorization_code', 'client_credentials', 'refresh_token'].includes(grant)) fail(`grant_types: ${grant} is not supported`);
  if (grants.includes('refresh_token') && !code) fail('grant_types: refresh_token only with authorization_code');

  if (typeof claims.client_name !== 'string' || claims.client_name.trim() === '') fail('client_name is required');
  const contacts = strings('contacts');
  if (!contacts?.some((c) => /^mailto:[^@\s]+@[^@\s]+$/.test(c))) fail('contacts must hold at least one mailto: address');
  if (claims.token_endpoint_auth_method !== 'private_key_jwt') fail('token_endpoint_auth_method must be private_key_jwt');
  if (typeof claims.scope !== 'string' || claims.scope.trim() === '') fail('scope is required');

  const redirects = strings('redirect_uris');
  const responseTypes = strings('response_types');
  if (code) {
    if (!redirects?.length) fail('redirect_uris is required with authorization_code');
    for (const uri of redirects!) {
      if (!uri.startsWith('https://') && !(options.loopbackHttp && isLoopbackHttp(uri))) fail(`redirect_uris: ${uri} must use https`);
      try {
        checkRedirectUri(uri);
      } catch (error) {
        if (error instanceof ClientRuleError) fail(error.message);
        throw error;
      }
    }
    if (responseTypes?.length !== 1 || responseTypes[0] !== 'code') fail('response_types must be ["code"] with authorization_code');
    if (typeof claims.logo_uri !== 'string' || !claims.logo_uri.startsWith('https://') || !URL.canParse(claims.logo_uri)) fail('logo_uri is required with authorization_code: an https URL');
  } else {
    if (redirects !== undefined) fail('redirect_uris must be absent without authorization_code');
    if (responseTypes !== undefined) fail('response_types must be absent without authorization_code');
  }
  const metadata: Record<string, unknown> = {
    client_name: claims.client_name,
    contacts,
    grant_types: grants,
    token_endpoint_auth_method: 'private_key_jwt',
    scope: claims.scope,
  };
  // A client_credentials client has no response types (RFC 7591's default is ["code"], which needs redirect URIs).
  Object.assign(metadata, code ? { redirect_uris: redirects, response_types: ['code'], logo_uri: claims.logo_uri } : { redirect_uris: [], response_types: [] });
  for (const name of ['client_uri', 'policy_uri', 'tos_uri', 'launch_uri']) if (claims[name] !== undefined) metadata[name] = claims[name];
  return metadata;
}

function isLoopbackHttp(uri: string): boolean {
  const url = URL.parse(uri);
  return url?.protocol === 'http:' && ['127.0.0.1', '[::1]', 'localhost'].includes(url.hostname);
}
