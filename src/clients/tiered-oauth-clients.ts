import { sql, type Kysely } from 'kysely';

import type { DB } from '../db/schema.js';

/**
 * This server's registrations as a client at the IdPs it sends people to (UDAP Tiered OAuth, HL7 UDAP Security
 * IG §6: "If the IdP is trusted and the data holder is not yet registered as a client with the IdP … the data
 * holder SHALL register"): one client_id per (community, IdP), reused for every sign-in there.
 */
export async function findIdpClientId(db: Kysely<DB>, community: string, idp: string): Promise<string | undefined> {
  const row = await db.selectFrom('tiered_oauth_clients').select('client_id').where('community', '=', community).where('idp', '=', idp).executeTakeFirst();
  return row?.client_id;
}

/** Records (or replaces, after a new registration) the client_id the IdP gave this server. */
export async function saveIdpClientId(db: Kysely<DB>, community: string, idp: string, clientId: string): Promise<void> {
  await db
    .insertInto('tiered_oauth_clients')
    .values({ community, idp, client_id: clientId })
    .onConflict((oc) => oc.columns(['community', 'idp']).doUpdateSet({ client_id: clientId, updated_at: sql<Date>`now()` }))
    .execute();
}

/** Forgets a client_id the IdP no longer knows (it answered invalid_client), unless it was replaced meanwhile. */
export async function forgetIdpClientId(db: Kysely<DB>, community: string, idp: string, clientId: string): Promise<void> {
  await db.deleteFrom('tiered_oauth_clients').where('community', '=', community).where('idp', '=', idp).where('client_id', '=', clientId).execute();
}
