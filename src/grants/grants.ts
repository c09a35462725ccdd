import { sql, type Kysely, type Transaction } from 'kysely';

import type { DB } from '../db/schema.js';

/** A grant as operators and users see it: who, which app, what, for whom, since and last used. */
export interface GrantSummary {
  readonly grant_id: string;
  readonly client_id: string | null;
  readonly user_id: string | null;
  readonly patient: string | null;
  readonly scope: string | null;
  readonly created_at: Date;
  readonly last_used_at: Date | null;
  readonly expires_at: Date;
}

export async function listGrants(db: Kysely<DB>, filter: { user?: string | undefined; client?: string | undefined; patient?: string | undefined; after?: string | undefined; limit: number }): Promise<GrantSummary[]> {
  let q = db
    .selectFrom('grant_contexts')
    .select(['grant_id', 'client_id', 'account_id as user_id', 'patient', 'scope', 'created_at', 'last_used_at', 'expires_at'])
    .where('expires_at', '>', sql<Date>`now()`);
  if (filter.user) q = q.where('account_id', '=', filter.user);
  if (filter.client) q = q.where('client_id', '=', filter.client);
  if (filter.patient) q = q.where('patient', '=', filter.patient);
  if (filter.after) q = q.where('grant_id', '>', filter.after);
  return q.orderBy('grant_id').limit(filter.limit).execute();
}

export async function countLiveGrants(db: Kysely<DB>): Promise<number> {
  const row = await db.selectFrom('grant_contexts').select(sql<string | number | bigint>`count(*)`.as('count')).where('expires_at', '>', sql<Date>`now()`).executeTakeFirstOrThrow();
  return Number(row.count);
}

/**
 * Revokes grants at once: the grants, every token, code and refresh token issued under them, and their
 * contexts. A revoked refresh token is refused at its next use, a revoked access token at its next
 * introspection.
 */
export async function revokeGrants(db: Kysely<DB>, grantIds: readonly string[]): Promise<number> {
  if (!grantIds.length) return 0;
  return db.transaction().execute((trx) => revokeGrantsIn(trx, grantIds));
}

/** {@link revokeGrants} inside a transaction the caller holds. */
async function revokeGrantsIn(trx: Transaction<DB>, grantIds: readonly string[]): Promise<number> {
  if (!grantIds.length) return 0;
  await trx.deleteFrom('oidc_payloads').where('grant_id', 'in', grantIds).execute();
  const grants = await trx.deleteFrom('oidc_payloads').where('model', '=', 'Grant').where('id', 'in', grantIds).executeTakeFirst();
  await trx.deleteFrom('grant_contexts').where('grant_id', 'in', grantIds).execute();
  return Number(grants.numDeletedRows);
}

/**
 * Ends everything a user holds, in one transaction: every grant (and so every token and refresh token issued
 * under it) and every browser session. For a user who was just disabled.
 */
export async function endUserAccess(trx: Transaction<DB>, userId: string): Promise<void> {
  const grants = await trx.selectFrom('grant_contexts').select('grant_id').where('account_id', '=', userId).execute();
  await revokeGrantsIn(trx, grants.map((g) => g.grant_id));
  await endUserSessions(trx, userId);
}

/** Ends the user's sign-in sessions at the authorization server (oidc-provider's Session), grants untouched. */
export async function endUserSessions(trx: Transaction<DB>, userId: string): Promise<void> {
  await trx.deleteFrom('oidc_payloads').where('model', '=', 'Session').where(sql<string>`payload->>'accountId'`, '=', userId).execute();
}

/** Who holds a grant and for whom, for the audit record of its revocation. */
export async function grantHolder(db: Kysely<DB>, grantId: string): Promise<{ clientId: string | undefined; userId: string | undefined; patientId: string | undefined } | undefined> {
  const row = await db.selectFrom('grant_contexts').select(['client_id', 'account_id', 'patient']).where('grant_id', '=', grantId).executeTakeFirst();
  return row && { clientId: row.client_id ?? undefined, userId: row.account_id ?? undefined, patientId: row.patient ?? undefined };
}

export interface ConnectedApp {
  readonly client_id: string;
  readonly grant_ids: readonly string[];
  readonly scope: string;
  readonly patients: readonly string[];
  readonly since: Date;
  readonly last_used_at: Date | null;
}

/** The apps holding a live grant on the user's behalf, one entry per app. */
export async function connectedApps(db: Kysely<DB>, userId: string): Promise<ConnectedApp[]> {
  const rows = await db
    .selectFrom('grant_contexts')
    .select(['grant_id', 'client_id', 'scope', 'patient', 'created_at', 'last_used_at'])
    .where('account_id', '=', userId)
    .where('expires_at', '>', sql<Date>`now()`)
    .where('client_id', 'is not', null)
    .orderBy('created_at')
    .execute();
  const byClient = new Map<string, { grant_ids: string[]; scopes: Set<string>; patients: Set<string>; since: Date; last: Date | null }>();
  for (const row of rows) {
    const entry = byClient.get(row.client_id!) ?? { grant_ids: [], scopes: new Set<string>(), patients: new Set<string>(), since: row.created_at, last: null };
    entry.grant_ids.push(row.grant_id);
    for (const s of (row.scope ?? '').split(' ').filter(Boolean)) entry.scopes.add(s);
    if (row.patient) entry.patients.add(row.patient);
    if (row.last_used_at && (!entry.last || row.last_used_at > entry.last)) entry.last = row.last_used_at;
    byClient.set(row.client_id!, entry);
  }
  return [...byClient.entries()].map(([client_id, e]) => ({ client_id, grant_ids: e.grant_ids, scope: [...e.scopes].join(' '), patients: [...e.patients], since: e.since, last_used_at: e.last }));
}

/**
 * Ends a user's grants for every patient in context that is not one of `reached`, the patients the user acts for
 * now (an operator changed the records linked to the user, or their fhirUser), inside the caller's transaction.
 */
export async function endUserAccessBeyond(trx: Transaction<DB>, userId: string, reached: readonly string[]): Promise<number> {
  let query = trx.selectFrom('grant_contexts').select('grant_id').where('account_id', '=', userId).where('patient', 'is not', null);
  if (reached.length) query = query.where('patient', 'not in', reached);
  const grants = await query.execute();
  return revokeGrantsIn(trx, grants.map((g) => g.grant_id));
}

/** Ends a user's grants for one patient (a representative whose designation was revoked), inside the caller's transaction. */
export async function endUserAccessToPatient(trx: Transaction<DB>, userId: string, patientId: string): Promise<number> {
  const grants = await trx.selectFrom('grant_contexts').select('grant_id').where('account_id', '=', userId).where('patient', '=', patientId).execute();
  return revokeGrantsIn(trx, grants.map((g) => g.grant_id));
}
