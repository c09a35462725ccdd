import { sql, type Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import type { ClientStatus } from '../db/tables/clients.js';
import { generateClientId } from './registry.js';

/**
 * UDAP registrations (HL7 UDAP Security IG §3): one client per (community, iss), and per exchange purpose
 * under the TEFCA profile. The client itself is an
 * ordinary row of `clients` (metadata in RFC 7591 names, no secret: it authenticates with its certificate);
 * this table says which certificate identity it belongs to.
 */
export interface UdapRegistration {
  readonly clientId: string;
  readonly status: ClientStatus;
  readonly metadata: Record<string, unknown>;
}

/** The live registration of `iss` in `community`, with its client. */
export async function findUdapRegistration(db: Kysely<DB>, community: string, iss: string, exchangePurpose = ''): Promise<UdapRegistration | undefined> {
  const row = await db
    .selectFrom('udap_registrations as r')
    .innerJoin('clients as c', 'c.client_id', 'r.client_id')
    .select(['r.client_id', 'c.status', 'c.metadata'])
    .where('r.community', '=', community)
    .where('r.iss', '=', iss)
    .where('r.exchange_purpose', '=', exchangePurpose)
    .where('r.cancelled_at', 'is', null)
    .executeTakeFirst();
  return row && { clientId: row.client_id, status: row.status, metadata: row.metadata };
}

/**
 * Creates the client for (community, iss), or replaces the metadata of the one it has. `status` is the new
 * client's status, or the existing one's after the change.
 * @returns the client_id, and whether it was created.
 */
export async function saveUdapRegistration(db: Kysely<DB>, community: string, iss: string, exchangePurpose: string, metadata: Record<string, unknown>, status: ClientStatus): Promise<{ clientId: string; created: boolean }> {
  return db.transaction().execute(async (trx) => {
    // Claim (community, iss, purpose) first: of two first registrations at once, one inserts, the other
    // finds the row the first wrote (the unique index waits for it) and updates that client instead.
    const clientId = generateClientId();
    const claimed = await trx
      .insertInto('udap_registrations')
      .values({ client_id: clientId, community, iss, exchange_purpose: exchangePurpose, cancelled_at: null })
      .onConflict((oc) => oc.columns(['community', 'iss', 'exchange_purpose']).where('cancelled_at', 'is', null).doNothing())
      .returning('client_id')
      .executeTakeFirst();
    if (claimed) {
      await trx.insertInto('clients').values({ client_id: clientId, metadata: JSON.stringify({ ...metadata, client_id: clientId }), status, client_secret: null }).execute();
      return { clientId, created: true };
    }
    const current = await trx
      .selectFrom('udap_registrations')
      .select('client_id')
      .where('community', '=', community)
      .where('iss', '=', iss)
      .where('exchange_purpose', '=', exchangePurpose)
      .where('cancelled_at', 'is', null)
      .executeTakeFirstOrThrow();
    await trx.updateTable('clients').set({ metadata: JSON.stringify({ ...metadata, client_id: current.client_id }), status, updated_at: sql<Date>`now()` }).where('client_id', '=', current.client_id).execute();
    await trx.updateTable('udap_registrations').set({ updated_at: sql<Date>`now()` }).where('client_id', '=', current.client_id).execute();
    return { clientId: current.client_id, created: false };
  });
}

/**
 * Cancels the registration (IG §3.4: a statement with empty grant_types): the client and everything issued
 * to it go; the registration row stays, cancelled, so that the retired client_id keeps its owner on record.
 */
export async function cancelUdapRegistration(db: Kysely<DB>, clientId: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx.updateTable('udap_registrations').set({ cancelled_at: sql<Date>`now()`, updated_at: sql<Date>`now()` }).where('client_id', '=', clientId).execute();
    await trx.deleteFrom('clients').where('client_id', '=', clientId).execute();
    await trx.deleteFrom('oidc_payloads').where(sql<string>`payload->>'clientId'`, '=', clientId).execute();
    await trx.deleteFrom('grant_contexts').where('client_id', '=', clientId).execute();
  });
}

/**
 * Records a software statement's jti (by `id`, a keyed hash of iss and jti) until `expiresAt`.
 * @returns false when it was already recorded and has not expired: a replay.
 */
export async function useUdapJti(db: Kysely<DB>, id: string, expiresAt: Date): Promise<boolean> {
  const row = await db
    .insertInto('udap_jtis')
    .values({ id, expires_at: expiresAt })
    .onConflict((oc) => oc.column('id').doUpdateSet({ expires_at: expiresAt }).where('udap_jtis.expires_at', '<', sql<Date>`now()`))
    .returning('id')
    .executeTakeFirst();
  return row !== undefined;
}

/** Removes jti records whose statements have expired; how many. */
export async function purgeUdapJtis(db: Kysely<DB>): Promise<number> {
  const result = await db.deleteFrom('udap_jtis').where('expires_at', '<', sql<Date>`now()`).executeTakeFirst();
  return Number(result.numDeletedRows);
}
