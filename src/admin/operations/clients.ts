import { errors } from 'oidc-provider';

import { HttpProblem } from '../../errors.js';
import { deleteClient, generateClientId, getClient, insertClient, rotateClientSecret, settleClientStatus, updateClient, type ClientRecord } from '../../clients/registry.js';
import type { ClientStatus } from '../../db/tables/clients.js';
import { PAYER_ROLES } from '../../db/tables/payer.js';
import { checkClientMetadata, ClientRuleError, METADATA_LIMITS, needsSecret, ORGANIZATION_IDENTIFIER_PATTERN, toProviderMetadata } from '../../smart/client-rules.js';
import type { AdminDeps } from '../deps.js';
import { inputChecker } from './input.js';
import type { Operator } from './operator.js';
import { instant, SEARCHED_RANGE, type InstantRange } from '../../payer/instants.js';

/*
 * What an operator does to clients, whichever door they came in by (the admin API or the console): the
 * client rules, oidc-provider's own validation, the cache of this process, and the audit trail.
 */

const uri = { type: 'string', minLength: 1, maxLength: METADATA_LIMITS.uri } as const;

/** RFC 7591 client metadata, as far as this server uses it, plus ours (consent). */
export const CLIENT_METADATA_PROPERTIES = {
  client_name: { type: 'string', minLength: 1, maxLength: METADATA_LIMITS.name },
  redirect_uris: { type: 'array', maxItems: METADATA_LIMITS.uris, items: uri },
  grant_types: { type: 'array', uniqueItems: true, maxItems: 3, items: { type: 'string', enum: ['authorization_code', 'refresh_token', 'client_credentials'] } },
  token_endpoint_auth_method: { type: 'string', enum: ['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'] },
  token_endpoint_auth_signing_alg: { type: 'string', enum: ['RS384', 'ES384', 'RS256', 'ES256'] },
  jwks: {
    type: 'object',
    required: ['keys'],
    additionalProperties: false,
    properties: { keys: { type: 'array', minItems: 1, maxItems: 20, items: { type: 'object', required: ['kty'], properties: { kty: { type: 'string' }, kid: { type: 'string' } } } } },
  },
  jwks_uri: uri,
  scope: { type: 'string', maxLength: METADATA_LIMITS.scope, description: 'every scope the client may be granted, SMART scopes included' },
  launch_uri: uri,
  logo_uri: uri,
  client_uri: uri,
  policy_uri: uri,
  tos_uri: uri,
  contacts: { type: 'array', maxItems: METADATA_LIMITS.contacts, items: { type: 'string', maxLength: METADATA_LIMITS.contact } },
  consent: { type: 'string', enum: ['required', 'pre-approved'], description: 'pre-approved clients skip the consent page' },
  payer_role: { type: 'string', enum: [...PAYER_ROLES], description: 'CMS-0057-F: patient-access apps count in the Patient Access report; provider-access clients reach the members attributed to their organisation who have not opted out; payer-to-payer clients the members who opted in' },
  organization_identifiers: { type: 'array', maxItems: 20, uniqueItems: true, items: { type: 'string', pattern: ORGANIZATION_IDENTIFIER_PATTERN, description: 'system|value, e.g. http://hl7.org/fhir/sid/us-npi|1234567893' }, description: 'the organisation a payer client acts for (NPI, TIN), matched against attribution lists and opt-ins' },
} as const;

export const CLIENT_STATUS_PROPERTY = { type: 'string', enum: ['pending', 'active', 'suspended'] } as const;
export const CLIENT_ID_PROPERTY = { type: 'string', pattern: '^[A-Za-z0-9._~-][A-Za-z0-9._~:-]{0,127}$', description: '1–128 of A–Z a–z 0–9 . _ ~ - and :, not starting with :' } as const;
/** Why a registration was approved or rejected: kept in the audit trail. */
export const DECISION_REASON_PROPERTY = { type: 'string', minLength: 1, maxLength: 1000 } as const;

export interface ClientInput {
  client_id?: string;
  status?: ClientStatus;
  [key: string]: unknown;
}

export const NEW_CLIENT_SCHEMA = { type: 'object', additionalProperties: false, properties: { client_id: CLIENT_ID_PROPERTY, status: CLIENT_STATUS_PROPERTY, ...CLIENT_METADATA_PROPERTIES } } as const;
export const CLIENT_CHANGE_SCHEMA = { type: 'object', additionalProperties: false, minProperties: 1, properties: { status: CLIENT_STATUS_PROPERTY, ...CLIENT_METADATA_PROPERTIES } } as const;
/** For input that did not pass the API's route schemas. */
export const checkNewClient = inputChecker<ClientInput>(NEW_CLIENT_SCHEMA);
export const checkClientChange = inputChecker<ClientInput>(CLIENT_CHANGE_SCHEMA);

/** The client rules, then oidc-provider's own validation of what it will be served. */
async function validated(deps: AdminDeps, metadata: Record<string, unknown>): Promise<Record<string, unknown>> {
  const grants = (metadata.grant_types as string[] | undefined) ?? ['authorization_code'];
  const full = { token_endpoint_auth_method: 'client_secret_basic', ...metadata, grant_types: grants, response_types: grants.includes('authorization_code') ? ['code'] : [], redirect_uris: metadata.redirect_uris ?? [] };
  try {
    checkClientMetadata(full, { writer: 'operator', vouched: true, allowHttpJwksUri: deps.config.outboundAllowPrivate });
    await deps.host.provider.Client.validate({ client_id: 'validation', ...toProviderMetadata(full), ...(needsSecret(full) ? { client_secret: 'x'.repeat(43) } : {}) });
  } catch (error) {
    if (error instanceof ClientRuleError) throw HttpProblem.invalid(error.message);
    if (error instanceof errors.InvalidClientMetadata || error instanceof errors.InvalidRedirectUri) throw HttpProblem.invalid(String(error.error_description));
    throw error;
  }
  return full;
}

export async function existingClient(deps: Pick<AdminDeps, 'db'>, clientId: string): Promise<ClientRecord> {
  const client = await getClient(deps.db, clientId);
  if (!client) throw HttpProblem.notFound(`no client ${clientId}`);
  return client;
}

/** Registers a client; the secret, when it authenticates with one, is returned once. */
export async function addClient(deps: AdminDeps, by: Operator, input: ClientInput): Promise<{ record: ClientRecord; secret: string | undefined }> {
  const { client_id: requestedId, status = 'active', ...metadata } = input;
  const clientId = requestedId ?? generateClientId();
  if (clientId.startsWith('urn:smart-auth:')) throw HttpProblem.invalid('client_id: the urn:smart-auth: prefix is reserved');
  const full = await validated(deps, metadata);
  const created = await insertClient(deps.db, deps.box, clientId, full, status, { withSecret: needsSecret(full) });
  await deps.audit.record({ ...by, type: 'client.created', clientId, details: { status, token_endpoint_auth_method: full.token_endpoint_auth_method, grant_types: full.grant_types, scope: full.scope } });
  return created;
}

/**
 * Changes a client's metadata and/or status: the properties given replace those of the client, the rest
 * stays; a property given as undefined is removed (JSON cannot say that; the console's edit form does).
 */
export async function changeClient(deps: AdminDeps, by: Operator, clientId: string, input: ClientInput): Promise<{ record: ClientRecord; secret: string | undefined }> {
  const current = await existingClient(deps, clientId);
  const { status, ...changes } = input;
  // A pending registration leaves that state only by a decision bound to the version reviewed: a status
  // change here would approve whatever the client (RFC 7592) made of its registration after the operator looked.
  if (current.status === 'pending' && status !== undefined && status !== 'pending') {
    throw HttpProblem.conflict(`client ${current.client_id} is pending: approve or reject it (POST /admin/api/clients/${current.client_id}/approve or /reject, with the reviewed_updated_at of the registration reviewed), not by changing its status`);
  }
  const currentMetadata = Object.fromEntries(Object.entries(current.metadata).filter(([key]) => key !== 'client_id'));
  const merged = Object.fromEntries(Object.entries({ ...currentMetadata, ...changes }).filter(([, value]) => value !== undefined));
  const full = await validated(deps, merged);
  const updated = await updateClient(deps.db, deps.box, current.client_id, full, status, { withSecret: needsSecret(full) });
  deps.clients.invalidate(current.client_id);
  await deps.audit.record({ ...by, type: 'client.updated', clientId: current.client_id, details: { changed: Object.keys(input), status: updated.record.status } });
  return updated;
}

/**
 * Approves or rejects a registration waiting for approval (REGISTRATION_STATUS=pending), with the reason,
 * which the audit trail keeps. A rejected client is suspended, not deleted: its client_id stays taken and
 * its record stays next to the audited decision, its registration access token no longer works (only
 * active clients exist for oidc-provider), and an operator who rejected by mistake can reactivate it.
 * Only a pending client is decided, atomically: of two operators deciding at once, one wins, the other
 * gets 409.
 */
const REVIEWED: InstantRange = { ...SEARCHED_RANGE, use: 'a registration was last changed' };

/**
 * Approves or rejects a pending registration. `reviewed`: the `updated_at` of the registration the operator
 * looked at (RFC 3339); the decision then applies only to it, and a registration the client has changed since
 * (RFC 7592, with its registration access token: other redirect URIs, wider scopes) is a 409, to be reviewed
 * again. Required to approve, optional to reject. The console always sends it; the admin API takes it as
 * `reviewed_updated_at`.
 */
export async function decideRegistration(deps: AdminDeps, by: Operator, clientId: string, decision: 'approve' | 'reject', reason: string | undefined, reviewed?: string): Promise<ClientRecord> {
  if (decision === 'reject' && !reason?.trim()) throw HttpProblem.invalid('reason: say why the registration is rejected');
  // An approval grants what the registration says: it must say which version was reviewed. A rejection
  // grants nothing, so it may be made on the registration as it stands.
  if (decision === 'approve' && reviewed === undefined) {
    await existingClient(deps, clientId); // an unknown client is a 404 first, as for every other action
    throw HttpProblem.invalid('reviewed_updated_at: the updated_at of the registration reviewed is required to approve it');
  }
  const seen = reviewed === undefined ? undefined : instant('reviewed_updated_at', reviewed, REVIEWED);
  const status: ClientStatus = decision === 'approve' ? 'active' : 'suspended';
  const record = await settleClientStatus(deps.db, clientId, 'pending', status, seen);
  if (!record) {
    const current = await existingClient(deps, clientId);
    if (current.status === 'pending') {
      throw HttpProblem.conflict(`client ${clientId} changed its registration at ${current.updated_at.toISOString()}, after the version reviewed (${reviewed ?? ''}): review it again`);
    }
    throw HttpProblem.conflict(`client ${clientId} is ${current.status}, not pending: only a pending registration is approved or rejected`);
  }
  deps.clients.invalidate(clientId);
  await deps.audit.record({ ...by, type: decision === 'approve' ? 'client.approved' : 'client.rejected', clientId, details: { status, ...(reason?.trim() ? { reason: reason.trim() } : {}) } });
  return record;
}

export async function removeClient(deps: AdminDeps, by: Operator, clientId: string): Promise<void> {
  if (!(await deleteClient(deps.db, clientId))) throw HttpProblem.notFound(`no client ${clientId}`);
  deps.clients.invalidate(clientId);
  await deps.audit.record({ ...by, type: 'client.deleted', clientId });
}

/** A new secret for a client that authenticates with one, returned once. */
export async function newClientSecret(deps: AdminDeps, by: Operator, clientId: string): Promise<{ record: ClientRecord; secret: string }> {
  const current = await existingClient(deps, clientId);
  if (!needsSecret(current.metadata)) throw HttpProblem.invalid(`client ${current.client_id} authenticates with ${String(current.metadata.token_endpoint_auth_method)}: it has no secret`);
  const secret = await rotateClientSecret(deps.db, deps.box, current.client_id);
  deps.clients.invalidate(current.client_id);
  await deps.audit.record({ ...by, type: 'client.secret_rotated', clientId });
  return { record: await existingClient(deps, clientId), secret };
}

/** An initial access token for dynamic registration (RFC 7591 §3), for REGISTRATION=token. */
export async function newInitialAccessToken(deps: AdminDeps, by: Operator, expiresIn: number): Promise<string> {
  if (deps.config.registration !== 'token') throw HttpProblem.conflict(`dynamic registration is ${deps.config.registration}: initial access tokens are used only with REGISTRATION=token`);
  const token = await new deps.host.provider.InitialAccessToken({ expiresIn }).save();
  await deps.audit.record({ ...by, type: 'client.updated', details: { initial_access_token: 'created', expires_in: expiresIn } });
  return token;
}
