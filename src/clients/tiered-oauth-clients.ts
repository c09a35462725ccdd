import { sql, type Kysely } from 'kysely';

import type { DB } from '../db/schema.js';

/**
 * This server's registrations as a client at the IdPs it sends people to (UDAP Tiered OAuth, HL7 UDAP Security
 * IG §6: "If the IdP is trusted and the data holder is not yet registered as a client with the IdP … the data
 * holder SHALL register"): one client_id per (community, IdP, our callback URL), reused for every sign-in
 * there. The callback URL is part of the key because the IdP holds it: a server whose ISSUER changed
 * registers anew rather than use a client whose redirect URI no longer matches.
 */
export interface IdpClientKey {
  readonly community: string;
  readonly idp: string;
  readonly redirectUri: string;
}

export async function findIdpClientId(db: Kysely<DB>, key: IdpClientKey): Promise<string | undefined> {
  const row = await db.selectFrom('tiered_oauth_clients').select('client_id').where('community', '=', key.community).where('idp', '=', key.idp).where('redirect_uri', '=', key.redirectUri).executeTakeFirst();
  return row?.client_id;
}

/** Records (or replaces, after a new registration) the client_id the IdP gave this server. */
export async function saveIdpClientId(db: Kysely<DB>, key: IdpClientKey, clientId: string): Promise<void> {
  await db
    .insertInto('tiered_oauth_clients')
    .values({ community: key.community, idp: key.idp, redirect_uri: key.redirectUri, client_id: clientId })
    .onConflict((oc) => oc.columns(['community', 'idp', 'redirect_uri']).doUpdateSet({ client_id: clientId, updated_at: sql<Date>`now()` }))
    .execute();
}

/** Forgets a client_id the IdP no longer knows (it answered invalid_client), unless it was replaced meanwhile. */
export async function forgetIdpClientId(db: Kysely<DB>, key: IdpClientKey, clientId: string): Promise<void> {
  await db.deleteFrom('tiered_oauth_clients').where('community', '=', key.community).where('idp', '=', key.idp).where('redirect_uri', '=', key.redirectUri).where('client_id', '=', clientId).execute();
}
