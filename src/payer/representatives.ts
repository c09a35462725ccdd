import { randomUUID } from 'node:crypto';

import { sql, type Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import type { RepresentativeStatus } from '../db/tables/payer.js';
import { endUserAccessToPatient } from '../grants/grants.js';

/**
 * Authorized representatives (CMS-0057-F: a patient's personal representative may use the Patient Access
 * API for them): a person, signed in as a user whose fhirUser is a RelatedPerson or a Person, acts for a
 * patient while the designation is active and within its period. The patient picker and the gateway read
 * active designations (src/payer/population.ts `representedPatients`); a revocation also ends at once every
 * grant the representative holds for that patient.
 */

export interface Representative {
  readonly id: string;
  readonly userId: string;
  /** The representative's name and fhirUser, as their account says. */
  readonly userName: string | null;
  readonly fhirUser: string | null;
  readonly patientId: string;
  readonly status: RepresentativeStatus;
  readonly periodStart: Date;
  readonly periodEnd: Date | null;
  readonly designatedBy: string;
  readonly createdAt: Date;
}

export interface NewRepresentative {
  readonly userId: string;
  readonly patientId: string;
  /** `pending` until the representative accepts (a designation by the member); `active` when an operator records it. */
  readonly status: 'pending' | 'active';
  readonly periodEnd?: Date | undefined;
  readonly designatedBy: string;
}

/** Users who may be designated: a person, not a clinician and not the patient themself. */
export function isRepresentativeUser(fhirUser: string): boolean {
  const type = fhirUser.split('/')[0];
  return type === 'RelatedPerson' || type === 'Person';
}

/** A new designation; undefined when the person already acts, or was already asked to act, for the patient. */
export async function designateRepresentative(db: Kysely<DB>, input: NewRepresentative): Promise<Representative | undefined> {
  const id = randomUUID();
  const inserted = await db
    .insertInto('representatives')
    .values({ id, user_id: input.userId, patient_id: input.patientId, status: input.status, period_end: input.periodEnd ?? null, designated_by: input.designatedBy })
    // The partial unique index representatives_standing: one pending or active designation per person and patient.
    // Its predicate stated as a literal, as the index states it: as a parameter, a plan made without its value
    // (plan_cache_mode = force_generic_plan, as a pooler in transaction mode can leave it) finds no arbiter index.
    .onConflict((oc) => oc.columns(['user_id', 'patient_id']).where('status', '<>', sql.lit('revoked')).doNothing())
    .returning('id')
    .executeTakeFirst();
  return inserted && getRepresentative(db, id);
}

export async function getRepresentative(db: Kysely<DB>, id: string): Promise<Representative | undefined> {
  return (await query(db).where('r.id', '=', id).execute()).map(view)[0];
}

/** Designations of a patient, or of a representative, newest first. */
export async function listRepresentatives(db: Kysely<DB>, filter: { patientId?: string | undefined; userId?: string | undefined }): Promise<Representative[]> {
  let q = query(db);
  if (filter.patientId !== undefined) q = q.where('r.patient_id', '=', filter.patientId);
  if (filter.userId !== undefined) q = q.where('r.user_id', '=', filter.userId);
  return (await q.orderBy('r.created_at', 'desc').orderBy('r.id').execute()).map(view);
}

/** The representative accepts a pending designation; undefined when it is not theirs or not pending. */
export async function acceptRepresentative(db: Kysely<DB>, id: string, userId: string): Promise<Representative | undefined> {
  const row = await db.updateTable('representatives').set({ status: 'active', updated_at: sql<Date>`now()` }).where('id', '=', id).where('user_id', '=', userId).where('status', '=', 'pending').returning('id').executeTakeFirst();
  return row && getRepresentative(db, row.id);
}

/**
 * Revokes a designation (pending or active) and, in the same transaction, every grant the representative
 * holds for the patient. Undefined when there is none by that id still standing (for that patient, when given).
 */
export async function revokeRepresentative(db: Kysely<DB>, id: string, patientId?: string): Promise<{ representative: Representative; grantsRevoked: number } | undefined> {
  const revoked = await db.transaction().execute(async (trx) => {
    let update = trx.updateTable('representatives').set({ status: 'revoked', updated_at: sql<Date>`now()` }).where('id', '=', id).where('status', '!=', 'revoked');
    if (patientId !== undefined) update = update.where('patient_id', '=', patientId);
    const row = await update.returning(['user_id', 'patient_id']).executeTakeFirst();
    if (!row) return undefined;
    return { grantsRevoked: await endUserAccessToPatient(trx, row.user_id, row.patient_id) };
  });
  if (!revoked) return undefined;
  return { representative: (await getRepresentative(db, id))!, grantsRevoked: revoked.grantsRevoked };
}

function query(db: Kysely<DB>) {
  return db
    .selectFrom('representatives as r')
    .leftJoin('users as u', 'u.id', 'r.user_id')
    .select(['r.id', 'r.user_id', 'u.name', 'u.fhir_user', 'r.patient_id', 'r.status', 'r.period_start', 'r.period_end', 'r.designated_by', 'r.created_at']);
}

function view(row: { id: string; user_id: string; name: string | null; fhir_user: string | null; patient_id: string; status: RepresentativeStatus; period_start: Date; period_end: Date | null; designated_by: string; created_at: Date }): Representative {
  return {
    id: row.id,
    userId: row.user_id,
    userName: row.name,
    fhirUser: row.fhir_user,
    patientId: row.patient_id,
    status: row.status,
    periodStart: new Date(row.period_start),
    periodEnd: row.period_end && new Date(row.period_end),
    designatedBy: row.designated_by,
    createdAt: new Date(row.created_at),
  };
}
