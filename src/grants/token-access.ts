import { sql, type Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import type { SecretBox } from '../security/secret-box.js';
import { actsForEveryPatient, userPatients } from '../users/users.js';

/**
 * What a FHIR request's access token stands for, read in one statement: the token (live, not revoked),
 * its client (still active), the grant's launch context (the patient), and the user with the patients the
 * user may act for. The gateway asks this of every request, so it is one round trip.
 */
export interface TokenAccess {
  readonly kind: 'AccessToken' | 'ClientCredentials';
  readonly clientId: string;
  readonly scope: string;
  /** The FHIR base the token was issued for (its `aud`). */
  readonly audience: string | undefined;
  readonly expiresAt: Date;
  readonly grantId: string | undefined;
  readonly userId: string | undefined;
  /** The patient in context (`patient` of the token response). */
  readonly patient: string | undefined;
  /** Whom `user/` scopes reach: `all` for a clinician, the user's own and linked records otherwise; undefined without a user. */
  readonly userPatients: readonly string[] | 'all' | undefined;
}

interface Row {
  model: string;
  client_id: string | null;
  scope: string | null;
  aud: string | null;
  expires_at: Date | null;
  grant_id: string | null;
  account_id: string | null;
  patient: string | null;
  fhir_user: string | null;
  linked: string[] | string | null;
}

/** An opaque access token (or a backend's client-credentials token), by its value. */
export async function accessOfOpaqueToken(db: Kysely<DB>, box: SecretBox, token: string): Promise<TokenAccess | undefined> {
  const row = await db
    .selectFrom('oidc_payloads as p')
    .innerJoin('clients as c', (join) => join.onRef('c.client_id', '=', sql<string>`p.payload->>'clientId'`).on('c.status', '=', 'active'))
    .leftJoin('grant_contexts as gc', 'gc.grant_id', 'p.grant_id')
    .leftJoin('users as u', (join) => join.onRef('u.id', '=', sql<string>`p.payload->>'accountId'`).on('u.disabled', '=', false))
    .select([
      'p.model',
      'c.client_id',
      sql<string | null>`p.payload->>'scope'`.as('scope'),
      sql<string | null>`p.payload->>'aud'`.as('aud'),
      'p.expires_at',
      'p.grant_id',
      sql<string | null>`p.payload->>'accountId'`.as('account_id'),
      'gc.patient',
      'u.fhir_user',
      sql<string[] | null>`(select json_agg(up.patient_id) from user_patients up where up.user_id = u.id)`.as('linked'),
    ])
    .where('p.model', 'in', ['AccessToken', 'ClientCredentials'])
    .where('p.id', 'in', box.bearerIds(token))
    .where('p.expires_at', '>', sql<Date>`now()`)
    .executeTakeFirst();
  return row && toAccess(row);
}

/**
 * A JWT access token's grant, by the grant id the token carries: alive (not revoked, not expired), its client
 * active. A JWT of a backend service has no grant: its client is checked alone.
 */
export async function accessOfGrant(db: Kysely<DB>, grantId: string | undefined, clientId: string): Promise<Omit<TokenAccess, 'kind' | 'scope' | 'audience' | 'expiresAt'> | undefined> {
  if (grantId === undefined) {
    const client = await db.selectFrom('clients').select('client_id').where('client_id', '=', clientId).where('status', '=', 'active').executeTakeFirst();
    return client && { clientId, grantId: undefined, userId: undefined, patient: undefined, userPatients: undefined };
  }
  const row = await db
    .selectFrom('oidc_payloads as g')
    .innerJoin('clients as c', (join) => join.onRef('c.client_id', '=', sql<string>`g.payload->>'clientId'`).on('c.status', '=', 'active'))
    .leftJoin('grant_contexts as gc', 'gc.grant_id', 'g.id')
    .leftJoin('users as u', (join) => join.onRef('u.id', '=', sql<string>`g.payload->>'accountId'`).on('u.disabled', '=', false))
    .select([
      'g.model',
      'c.client_id',
      sql<string | null>`null`.as('scope'),
      sql<string | null>`null`.as('aud'),
      'g.expires_at',
      'g.id as grant_id',
      sql<string | null>`g.payload->>'accountId'`.as('account_id'),
      'gc.patient',
      'u.fhir_user',
      sql<string[] | null>`(select json_agg(up.patient_id) from user_patients up where up.user_id = u.id)`.as('linked'),
    ])
    .where('g.model', '=', 'Grant')
    .where('g.id', '=', grantId)
    .where('g.expires_at', '>', sql<Date>`now()`)
    .executeTakeFirst();
  if (!row || row.client_id !== clientId) return undefined;
  const access = toAccess(row);
  return access && { clientId, grantId, userId: access.userId, patient: access.patient, userPatients: access.userPatients };
}

function toAccess(row: Row): TokenAccess | undefined {
  // A grant made for a user who has since been disabled or removed reaches nothing.
  if (row.account_id && !row.fhir_user) return undefined;
  const linked = typeof row.linked === 'string' ? (JSON.parse(row.linked) as string[]) : (row.linked ?? []);
  return {
    kind: row.model === 'ClientCredentials' ? 'ClientCredentials' : 'AccessToken',
    clientId: row.client_id!,
    scope: row.scope ?? '',
    audience: row.aud ?? undefined,
    expiresAt: row.expires_at ?? new Date(0),
    grantId: row.grant_id ?? undefined,
    userId: row.account_id ?? undefined,
    patient: row.patient ?? undefined,
    userPatients: row.fhir_user ? (actsForEveryPatient(row.fhir_user) ? 'all' : userPatients(row.fhir_user, linked)) : undefined,
  };
}
