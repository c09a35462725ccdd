import { randomBytes } from 'node:crypto';

import { sql, type Kysely } from 'kysely';

import { HttpProblem } from '../errors.js';
import type { DB } from '../db/schema.js';
import type { ClientStatus } from '../db/tables/clients.js';
import type { SecretBox } from '../security/secret-box.js';

/**
 * The clients table as operators see it: RFC 7591 metadata (our `scope` is every scope the client may be
 * granted), a status, and a secret that is generated here, sealed at rest and shown once.
 */
export interface ClientRecord {
  readonly client_id: string;
  readonly status: ClientStatus;
  readonly metadata: Record<string, unknown>;
  readonly has_secret: boolean;
  readonly created_at: Date;
  readonly updated_at: Date;
}

/** 256 random bits: a secret no one guesses, which is why it can be encrypted rather than slowly hashed. */
export function generateClientSecret(): string {
  return randomBytes(32).toString('base64url');
}

export function generateClientId(): string {
  return randomBytes(16).toString('base64url');
}

/** Stores a new client; with `withSecret` (a symmetric client), a secret generated here, returned once. */
export async function insertClient(db: Kysely<DB>, box: SecretBox, clientId: string, metadata: Record<string, unknown>, status: ClientStatus, { withSecret }: { withSecret: boolean }): Promise<{ record: ClientRecord; secret: string | undefined }> {
  const secret = withSecret ? generateClientSecret() : undefined;
  const exists = await db.selectFrom('clients').select('client_id').where('client_id', '=', clientId).executeTakeFirst();
  if (exists) throw HttpProblem.conflict(`client_id ${clientId} is taken`);
  const row = await db
    .insertInto('clients')
    .values({ client_id: clientId, metadata: JSON.stringify({ ...metadata, client_id: clientId }), client_secret: secret ? box.seal(secret, 'client-secret', clientId) : null, status })
    .returningAll()
    .executeTakeFirstOrThrow();
  return { record: toRecord(row), secret };
}

/** A client of one of these statuses, as oidc-provider is to be served it: its metadata and its secret opened. */
export async function readClient(db: Kysely<DB>, box: SecretBox, clientId: string, statuses: readonly ClientStatus[]): Promise<{ metadata: Record<string, unknown>; secret: string | undefined } | undefined> {
  const row = await db.selectFrom('clients').select(['metadata', 'client_secret']).where('client_id', '=', clientId).where('status', 'in', statuses).executeTakeFirst();
  if (!row) return undefined;
  return { metadata: row.metadata, secret: row.client_secret ? box.open(row.client_secret, 'client-secret', clientId) : undefined };
}

/**
 * Writes a registration made or changed by the client itself (RFC 7591, RFC 7592): a new one starts as
 * `newStatus`; a changed one keeps its status, unless `reapprove` sends it back for approval. The secret is
 * sealed, never stored in the metadata. Returns the status it ends in.
 */
export async function saveRegisteredClient(db: Kysely<DB>, box: SecretBox, clientId: string, metadata: Record<string, unknown>, secret: string | undefined, { newStatus, reapprove }: { newStatus: ClientStatus; reapprove: boolean }): Promise<ClientStatus> {
  const row = {
    metadata: JSON.stringify({ ...metadata, client_id: clientId }),
    client_secret: secret === undefined ? null : box.seal(secret, 'client-secret', clientId),
    updated_at: sql<Date>`now()`,
  };
  const saved = await db
    .insertInto('clients')
    .values({ client_id: clientId, ...row, status: newStatus })
    .onConflict((oc) => oc.column('client_id').doUpdateSet(reapprove ? { ...row, status: 'pending' } : row))
    .returning('status')
    .executeTakeFirstOrThrow();
  return saved.status;
}

export async function getClient(db: Kysely<DB>, clientId: string): Promise<ClientRecord | undefined> {
  const row = await db.selectFrom('clients').selectAll().where('client_id', '=', clientId).executeTakeFirst();
  return row && toRecord(row);
}

/** The display names of these clients (their client_id where they have none); unknown ids are left out. */
export async function clientNames(db: Kysely<DB>, clientIds: readonly string[]): Promise<Map<string, string>> {
  if (!clientIds.length) return new Map();
  const rows = await db.selectFrom('clients').select(['client_id', sql<string | null>`metadata->>'client_name'`.as('name')]).where('client_id', 'in', clientIds).execute();
  return new Map(rows.map((r) => [r.client_id, r.name ?? r.client_id]));
}

/** Active clients registered with a launch_uri: the apps an EHR (or the launcher) can launch. */
export async function launchableClients(db: Kysely<DB>): Promise<{ id: string; name: string; launchUri: string }[]> {
  const rows = await db
    .selectFrom('clients')
    .select(['client_id', sql<string | null>`metadata->>'client_name'`.as('name'), sql<string>`metadata->>'launch_uri'`.as('launch_uri')])
    .where('status', '=', 'active')
    .where(sql<boolean>`metadata ? 'launch_uri'`)
    .orderBy('client_id')
    .execute();
  return rows.map((c) => ({ id: c.client_id, name: c.name ?? c.client_id, launchUri: c.launch_uri }));
}

/** Clients by client_id; `q` finds a part of the client_id or of the name, in any case. */
export async function listClients(db: Kysely<DB>, options: { after?: string | undefined; limit: number; status?: ClientStatus | undefined; q?: string | undefined }): Promise<ClientRecord[]> {
  let q = db.selectFrom('clients').selectAll();
  if (options.after) q = q.where('client_id', '>', options.after);
  if (options.status) q = q.where('status', '=', options.status);
  if (options.q) {
    const pattern = `%${options.q.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    q = q.where((eb) => eb.or([eb(sql<string>`lower(client_id)`, 'like', pattern), eb(sql<string>`lower(metadata->>'client_name')`, 'like', pattern)]));
  }
  return (await q.orderBy('client_id').limit(options.limit).execute()).map(toRecord);
}

/**
 * Replaces the metadata (and the status if given). `withSecret`: the client authenticates with a secret;
 * one is created when it had none, and dropped when it no longer does.
 */
export async function updateClient(db: Kysely<DB>, box: SecretBox, clientId: string, metadata: Record<string, unknown>, status: ClientStatus | undefined, { withSecret }: { withSecret: boolean }): Promise<{ record: ClientRecord; secret: string | undefined }> {
  const current = await db.selectFrom('clients').select(['client_secret']).where('client_id', '=', clientId).executeTakeFirst();
  if (!current) throw HttpProblem.notFound(`no client ${clientId}`);
  const secret = withSecret && !current.client_secret ? generateClientSecret() : undefined;
  const row = await db
    .updateTable('clients')
    .set({
      metadata: JSON.stringify({ ...metadata, client_id: clientId }),
      ...(status ? { status } : {}),
      ...(secret ? { client_secret: box.seal(secret, 'client-secret', clientId) } : {}),
      ...(!withSecret ? { client_secret: null } : {}),
      updated_at: sql<Date>`now()`,
    })
    .where('client_id', '=', clientId)
    .returningAll()
    .executeTakeFirstOrThrow();
  return { record: toRecord(row), secret };
}

/**
 * Moves a client from status `from` to `to` in one statement, so that of concurrent decisions exactly one
 * applies; undefined when the client is not (or no longer) in `from`, or does not exist.
 */
export async function settleClientStatus(db: Kysely<DB>, clientId: string, from: ClientStatus, to: ClientStatus, reviewed?: Date): Promise<ClientRecord | undefined> {
  let update = db.updateTable('clients').set({ status: to, updated_at: sql<Date>`now()` }).where('client_id', '=', clientId).where('status', '=', from);
  // Only the registration as it was reviewed (its last change, to the millisecond a Date holds): not one the
  // client changed since (RFC 7592) with its registration access token.
  if (reviewed) update = update.where(sql<Date>`date_trunc('milliseconds', updated_at)`, '=', reviewed);
  const row = await update.returningAll().executeTakeFirst();
  return row && toRecord(row);
}

/** How many clients there are of each status. */
export async function countClientsByStatus(db: Kysely<DB>): Promise<Record<ClientStatus, number>> {
  const rows = await db.selectFrom('clients').select(['status', sql<string | number | bigint>`count(*)`.as('count')]).groupBy('status').execute();
  const counts: Record<ClientStatus, number> = { pending: 0, active: 0, suspended: 0 };
  for (const row of rows) counts[row.status] = Number(row.count);
  return counts;
}

/** A new secret for a symmetric client, returned once. */
export async function rotateClientSecret(db: Kysely<DB>, box: SecretBox, clientId: string): Promise<string> {
  const secret = generateClientSecret();
  await db.updateTable('clients').set({ client_secret: box.seal(secret, 'client-secret', clientId), updated_at: sql<Date>`now()` }).where('client_id', '=', clientId).execute();
  return secret;
}

/** Removes the client and everything issued to it: grants, tokens, codes, their contexts. */
export async function deleteClient(db: Kysely<DB>, clientId: string): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const deleted = await trx.deleteFrom('clients').where('client_id', '=', clientId).executeTakeFirst();
    await trx.deleteFrom('oidc_payloads').where(sql<string>`payload->>'clientId'`, '=', clientId).execute();
    await trx.deleteFrom('grant_contexts').where('client_id', '=', clientId).execute();
    return Number(deleted.numDeletedRows) > 0;
  });
}

function toRecord(row: { client_id: string; status: ClientStatus; metadata: Record<string, unknown>; client_secret: string | null; created_at: Date; updated_at: Date }): ClientRecord {
  return { client_id: row.client_id, status: row.status, metadata: row.metadata, has_secret: row.client_secret !== null, created_at: row.created_at, updated_at: row.updated_at };
}
