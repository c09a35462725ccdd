import type { AdapterPayload } from 'oidc-provider';
import type { Kysely } from 'kysely';

import type { AuditLog } from '../audit/audit.js';
import type { ClientCache } from '../clients/client-cache.js';
import type { CrlCache } from '../clients/crl-cache.js';
import { cancelUdapRegistration, findUdapRegistration, saveUdapRegistration, useUdapJti } from '../clients/udap-registrations.js';
import type { Config } from '../config/config.js';
import { TEFCA_BASIC_APP_CERTIFICATION, type UdapCommunity, type UdapConfig } from '../config/udap-config.js';
import type { DB } from '../db/schema.js';
import type { ClientStatus } from '../db/tables/clients.js';
import type { SecretBox } from '../security/secret-box.js';
import { checkClientMetadata, ClientRuleError, UDAP_COMMUNITY_PROPERTY, UDAP_EXCHANGE_PURPOSE_PROPERTY, UDAP_ISS_PROPERTY, udapRegisteredScope, widenedProperties } from '../smart/client-rules.js';
import { ROUTES } from '../smart/profile.js';
import { checkStatementClaims, statementMetadata, UdapRegistrationError } from '../smart/udap/software-statement.js';
import { verifyCommunityJwt } from './trust.js';

/**
 * UDAP trusted dynamic registration (HL7 UDAP Security IG §3, UDAP Dynamic Client Registration): a
 * registration request carrying a `software_statement` signed by a certificate of a trust community.
 *
 * - New (iss, community): a client is created, 201. Its status follows REGISTRATION_STATUS like any other
 *   registration; but the certificate is the trust an operator would otherwise give, so it may register,
 *   without an operator, for the scopes its community allows (`allowedScope`), system/ scopes included.
 * - The same iss again in the same community: the registration is replaced, same client_id, 200 (IG §3.4);
 *   with an empty `grant_types` it is cancelled, 200 with `grant_types: []`.
 * - Failures answer 400 with the IG's errors (UDAP DCR §5.2).
 */
export interface UdapRegistrationDeps {
  readonly config: Config;
  readonly udap: UdapConfig;
  readonly db: Kysely<DB>;
  readonly box: SecretBox;
  readonly crls: CrlCache;
  readonly audit: AuditLog;
  readonly clients: ClientCache<AdapterPayload>;
}

export interface UdapRegistrationAnswer {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

export interface RequestFacts {
  readonly sourceIp: string;
  readonly requestId: string;
}

/** Does this registration request body ask for UDAP registration? */
export function isUdapRegistration(body: unknown): body is Record<string, unknown> {
  return body !== null && typeof body === 'object' && !Array.isArray(body) && 'software_statement' in body;
}

export async function registerUdapClient(deps: UdapRegistrationDeps, body: Record<string, unknown>, facts: RequestFacts): Promise<UdapRegistrationAnswer> {
  try {
    return await register(deps, body, facts);
  } catch (error) {
    if (error instanceof UdapRegistrationError) return { status: 400, body: { error: error.code, error_description: error.message } };
    if (error instanceof ClientRuleError) return { status: 400, body: { error: 'invalid_client_metadata', error_description: error.message } };
    throw error;
  }
}

async function register(deps: UdapRegistrationDeps, body: Record<string, unknown>, facts: RequestFacts): Promise<UdapRegistrationAnswer> {
  const { config, db } = deps;
  const statement = body.software_statement;
  if (typeof statement !== 'string' || statement === '') throw new UdapRegistrationError('invalid_software_statement', 'software_statement must be a signed JWT');
  // UDAP DCR §3: the request says which version of UDAP it follows.
  if (body.udap !== '1') throw new UdapRegistrationError('invalid_client_metadata', 'udap must be "1" in a UDAP registration request');

  const trusted = await verifyCommunityJwt(statement, deps.udap.communities, deps.crls);
  if (!trusted.ok) {
    const code = trusted.kind === 'invalid' ? 'invalid_software_statement' : 'unapproved_software_statement';
    throw new UdapRegistrationError(code, `software_statement: ${trusted.message}`);
  }
  const { community, leaf, claims } = trusted;
  const now = Math.floor(Date.now() / 1000);
  const { iss, jti, exp } = checkStatementClaims(claims, `${config.issuer}${ROUTES.registration}`, now, config.clockSkewSeconds);
  if (!leaf.sanUris.includes(iss)) {
    throw new UdapRegistrationError('invalid_software_statement', `iss ${iss} is not a URI in the Subject Alternative Name of the certificate (${leaf.sanUris.join(', ') || 'none'})`);
  }
  const certifications = await checkCertifications(deps, community, body.certifications);
  const exchangePurpose = community.tefca ? tefcaExchangePurpose(certifications) : '';
  const requested = statementMetadata(claims, { loopbackHttp: config.outboundAllowPrivate });
  const existing = await findUdapRegistration(db, community.uri, iss, exchangePurpose);

  if (!(await useUdapJti(db, deps.box.mac('udap-jti', `${iss}\n${jti}`), new Date((exp + config.clockSkewSeconds) * 1000)))) {
    throw new UdapRegistrationError('invalid_software_statement', 'jti has been used already: every software statement needs a new one');
  }
  const base = { sourceIp: facts.sourceIp, requestId: facts.requestId };
  const udapDetails = { community: community.uri, iss, ...(exchangePurpose ? { exchange_purpose: exchangePurpose } : {}) };

  if (requested === 'cancel') {
    if (!existing) throw new UdapRegistrationError('invalid_client_metadata', `grant_types is empty, which cancels a registration, but ${iss} has none in this community`);
    await cancelUdapRegistration(db, existing.clientId);
    deps.clients.invalidate(existing.clientId);
    await deps.audit.record({ ...base, type: 'client.deleted', actorType: 'client', actorId: existing.clientId, clientId: existing.clientId, details: { by: 'UDAP registration (empty grant_types)', udap: udapDetails } });
    return { status: 200, body: { client_id: existing.clientId, software_statement: statement, grant_types: [] } };
  }

  const metadata: Record<string, unknown> = {
    ...requested,
    scope: udapRegisteredScope(requested.scope as string, community.allowedScope, community.tieredOAuth !== undefined),
    [UDAP_ISS_PROPERTY]: iss,
    [UDAP_COMMUNITY_PROPERTY]: community.uri,
    ...(exchangePurpose ? { [UDAP_EXCHANGE_PURPOSE_PROPERTY]: exchangePurpose } : {}),
  };
  checkClientMetadata(metadata, { writer: 'self', vouched: true, allowHttpJwksUri: config.outboundAllowPrivate });

  let status: ClientStatus = config.registrationStatus;
  let widened: string[] = [];
  if (existing) {
    widened = widenedProperties(existing.metadata, metadata);
    status = existing.status === 'suspended' ? 'suspended' : widened.length && config.registrationStatus === 'pending' ? 'pending' : existing.status;
  }
  const { clientId, created } = await saveUdapRegistration(db, community.uri, iss, exchangePurpose, metadata, status);
  deps.clients.invalidate(clientId);
  await deps.audit.record(
    created
      ? { ...base, type: 'client.registered', actorType: 'anonymous', clientId, details: { client_name: metadata.client_name, token_endpoint_auth_method: 'private_key_jwt', scope: metadata.scope, status, udap: udapDetails } }
      : { ...base, type: 'client.updated', actorType: 'client', actorId: clientId, clientId, details: { by: 'UDAP registration', widened, status, udap: udapDetails } },
  );
  const internal = new Set<string>([UDAP_ISS_PROPERTY, UDAP_COMMUNITY_PROPERTY, UDAP_EXCHANGE_PURPOSE_PROPERTY]);
  const published = Object.fromEntries(Object.entries(metadata).filter(([name]) => !internal.has(name)));
  return { status: created ? 201 : 200, body: { client_id: clientId, ...published, software_statement: statement } };
}

/**
 * UDAP Certifications and Endorsements §4: when the community requires certifications, each required one must
 * come as a JWT signed by a certificate of the community whose `certification_uris` names it. Unknown ones
 * are ignored (IG §3.3).
 */
async function checkCertifications(deps: UdapRegistrationDeps, community: UdapCommunity, certifications: unknown): Promise<Map<string, Record<string, unknown>>> {
  const held = new Map<string, Record<string, unknown>>();
  if (!community.certificationsRequired.length) return held;
  const list = Array.isArray(certifications) ? certifications.filter((c): c is string => typeof c === 'string') : [];
  for (const certification of list) {
    const trusted = await verifyCommunityJwt(certification, [community], deps.crls);
    if (!trusted.ok) continue;
    const uris = trusted.claims.certification_uris;
    const exp = trusted.claims.exp;
    if (typeof exp === 'number' && exp * 1000 < Date.now()) continue;
    if (Array.isArray(uris)) for (const uri of uris) if (typeof uri === 'string') held.set(uri, trusted.claims);
  }
  const missing = community.certificationsRequired.filter((uri) => !held.has(uri));
  if (missing.length) {
    throw new UdapRegistrationError('unapproved_software_statement', `this community requires the certification${missing.length > 1 ? 's' : ''} ${missing.join(', ')}: send ${missing.length > 1 ? 'them' : 'it'} in certifications, signed by a certificate of the community`);
  }
  return held;
}

/**
 * TEFCA: the Basic App Certification names the exchange purpose the registration is for, exactly one; the
 * client registers once per exchange purpose.
 */
function tefcaExchangePurpose(certifications: ReadonlyMap<string, Record<string, unknown>>): string {
  const purposes = certifications.get(TEFCA_BASIC_APP_CERTIFICATION)?.exchange_purposes;
  if (!Array.isArray(purposes) || purposes.length !== 1 || typeof purposes[0] !== 'string' || purposes[0] === '') {
    throw new UdapRegistrationError('unapproved_software_statement', `the ${TEFCA_BASIC_APP_CERTIFICATION} certification must name exactly one exchange purpose in exchange_purposes: register once per exchange purpose`);
  }
  return purposes[0];
}
