import { createLocalJWKSet, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTPayload } from 'jose';
import type { Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import { accessOfGrant, accessOfOpaqueToken, b2bOf, type TokenAccess } from '../grants/token-access.js';
import type { SecretBox } from '../security/secret-box.js';
import type { AccessGrant } from '../smart/fhir/access.js';
import { GRANT_ID_CLAIM } from '../smart/profile.js';
import { parseScopes } from '../smart/scopes/scope.js';
import { invalidToken, noToken } from './outcome.js';

/**
 * Authentication at the door (RFC 6750): the Bearer token of a FHIR request, checked against our own
 * storage (an opaque token) or by signature (a JWT access token, RFC 9068) and then against the grant it
 * was issued under, so that a revoked token or a disconnected app is refused at the very next request.
 * One database statement either way.
 */

/** RFC 6750 §2.1 b64token. */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
/** No token of ours is longer; a longer value is not looked up. */
const MAX_TOKEN_LENGTH = 8192;

export interface Admitted {
  readonly token: TokenAccess;
  readonly grant: AccessGrant;
}

export interface DoorDeps {
  readonly db: Kysely<DB>;
  readonly box: SecretBox;
  readonly issuer: string;
  readonly clockSkewSeconds: number;
  /** The public keys of our signing keys, as they are now (they rotate). */
  readonly verificationKeys: () => JSONWebKeySet;
  /** SENSITIVE_SECURITY_LABELS: withheld from payer clients for members who chose so. */
  readonly sensitiveLabels: readonly string[];
}

export class Door {
  readonly #deps: DoorDeps;
  #keys: { source: JSONWebKeySet; set: ReturnType<typeof createLocalJWKSet> } | undefined;

  constructor(deps: DoorDeps) {
    this.#deps = deps;
  }

  /**
   * The token's access, for the FHIR base it is presented at.
   * @throws {GatewayProblem} 401 with the challenge RFC 6750 §3 asks for.
   */
  async admit(authorization: string | undefined, base: string): Promise<Admitted> {
    if (authorization === undefined || authorization.trim() === '') throw noToken(base);
    const match = /^Bearer +(\S+) *$/i.exec(authorization);
    if (!match) throw invalidToken(base, 'the Authorization header must be Bearer followed by the access token');
    const value = match[1]!;
    if (value.length > MAX_TOKEN_LENGTH || !B64TOKEN.test(value)) throw invalidToken(base, 'the access token is malformed');

    const token = isJwt(value) ? await this.#jwt(value, base) : await accessOfOpaqueToken(this.#deps.db, this.#deps.box, value);
    if (!token) throw invalidToken(base, 'the access token is unknown, expired or revoked');
    if (token.audience !== base) throw invalidToken(base, `the access token was issued for another FHIR server (${token.audience ?? 'none'}), not ${base}`);
    const { scopes } = parseScopes(token.scope);
    return { token, grant: { scopes, patient: token.patient, userPatients: token.userPatients, population: token.population, withheld: token.sensitiveExcluded.length ? { patients: token.sensitiveExcluded, labels: this.#deps.sensitiveLabels } : undefined } };
  }

  async #jwt(value: string, base: string): Promise<TokenAccess | undefined> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(value, this.#keySet(), {
        issuer: this.#deps.issuer,
        audience: base,
        typ: 'at+jwt',
        clockTolerance: this.#deps.clockSkewSeconds,
        algorithms: ['RS256', 'RS384', 'ES256', 'ES384'],
      }));
    } catch (error) {
      if (error instanceof joseErrors.JWTClaimValidationFailed && error.claim === 'aud') {
        throw invalidToken(base, 'the access token was issued for another FHIR server');
      }
      return undefined;
    }
    const clientId = payload.client_id;
    const grantId = payload[GRANT_ID_CLAIM];
    if (typeof clientId !== 'string' || (grantId !== undefined && typeof grantId !== 'string') || typeof payload.exp !== 'number') return undefined;
    const access = await accessOfGrant(this.#deps.db, grantId, clientId);
    if (!access) return undefined;
    return {
      ...access,
      kind: grantId === undefined ? 'ClientCredentials' : 'AccessToken',
      scope: typeof payload.scope === 'string' ? payload.scope : '',
      audience: base,
      expiresAt: new Date(payload.exp * 1000),
      b2b: b2bOf((payload.extensions as Record<string, unknown> | undefined)?.['hl7-b2b']),
    };
  }

  #keySet(): ReturnType<typeof createLocalJWKSet> {
    const source = this.#deps.verificationKeys();
    if (this.#keys?.source !== source) this.#keys = { source, set: createLocalJWKSet(source) };
    return this.#keys.set;
  }
}

function isJwt(value: string): boolean {
  if (value.split('.').length !== 3) return false;
  try {
    return decodeProtectedHeader(value).typ?.toLowerCase() === 'at+jwt';
  } catch {
    return false;
  }
}

