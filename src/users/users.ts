import { sql, type Kysely, type Selectable } from 'kysely';

import { toSummary, type PatientSummary } from '../directory/patients.js';
import { HttpProblem } from '../errors.js';
import type { DB } from '../db/schema.js';
import type { UsersTable } from '../db/tables/users.js';
import { endUserAccess, endUserAccessBeyond, endUserSessions } from '../grants/grants.js';
import { hashPassword } from '../security/password.js';
import type { SecretBox } from '../security/secret-box.js';
import { closeUserConsoleSessions } from './console-sessions.js';
import { loginName, resetThrottle, throttleKey } from './login-throttle.js';

/** The roles that open the operator console (src/admin/console/session.ts): admin (everything), auditor (reads). */
export const ADMIN_ROLE = 'admin';
export const AUDITOR_ROLE = 'auditor';
const OPERATOR_ROLES: ReadonlySet<string> = new Set([ADMIN_ROLE, AUDITOR_ROLE]);

/** The operator roles (admin, auditor) a user holds: those that open the console and the admin API to them. */
export function operatorRolesOf(user: { readonly roles: readonly string[] }): readonly string[] {
  return user.roles.filter((r) => OPERATOR_ROLES.has(r));
}

export interface User {
  readonly id: string;
  readonly username: string;
  /** `Practitioner/123`, `Patient/abc`, `RelatedPerson/x`, `Person/y`: relative to a FHIR base. */
  readonly fhirUser: string;
  readonly name: string;
  readonly roles: readonly string[];
}

export async function findUser(db: Kysely<DB>, id: string): Promise<User | undefined> {
  const row = await db.selectFrom('users').select(SIGNED_IN_COLUMNS).where('id', '=', id).executeTakeFirst();
  return row && userOf(row);
}

/** The columns {@link userOf} reads, for a query that fetches a user along with something else. */
export const SIGNED_IN_COLUMNS = ['id', 'username', 'fhir_user', 'name', 'roles', 'disabled'] as const;

/** A user from its row; undefined when disabled (a disabled user is no one). */
export function userOf(row: Pick<Selectable<UsersTable>, (typeof SIGNED_IN_COLUMNS)[number]>): User | undefined {
  if (row.disabled) return undefined;
  return { id: row.id, username: row.username, fhirUser: row.fhir_user, name: row.name, roles: row.roles };
}

/** An enabled user by user name (case as stored). */
export async function findUserByUsername(db: Kysely<DB>, username: string): Promise<User | undefined> {
  const row = await db.selectFrom('users').select('id').where('username', '=', username).where('disabled', '=', false).executeTakeFirst();
  return row && findUser(db, row.id);
}

/**
 * The patients a user may pick without searching: a patient's own record and the records they may act
 * for (linked by an operator, or as an authorized representative whose designation is active now).
 * Undefined for users who search the directory (clinicians).
 */
export async function patientsOf(db: Kysely<DB>, user: User): Promise<string[] | undefined> {
  if (actsForEveryPatient(user.fhirUser)) return undefined;
  const others = await linkedPatients(db, user.id).orderBy('patient_id').execute();
  return userPatients(user.fhirUser, others.map((r) => r.patient_id));
}

/**
 * May the user act for the patient now? A clinician for anyone; anyone else for their own record and the
 * records linked to them ({@link patientsOf}: a representative only while the designation is active and
 * within its period). A disabled or removed user acts for no one.
 */
export async function mayActFor(db: Kysely<DB>, userId: string, patientId: string): Promise<boolean> {
  const user = await findUser(db, userId);
  if (!user) return false;
  return actsFor(user, patientId, actsForEveryPatient(user.fhirUser) ? [] : (await linkedPatients(db, user.id).execute()).map((r) => r.patient_id));
}

/** {@link mayActFor} with the records linked to the user (operator links, active designations) already read. */
export function actsFor(user: User, patientId: string, linked: readonly string[]): boolean {
  return actsForEveryPatient(user.fhirUser) || userPatients(user.fhirUser, linked).includes(patientId);
}

/**
 * {@link patientsOf}, with the directory's summary of each of them that the directory has, in one statement:
 * for the pages that name the patient (the consent page), so that they need no read of their own.
 */
export interface NamedPatients {
  readonly ids: string[];
  readonly summaries: PatientSummary[];
}

export async function patientsNamedOf(db: Kysely<DB>, user: User): Promise<NamedPatients | undefined> {
  if (actsForEveryPatient(user.fhirUser)) return undefined;
  const [own] = userPatients(user.fhirUser, []);
  // A patient's own record, from their fhirUser, with those linked to them.
  const all = own === undefined ? linkedPatients(db, user.id) : linkedPatients(db, user.id).union(db.selectNoFrom(sql<string>`${own}::text`.as('patient_id')));
  const rows = await db
    .selectFrom(all.as('l'))
    .leftJoin('patients as p', 'p.id', 'l.patient_id')
    .select(['l.patient_id', 'p.id', 'p.resource', 'p.display_name', 'p.birth_date', 'p.gender'])
    .orderBy('l.patient_id')
    .execute();
  const summaries = rows.flatMap((r) => (r.id !== null && r.resource !== null && r.display_name !== null ? [toSummary({ id: r.id, resource: r.resource, display_name: r.display_name, birth_date: r.birth_date, gender: r.gender })] : []));
  return { ids: userPatients(user.fhirUser, rows.map((r) => r.patient_id)), summaries };
}

/** The records linked to a user: by an operator, or by a designation as representative that is active now. */
function linkedPatients(db: Kysely<DB>, userId: string) {
  return db
    .selectFrom('user_patients')
    .select('patient_id')
    .where('user_id', '=', userId)
    .union(
      db
        .selectFrom('representatives')
        .select('patient_id')
        .where('user_id', '=', userId)
        .where('status', '=', 'active')
        .where('period_start', '<=', sql<Date>`now()`)
        .where((eb) => eb.or([eb('period_end', 'is', null), eb('period_end', '>', sql<Date>`now()`)])),
    );
}

/** Clinicians (a Practitioner or PractitionerRole) reach the whole directory; everyone else the records linked to them. */
export function actsForEveryPatient(fhirUser: string): boolean {
  const type = fhirUser.split('/')[0];
  return type === 'Practitioner' || type === 'PractitionerRole';
}

/** A user's own record (when the user is a Patient) and the records linked to the user, once each. */
export function userPatients(fhirUser: string, linked: readonly string[]): string[] {
  const [type, id] = fhirUser.split('/');
  const own = type === 'Patient' && id ? [id] : [];
  return [...new Set([...own, ...linked])];
}

export interface UserRecord extends User {
  readonly disabled: boolean;
  readonly patients: readonly string[];
  readonly created_at: Date;
  readonly updated_at: Date;
  readonly last_login_at: Date | null;
}

const USER_COLUMNS = ['id', 'username', 'fhir_user', 'name', 'roles', 'disabled', 'created_at', 'updated_at', 'last_login_at'] as const;

export async function createUser(
  db: Kysely<DB>,
  input: { id?: string | undefined; username: string; password?: string | undefined; fhirUser: string; name: string; roles?: readonly string[] | undefined; patients?: readonly string[] | undefined },
): Promise<UserRecord> {
  const taken = await db.selectFrom('users').select('id').where((eb) => eb.or([eb('username', '=', input.username), ...(input.id ? [eb('id', '=', input.id)] : [])])).executeTakeFirst();
  if (taken) throw HttpProblem.conflict(`username ${input.username} or id is taken`);
  const id = input.id ?? crypto.randomUUID();
  await db.transaction().execute(async (trx) => {
    await trx
      .insertInto('users')
      .values({ id, username: input.username, password_hash: input.password ? await hashPassword(input.password) : null, fhir_user: input.fhirUser, name: input.name, roles: JSON.stringify(input.roles ?? []) })
      .execute();
    await setPatients(trx, id, input.patients ?? []);
  });
  return (await getUser(db, id))!;
}

async function setPatients(db: Kysely<DB>, userId: string, patients: readonly string[]): Promise<void> {
  await db.deleteFrom('user_patients').where('user_id', '=', userId).execute();
  if (!patients.length) return;
  const known = await db.selectFrom('patients').select('id').where('id', 'in', patients).execute();
  const missing = patients.filter((p) => !known.some((k) => k.id === p));
  if (missing.length) throw HttpProblem.invalid(`patients: not in the directory: ${missing.join(', ')}`);
  await db.insertInto('user_patients').values(patients.map((patient_id) => ({ user_id: userId, patient_id }))).execute();
}

export async function getUser(db: Kysely<DB>, id: string): Promise<UserRecord | undefined> {
  const row = await db.selectFrom('users').select(USER_COLUMNS).where('id', '=', id).executeTakeFirst();
  if (!row) return undefined;
  const patients = await db.selectFrom('user_patients').select('patient_id').where('user_id', '=', id).orderBy('patient_id').execute();
  return toUserRecord(row, patients.map((p) => p.patient_id));
}

/**
 * Users by id, `limit` at most, after `after`, matching `q` in user name or name. With `appUsersOnly`, the enabled
 * users who are not operators only: those a public page (the sandbox launcher) may name, which never tells a
 * visitor whose password opens the console.
 */
export async function listUsers(db: Kysely<DB>, options: { after?: string | undefined; limit: number; q?: string | undefined; appUsersOnly?: boolean }): Promise<UserRecord[]> {
  let query = db.selectFrom('users').select(USER_COLUMNS);
  if (options.after) query = query.where('id', '>', options.after);
  if (options.appUsersOnly) query = query.where('disabled', '=', false).where(sql<boolean>`not (roles ?| ${sql.val([...OPERATOR_ROLES])}::text[])`);
  if (options.q) query = query.where((eb) => eb.or([eb('username', 'like', `%${options.q!.replace(/[\\%_]/g, (c) => `\\${c}`)}%`), eb('name', 'like', `%${options.q!.replace(/[\\%_]/g, (c) => `\\${c}`)}%`)]));
  const rows = await query.orderBy('id').limit(options.limit).execute();
  return rows.map((row) => toUserRecord(row, []));
}

/** Changes a user; disabling one also ends every grant and session they hold, in the same transaction. */
export async function updateUser(
  db: Kysely<DB>,
  id: string,
  patch: { fhirUser?: string | undefined; name?: string | undefined; roles?: readonly string[] | undefined; disabled?: boolean | undefined; patients?: readonly string[] | undefined },
): Promise<UserRecord> {
  const exists = await db.selectFrom('users').select('id').where('id', '=', id).executeTakeFirst();
  if (!exists) throw HttpProblem.notFound(`no user ${id}`);
  await db.transaction().execute(async (trx) => {
    await trx
      .updateTable('users')
      .set({
        ...(patch.fhirUser !== undefined ? { fhir_user: patch.fhirUser } : {}),
        ...(patch.name !== undefined ? { name: patch.name } : {}),
        ...(patch.roles !== undefined ? { roles: JSON.stringify(patch.roles) } : {}),
        ...(patch.disabled !== undefined ? { disabled: patch.disabled } : {}),
        updated_at: sql<Date>`now()`,
      })
      .where('id', '=', id)
      .execute();
    if (patch.patients) await setPatients(trx, id, patch.patients);
    if (patch.disabled === true) await endUserAccess(trx, id);
    else if (patch.patients || patch.fhirUser !== undefined) {
      // A grant's patient is one its user acts for as long as it lasts: the gateway checks at every request, but a
      // refresh, introspection and a FHIR server that relies on it do not. A record taken off the user (a link
      // removed, another fhirUser) ends the user's grants for it.
      const { fhir_user: now } = await trx.selectFrom('users').select('fhir_user').where('id', '=', id).executeTakeFirstOrThrow();
      if (!actsForEveryPatient(now)) await endUserAccessBeyond(trx, id, userPatients(now, (await linkedPatients(trx, id).execute()).map((r) => r.patient_id)));
    }
    // A console session ends with the account or the operator role, rather than waiting, unused, to be revived.
    if (patch.disabled === true || (patch.roles !== undefined && !patch.roles.some((r) => OPERATOR_ROLES.has(r)))) await closeUserConsoleSessions(trx, id);
  });
  return (await getUser(db, id))!;
}


/**
 * Sets a new password and lifts the slowdown on the user name: attempts on the old password no longer count.
 * Whoever signed in with the old password is signed out (OWASP Session Management: renew sessions after a
 * password change): the user's sign-in sessions here and their console sessions end. Their grants stay: the
 * user revokes apps on /account/apps, an operator on the grants page or by disabling the account.
 */
export async function resetPassword(db: Kysely<DB>, box: SecretBox, id: string, password: string): Promise<void> {
  const hash = await hashPassword(password);
  const row = await db.transaction().execute(async (trx) => {
    const updated = await trx.updateTable('users').set({ password_hash: hash, updated_at: sql<Date>`now()` }).where('id', '=', id).returning('username').executeTakeFirst();
    if (!updated) return undefined;
    await endUserSessions(trx, id);
    await closeUserConsoleSessions(trx, id);
    return updated;
  });
  if (!row) throw HttpProblem.notFound(`no user ${id}`);
  await resetThrottle(db, throttleKey(box, 'account', loginName(row.username)));
}

function toUserRecord(row: { id: string; username: string; fhir_user: string; name: string; roles: string[]; disabled: boolean; created_at: Date; updated_at: Date; last_login_at: Date | null }, patients: string[]): UserRecord {
  return { id: row.id, username: row.username, fhirUser: row.fhir_user, name: row.name, roles: row.roles, disabled: row.disabled, patients, created_at: row.created_at, updated_at: row.updated_at, last_login_at: row.last_login_at };
}
