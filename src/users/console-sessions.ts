import { randomBytes } from 'node:crypto';

import { sql, type Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import type { SecretBox } from '../security/secret-box.js';

/**
 * Sessions of the operator console, kept in the database: every process sees a sign-out at once, and each
 * request reads the operator's current roles and state, so disabling an operator or taking their role away
 * takes effect on their next click (OWASP Session Management Cheat Sheet: server-side, idle and absolute
 * timeouts, a new id at every sign-in). The cookie holds 256 random bits; the table holds only their keyed
 * hash, as for every bearer value.
 */

/** Idle timeout: an unattended console signs itself out. */
export const CONSOLE_IDLE_SECONDS = 30 * 60;
/** Absolute lifetime: a working day, whatever the activity. */
export const CONSOLE_MAX_SECONDS = 12 * 3600;
/** The idle timeout is pushed back at most this often, so browsing costs a write a minute, not a click. */
const TOUCH_SECONDS = 60;

const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

export interface ConsoleSession {
  /** Null for a session opened with ADMIN_TOKEN. */
  readonly user: { readonly id: string; readonly username: string; readonly name: string; readonly roles: readonly string[] } | null;
}

/**
 * A session opened with ADMIN_TOKEN (no user) is bound to that token: its row is stored under the keyed hash of
 * its id together with a MAC of the token, so it is found only while the server runs with the same ADMIN_TOKEN.
 * Rotating the token (because it leaked) or removing it ends every session opened with it.
 */
function tokenBound(box: SecretBox, id: string, adminToken: string): string {
  return `${id}\n${box.mac('console-admin-token', adminToken)}`;
}

/** The keyed hashes a session id may be stored under: as a user's session, and as one opened with the current ADMIN_TOKEN. */
function storedIds(box: SecretBox, id: string, adminToken: string | undefined): { user: string[]; token: string[] } {
  const user = box.bearerIds(id);
  const token = adminToken ? box.bearerIds(tokenBound(box, id, adminToken)) : [];
  return { user, token };
}

/** Opens a session; returns its id, for the cookie only. `adminToken`: the token a session without a user was opened with. */
export async function openConsoleSession(db: Kysely<DB>, box: SecretBox, userId: string | null, adminToken?: string): Promise<string> {
  const id = randomBytes(32).toString('base64url');
  if (userId === null && !adminToken) throw new Error('a console session without a user is opened with ADMIN_TOKEN');
  await db
    .insertInto('console_sessions')
    .values({ id_hash: userId === null ? box.bearerId(tokenBound(box, id, adminToken!)) : box.bearerId(id), user_id: userId, expires_at: sql<Date>`now() + make_interval(secs => ${Math.min(CONSOLE_IDLE_SECONDS, CONSOLE_MAX_SECONDS)})` })
    .execute();
  return id;
}

/**
 * The live session with this id, its operator as they are now; undefined when there is none, it expired,
 * or its user was disabled or removed.
 */
export async function findConsoleSession(db: Kysely<DB>, box: SecretBox, id: string | undefined, adminToken?: string): Promise<ConsoleSession | undefined> {
  if (!id || !SESSION_ID.test(id)) return undefined;
  const ids = storedIds(box, id, adminToken);
  const row = await db
    .selectFrom('console_sessions as s')
    .leftJoin('users as u', 'u.id', 's.user_id')
    .select(['s.id_hash', 's.user_id', 'u.username', 'u.name', 'u.roles', 'u.disabled', sql<boolean>`s.seen_at < now() - make_interval(secs => ${TOUCH_SECONDS})`.as('stale')])
    .where('s.id_hash', 'in', [...ids.user, ...ids.token])
    .where('s.expires_at', '>', sql<Date>`now()`)
    .executeTakeFirst();
  if (!row) return undefined;
  // A session without a user only under the current token's binding; a user's only under its own id.
  if (!(row.user_id === null ? ids.token : ids.user).includes(row.id_hash)) return undefined;
  if (row.user_id !== null && (row.disabled !== false || row.username === null || row.name === null)) return undefined;
  if (row.stale) {
    await db
      .updateTable('console_sessions')
      .set({ seen_at: sql<Date>`now()`, expires_at: sql<Date>`least(created_at + make_interval(secs => ${CONSOLE_MAX_SECONDS}), now() + make_interval(secs => ${CONSOLE_IDLE_SECONDS}))` })
      .where('id_hash', '=', row.id_hash)
      .execute();
  }
  return { user: row.user_id === null ? null : { id: row.user_id, username: row.username!, name: row.name!, roles: row.roles ?? [] } };
}

export async function closeConsoleSession(db: Kysely<DB>, box: SecretBox, id: string | undefined, adminToken?: string): Promise<void> {
  if (!id || !SESSION_ID.test(id)) return;
  const ids = storedIds(box, id, adminToken);
  await db.deleteFrom('console_sessions').where('id_hash', 'in', [...ids.user, ...ids.token]).execute();
}

/**
 * Ends every console session of a user: at once, not at their next click, so that a session cannot outlive
 * the decision that ended it (disabled, no operator role left, a new password) and come back to life when the
 * account is enabled again or the role given back.
 */
export async function closeUserConsoleSessions(db: Kysely<DB>, userId: string): Promise<void> {
  await db.deleteFrom('console_sessions').where('user_id', '=', userId).execute();
}

export async function purgeConsoleSessions(db: Kysely<DB>): Promise<number> {
  const result = await db.deleteFrom('console_sessions').where('expires_at', '<=', sql<Date>`now()`).executeTakeFirst();
  return Number(result.numDeletedRows);
}
