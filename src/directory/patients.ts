import type { Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import { Statement } from '../db/statements.js';

/** The parts of a FHIR R4 Patient the directory reads. */
export interface PatientResource {
  readonly resourceType: 'Patient';
  readonly id: string;
  readonly name?: readonly { readonly use?: string; readonly text?: string; readonly family?: string; readonly given?: readonly string[] }[];
  readonly birthDate?: string;
  readonly gender?: string;
  readonly identifier?: readonly { readonly system?: string; readonly value?: string }[];
  readonly [key: string]: unknown;
}

export interface EncounterResource {
  readonly resourceType: 'Encounter';
  readonly id: string;
  readonly status: string;
  readonly subject: { readonly reference: string };
  readonly period?: { readonly start?: string; readonly end?: string };
  readonly [key: string]: unknown;
}

/** "Given Family" from the official (or first) name. */
export function displayName(patient: PatientResource): string {
  const name = patient.name?.find((n) => n.use === 'official') ?? patient.name?.[0];
  if (!name) return patient.id;
  return name.text ?? ([...(name.given ?? []), name.family].filter(Boolean).join(' ') || patient.id);
}

function searchText(patient: PatientResource): string {
  const parts: string[] = [];
  for (const name of patient.name ?? []) parts.push(name.text ?? '', name.family ?? '', ...(name.given ?? []));
  for (const id of patient.identifier ?? []) parts.push(id.value ?? '');
  return parts.filter(Boolean).join(' ').toLowerCase();
}

/** Inserts or replaces a patient; the resource's `id` is the patient id. */
export async function upsertPatient(db: Kysely<DB>, patient: PatientResource, { replace = true } = {}): Promise<void> {
  const row = {
    resource: JSON.stringify(patient),
    display_name: displayName(patient),
    search_text: searchText(patient),
    birth_date: patient.birthDate ?? null,
    gender: patient.gender ?? null,
  };
  await db
    .insertInto('patients')
    .values({ id: patient.id, ...row })
    .onConflict((oc) => (replace ? oc.column('id').doUpdateSet(row) : oc.column('id').doNothing()))
    .execute();
}

export async function upsertEncounter(db: Kysely<DB>, encounter: EncounterResource, { replace = true } = {}): Promise<void> {
  const patientId = encounter.subject.reference.replace(/^Patient\//, '');
  const row = { patient_id: patientId, resource: JSON.stringify(encounter), status: encounter.status, period_start: encounter.period?.start ?? null };
  await db
    .insertInto('encounters')
    .values({ id: encounter.id, ...row })
    .onConflict((oc) => (replace ? oc.column('id').doUpdateSet(row) : oc.column('id').doNothing()))
    .execute();
}

export interface PatientSummary {
  readonly id: string;
  readonly name: string;
  readonly birthDate: string | null;
  readonly gender: string | null;
  readonly identifiers: readonly string[];
}

export interface EncounterSummary {
  readonly id: string;
  readonly status: string;
  readonly start: string | null;
  readonly description: string;
}

const DATE = /^\d{4}(-\d{2}(-\d{2})?)?$/;
export const SEARCH_LIMIT = 25;

/**
 * The patient picker's search: every word must match a name or identifier, or (if it looks like one) the
 * birth date. An empty query lists the first patients by name.
 */
export async function searchPatients(db: Kysely<DB>, query: string, limit = SEARCH_LIMIT): Promise<PatientSummary[]> {
  // The first page, without words (the picker as a launch first shows it): fixed text, planned once per connection.
  const rows = searchTerms(query).length ? await patientSearch(db, query, limit).execute() : (await FIRST_PAGE.execute(db, [limit])).rows;
  return rows.map(toSummary);
}

/** What a search looks for: up to five words or birth-date prefixes; commas separate words too ("Shaw, Amy" as people write a name). */
function searchTerms(query: string): string[] {
  return query.toLowerCase().split(/[\s,;]+/).filter(Boolean).slice(0, 5);
}

/**
 * The statement of {@link searchPatients}. Served by indexes (migrations/2026-12-03T00-00-patient-search-index.ts):
 * words by the trigram index on `search_text` where the database has pg_trgm, birth dates by a prefix index, the
 * first page without words by `(display_name, id)`.
 */
export function patientSearch(db: Kysely<DB>, query: string, limit = SEARCH_LIMIT) {
  let q = db.selectFrom('patients').select(['id', 'resource', 'display_name', 'birth_date', 'gender']);
  for (const term of searchTerms(query)) {
    if (DATE.test(term)) q = q.where('birth_date', 'like', `${term}%`);
    else q = q.where('search_text', 'like', `%${term.replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
  }
  return q.orderBy('display_name').orderBy('id').limit(limit);
}

type SummaryRow = Parameters<typeof toSummary>[0];

/** {@link patientSearch} without words: the first `$1` patients by name. */
const FIRST_PAGE = new Statement<SummaryRow>('select id, resource, display_name, birth_date, gender from patients order by display_name, id limit $1');

/** The patients with these ids, by name: fixed text, as a launch reads the one it is for at its decision. */
const FIND_PATIENTS = new Statement<SummaryRow>('select id, resource, display_name, birth_date, gender from patients where id = any($1::text[]) order by display_name, id');

export async function findPatients(db: Kysely<DB>, ids: readonly string[]): Promise<PatientSummary[]> {
  if (!ids.length) return [];
  const { rows } = await FIND_PATIENTS.execute(db, [ids]);
  return rows.map(toSummary);
}

/** The patient's FHIR resource as imported. */
export async function patientResource(db: Kysely<DB>, id: string): Promise<Record<string, unknown> | undefined> {
  return (await db.selectFrom('patients').select('resource').where('id', '=', id).executeTakeFirst())?.resource;
}

/** Removes a patient and their encounters; whether there was one. */
export async function deletePatient(db: Kysely<DB>, id: string): Promise<boolean> {
  const result = await db.deleteFrom('patients').where('id', '=', id).executeTakeFirst();
  return Number(result.numDeletedRows) > 0;
}

/** Imports patients and encounters together: all or nothing. */
export async function importDirectory(db: Kysely<DB>, patients: readonly PatientResource[], encounters: readonly EncounterResource[]): Promise<void> {
  await db.transaction().execute(async (trx) => {
    for (const patient of patients) await upsertPatient(trx, patient);
    for (const encounter of encounters) await upsertEncounter(trx, encounter);
  });
}

export async function patientExists(db: Kysely<DB>, id: string): Promise<boolean> {
  return !!(await db.selectFrom('patients').select('id').where('id', '=', id).executeTakeFirst());
}

export async function encountersOf(db: Kysely<DB>, patientId: string): Promise<EncounterSummary[]> {
  const rows = await db.selectFrom('encounters').select(['id', 'status', 'period_start', 'resource']).where('patient_id', '=', patientId).orderBy('period_start', 'desc').limit(SEARCH_LIMIT).execute();
  return rows.map((row) => {
    const resource = row.resource as { class?: { display?: string; code?: string }; type?: { text?: string }[] };
    return { id: row.id, status: row.status, start: row.period_start, description: resource.type?.[0]?.text ?? resource.class?.display ?? resource.class?.code ?? 'Encounter' };
  });
}

/** A directory row as the pages show it (the columns {@link findPatients} selects). */
export function toSummary(row: { id: string; resource: Record<string, unknown>; display_name: string; birth_date: string | null; gender: string | null }): PatientSummary {
  const identifiers = ((row.resource as PatientResource).identifier ?? []).map((i) => i.value).filter((v): v is string => !!v);
  return { id: row.id, name: row.display_name, birthDate: row.birth_date, gender: row.gender, identifiers };
}
