import { sql, type Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import { verifyPassword } from '../security/password.js';

export interface User {
  readonly id: string;
  readonly username: string;
  /** `Practitioner/123`, `Patient/abc`, `RelatedPerson/x`, `Person/y`: relative to a FHIR base. */
  readonly fhirUser: string;
  readonly name: string;
  readonly roles: readonly string[];
}

/** Failures allowed before logins back off; then 30 s, doubling per failure, at most 15 minutes. */
export const FREE_LOGIN_ATTEMPTS = 5;
const BASE_LOCK_SECONDS = 30;
const MAX_LOCK_SECONDS = 15 * 60;

export type LoginResult = { readonly ok: true; readonly user: User } | { readonly ok: false; readonly reason: 'invalid' } | { readonly ok: false; readonly reason: 'locked'; readonly retryAfterSeconds: number };

/**
 * Checks a user name and password. Unknown users, disabled users and wrong passwords look the same and
 * cost the same (argon2id against a dummy hash). Failures are counted in the database, so the backoff holds
 * across server processes; a locked account is refused without checking the password.
 */
export async function authenticate(db: Kysely<DB>, username: string, password: string): Promise<LoginResult> {
  const row = await db
    .selectFrom('users')
    .select(['id', 'username', 'password_hash', 'fhir_user', 'name', 'roles', 'disabled', 'locked_until'])
    .where('username', '=', username)
    .executeTakeFirst();
  if (row?.locked_until && row.locked_until.getTime() > Date.now()) {
    return { ok: false, reason: 'locked', retryAfterSeconds: Math.ceil((row.locked_until.getTime() - Date.now()) / 1000) };
  }
  const valid = await verifyPassword(row && !row.disabled ? row.password_hash : null, password);
  if (!row || row.disabled || !valid) {
    if (row) await recordFailure(db, row.id);
    return { ok: false, reason: 'invalid' };
  }
  await db.updateTable('users').set({ failed_logins: 0, locked_until: null, last_login_at: sql<Date>`now()` }).where('id', '=', row.id).execute();
  return { ok: true, user: { id: row.id, username: row.username, fhirUser: row.fhir_user, name: row.name, roles: row.roles } };
}

async function recordFailure(db: Kysely<DB>, userId: string): Promise<void> {
  await db
    .updateTable('users')
    .set({
      failed_logins: sql<number>`failed_logins + 1`,
      locked_until: sql<Date | null>`case when failed_logins + 1 >= ${FREE_LOGIN_ATTEMPTS}
        then now() + make_interval(secs => least(${BASE_LOCK_SECONDS} * power(2, failed_logins + 1 - ${FREE_LOGIN_ATTEMPTS}), ${MAX_LOCK_SECONDS}))
        else null end`,
    })
    .where('id', '=', userId)
    .execute();
}

export async function findUser(db: Kysely<DB>, id: string): Promise<User | undefined> {
  const row = await db.selectFrom('users').select(['id', 'username', 'fhir_user', 'name', 'roles', 'disabled']).where('id', '=', id).executeTakeFirst();
  if (!row || row.disabled) return undefined;
  return { id: row.id, username: row.username, fhirUser: row.fhir_user, name: row.name, roles: row.roles };
}

/**
 * The patients a user may pick without searching: a patient's own record and the records they may act
 * for. Undefined for users who search the directory (clinicians).
 */
export async function patientsOf(db: Kysely<DB>, user: User): Promise<string[] | undefined> {
  const [type, id] = user.fhirUser.split('/');
  if (type === 'Practitioner' || type === 'PractitionerRole') return undefined;
  const others = await db.selectFrom('user_patients').select('patient_id').where('user_id', '=', user.id).orderBy('patient_id').execute();
  const own = type === 'Patient' && id ? [id] : [];
  return [...new Set([...own, ...others.map((r) => r.patient_id)])];
}
