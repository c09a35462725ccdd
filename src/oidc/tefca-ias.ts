import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import type { Kysely } from 'kysely';
import { errors, type KoaContextWithOIDC } from 'oidc-provider';

import type { JwksCache } from '../clients/jwks-cache.js';
import type { UdapCommunity } from '../config/udap-config.js';
import type { DB } from '../db/schema.js';
import { matchPatients, normalizeName, type Demographics } from '../directory/patient-match.js';
import { UDAP_SIGNING_ALGS } from '../smart/udap/metadata.js';
import { checkTefcaIasExtension, IAS_EXCHANGE_PURPOSE_CODE, isIasExchangePurpose, TEFCA_IAS_KEY, TefcaIasError } from '../smart/udap/tefca-ias.js';
import { stateOf } from './context.js';

/**
 * TEFCA Individual Access Services at the token endpoint (RCE SOP: Facilitated FHIR Implementation v2.0
 * §6.11, Table 4). A client registered for the T-IAS exchange purpose asks, with client_credentials, for one
 * individual's records: its authentication token carries `tefca_ias` next to `hl7-b2b`. The request is
 * granted when
 *
 * 1. the object is well formed (src/smart/udap/tefca-ias.ts);
 * 2. its `id_token` was issued by a credential service provider the community trusts
 *    (`credentialServiceProviders`), verifies with that provider's keys, and has not expired;
 * 3. when the user is the patient (ONESELF), the name and birth date the id_token asserts, where it asserts
 *    them, are the patient's;
 * 4. exactly one patient of the directory matches `patient_information` (family name, given name, birth date).
 *
 * Then the token is that patient's: `patient` in the token response and on the token (so introspection
 * returns it), patient/ scopes only (resource-server.ts), and the object rides on the token next to hl7-b2b
 * (without the id_token). Any failure is `invalid_grant` saying which step failed. The match decision is
 * audited with the token request (never the id_token, nor the demographics).
 */
export interface TefcaIasDeps {
  readonly db: Kysely<DB>;
  readonly jwks: JwksCache | undefined;
  readonly clockSkewSeconds: number;
}

/** Is this token request from a client registered for Individual Access Services? */
export function isIasRequest(ctx: KoaContextWithOIDC): boolean {
  return isIasExchangePurpose(stateOf(ctx).udapAssertion?.policy.exchangePurpose);
}

/**
 * The UDAP claims of a client_credentials token (hl7-b2b already checked: udap-claims.ts), with the IAS
 * patient and `tefca_ias` added for an IAS request.
 * @throws {errors.InvalidGrant} naming the failed step.
 */
export async function withTefcaIas(deps: TefcaIasDeps, ctx: KoaContextWithOIDC, udapClaims: { extensions: Record<string, unknown> }): Promise<Record<string, unknown>> {
  const state = stateOf(ctx);
  const assertion = state.udapAssertion;
  if (!assertion) return udapClaims;
  const extensions = assertion.claims.extensions as Record<string, unknown>;
  const purpose = assertion.policy.exchangePurpose;
  try {
    if (!isIasExchangePurpose(purpose)) {
      if (!(TEFCA_IAS_KEY in extensions)) return udapClaims;
      if (!assertion.community.tefca) throw new TefcaIasError(`this extension is accepted only in a TEFCA trust community; ${assertion.community.uri} is not one`);
      throw new TefcaIasError(`this extension is accepted only from a client registered for the Individual Access Services exchange purpose (${IAS_EXCHANGE_PURPOSE_CODE}); this client registered for ${purpose ?? 'none'}`);
    }
    const request = checkTefcaIasExtension(extensions);
    const { issuer, claims } = await verifyIdToken(deps, assertion.community, request.idToken);
    const audit = (match: string) => (state.auditDetails = { [TEFCA_IAS_KEY]: { csp: issuer, match } });
    if (request.userIsPatient) checkSamePerson(claims, request.demographics);
    const matches = await matchPatients(deps.db, request.demographics);
    if (matches.length === 0) {
      audit('none');
      throw new TefcaIasError('no patient of this server matches patient_information (family name, given name and birthDate)');
    }
    if (matches.length > 1) {
      audit('several');
      throw new TefcaIasError('more than one patient of this server matches patient_information (family name, given name and birthDate): the patient cannot be told apart');
    }
    const patient = matches[0]!;
    audit('one');
    state.iasPatient = patient;
    return { patient, extensions: { ...udapClaims.extensions, [TEFCA_IAS_KEY]: request.carried } };
  } catch (error) {
    if (error instanceof TefcaIasError) throw new errors.InvalidGrant(error.message);
    throw error;
  }
}

/** The id_token's issuer (a trusted CSP) and its verified claims. */
async function verifyIdToken(deps: TefcaIasDeps, community: UdapCommunity, idToken: string): Promise<{ issuer: string; claims: JWTPayload }> {
  let issuer: string | undefined;
  let kid: string | undefined;
  try {
    issuer = decodeJwt(idToken).iss;
    kid = decodeProtectedHeader(idToken).kid;
  } catch {
    throw new TefcaIasError('id_token is not a JWT');
  }
  const csp = community.credentialServiceProviders.find((p) => p.issuer === issuer);
  if (!csp) throw new TefcaIasError(`the id_token's issuer ${issuer ?? '(none)'} is not a credential service provider this server trusts in ${community.uri}`);
  if (!deps.jwks) throw new TefcaIasError(`the keys of ${csp.issuer} cannot be fetched by this server`);
  const keys = await deps.jwks.get(csp.jwksUri, kid);
  if ('error' in keys) throw new TefcaIasError(`the keys of ${csp.issuer} could not be had: ${keys.error}`);
  try {
    // OIDC Core §3.1.3.7: signature by the issuer's key, iss, exp; aud is the IAS Provider's client at the CSP,
    // which this server does not know, so it must be present but is not compared.
    const { payload } = await jwtVerify(idToken, createLocalJWKSet({ keys: [...keys.keys] }), {
      issuer: csp.issuer,
      algorithms: [...UDAP_SIGNING_ALGS],
      clockTolerance: deps.clockSkewSeconds,
      requiredClaims: ['sub', 'aud', 'exp', 'iat'],
    });
    return { issuer: csp.issuer, claims: payload };
  } catch (error) {
    throw new TefcaIasError(idTokenProblem(error, csp.issuer, csp.jwksUri));
  }
}

function idTokenProblem(error: unknown, issuer: string, jwksUri: string): string {
  if (error instanceof joseErrors.JWTExpired) return `the id_token expired at ${new Date(Number(error.payload.exp) * 1000).toISOString()}`;
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) return `the id_token's signature does not verify with the keys of ${issuer} (${jwksUri})`;
  if (error instanceof joseErrors.JWKSNoMatchingKey) return `no key of ${issuer} (${jwksUri}) matches the id_token's kid and alg`;
  if (error instanceof joseErrors.JOSEAlgNotAllowed) return `the id_token's alg is not accepted; ${UDAP_SIGNING_ALGS.join(', ')} are`;
  if (error instanceof joseErrors.JWTClaimValidationFailed) return `the id_token's ${error.claim} claim: ${error.reason === 'missing' ? 'missing' : error.message}`;
  return 'the id_token could not be verified';
}

/**
 * The user says they are the patient: what the CSP proofed about them (OIDC Core §5.1 family_name, given_name,
 * birthdate, where present) must be the patient's, or a proofed identity could open anyone's records.
 */
function checkSamePerson(claims: JWTPayload, wanted: Demographics): void {
  const differs = (claim: string, value: string, same: (a: string, b: string) => boolean) => {
    const asserted = claims[claim];
    if (typeof asserted === 'string' && !same(asserted, value)) {
      throw new TefcaIasError(`the id_token's ${claim} is not the patient's in patient_information, although user_information says the user is the patient (ONESELF)`);
    }
  };
  const names = (a: string, b: string) => {
    const [x, y] = [normalizeName(a), normalizeName(b)];
    // "Mary Ann" in one, "Mary" in the other: the first given name is what the directory is matched on.
    return x === y || x.startsWith(`${y} `) || y.startsWith(`${x} `);
  };
  differs('family_name', wanted.family, (a, b) => normalizeName(a) === normalizeName(b));
  differs('given_name', wanted.given, names);
  differs('birthdate', wanted.birthDate, (a, b) => a === b);
}
