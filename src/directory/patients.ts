import type { Kysely } from 'kysely';

import type { DB } from '../db/schema.js';

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
