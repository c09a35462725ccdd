/** What the benchmarks send: the scopes and the form encoding of token and introspection requests. */

/** The scope of every client_credentials request (bench-basic and bench-jwt, ours and bare). */
export const SYSTEM_SCOPE = 'system/Patient.rs system/Observation.rs';

export const FORM = { 'content-type': 'application/x-www-form-urlencoded' } as const;

export const form = (values: Record<string, string>): string => new URLSearchParams(values).toString();

/** RFC 6749 §2.3.1: client_secret_basic. */
export const basicAuthorization = (clientId: string, secret: string): string => `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}`;

/** Bare oidc-provider's confidential clients (bench/bare-server.ts): the token client and the resource server that introspects. */
export function bareSecretClients(secret: string): Record<string, unknown>[] {
  return [
    { client_id: 'bench-basic', client_secret: secret, grant_types: ['client_credentials'], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'client_secret_basic' },
    { client_id: 'bench-rs', client_secret: secret, grant_types: [], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'client_secret_basic' },
  ];
}
