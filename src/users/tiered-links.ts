import { sql, type Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import { HttpProblem } from '../errors.js';
import { findUser, type User } from './users.js';

/**
 * UDAP Tiered OAuth (HL7 UDAP Security IG §6, "Data holder interaction with user after authentication"): the
 * pair (`iss`, `sub`) of a validated id_token names one person over time; this table binds it to a local user,
 * which later sign-ins through the same IdP rely on.
 */
export interface TieredLink {
  readonly idpIss: string;
  readonly sub: string;
  readonly userId: string;
  readonly linkedBy: 'operator' | 'auto';
  readonly createdAt: Date;
  readonly lastUsedAt: Date | null;
}

/**
 * The link of (iss, sub), its use recorded: undefined when there is none; `user` undefined when the user it
 * names is disabled.
 */
export async function findLinkedUser(db: Kysely<DB>, idpIss: string, sub: string): Promise<{ readonly user: User | undefined } | undefined> {
  const row = await db
    .updateTable('tiered_oauth_links')
    .set({ last_used_at: sql<Date>`now()` })
    .where('idp_iss', '=', idpIss)
    .where('sub', '=', sub)
    .returning('user_id')
    .executeTakeFirst();
  return row && { user: await findUser(db, row.user_id) };
}

/** Links (iss, sub) to an existing user. @throws {HttpProblem} 404 for an unknown user, 409 when (iss, sub) is linked already. */
export async function linkIdentity(db: Kysely<DB>, idpIss: string, sub: string, userId: string, linkedBy: TieredLink['linkedBy']): Promise<TieredLink> {
  const user = await db.selectFrom('users').select('id').where('id', '=', userId).executeTakeFirst();
  if (!user) throw HttpProblem.notFound(`no user ${userId}`);
  const row = await db
    .insertInto('tiered_oauth_links')
    .values({ idp_iss: idpIss, sub, user_id: userId, linked_by: linkedBy, last_used_at: null })
    .onConflict((oc) => oc.columns(['idp_iss', 'sub']).doNothing())
    .returningAll()
    .executeTakeFirst();
  if (!row) throw HttpProblem.conflict(`${sub} at ${idpIss} is linked to a user already: unlink it first`);
  return linkOf(row);
}

/**
 * Creates a local user for (iss, sub) and links it, in one transaction (the `create` policy, on first use).
 * Of two first sign-ins at once, one creates; the other gets the user the first linked (undefined if disabled
 * meanwhile).
 */
export async function createLinkedUser(db: Kysely<DB>, idpIss: string, sub: string, user: { readonly fhirUserType: string; readonly name: string }): Promise<{ user: User | undefined; created: boolean }> {
  const id = crypto.randomUUID();
  const created = await db.transaction().execute(async (trx) => {
    await trx
      .insertInto('users')
      .values({ id, username: `tiered-${id}`, password_hash: null, fhir_user: `${user.fhirUserType}/${id}`, name: user.name, roles: JSON.stringify([]) })
      .execute();
    const link = await trx
      .insertInto('tiered_oauth_links')
      .values({ idp_iss: idpIss, sub, user_id: id, linked_by: 'auto', last_used_at: sql<Date>`now()` })
      .onConflict((oc) => oc.columns(['idp_iss', 'sub']).doNothing())
      .returning('user_id')
      .executeTakeFirst();
    if (!link) await trx.deleteFrom('users').where('id', '=', id).execute();
    return link !== undefined;
  });
  return { user: created ? await findUser(db, id) : (await findLinkedUser(db, idpIss, sub))?.user, created };
}

/** Removes the link; false when there was none. */
export async function unlinkIdentity(db: Kysely<DB>, idpIss: string, sub: string): Promise<TieredLink | undefined> {
  const row = await db.deleteFrom('tiered_oauth_links').where('idp_iss', '=', idpIss).where('sub', '=', sub).returningAll().executeTakeFirst();
  return row && linkOf(row);
}

/** The links, of one user or of all, oldest first (at most `limit`). */
export async function listLinks(db: Kysely<DB>, filter: { readonly userId?: string | undefined; readonly limit: number }): Promise<TieredLink[]> {
  let query = db.selectFrom('tiered_oauth_links').selectAll().orderBy('created_at').orderBy('idp_iss').orderBy('sub').limit(filter.limit);
  if (filter.userId !== undefined) query = query.where('user_id', '=', filter.userId);
  return (await query.execute()).map(linkOf);
}

function linkOf(row: { idp_iss: string; sub: string; user_id: string; linked_by: 'operator' | 'auto'; created_at: Date; last_used_at: Date | null }): TieredLink {
  return { idpIss: row.idp_iss, sub: row.sub, userId: row.user_id, linkedBy: row.linked_by, createdAt: row.created_at, lastUsedAt: row.last_used_at };
}
