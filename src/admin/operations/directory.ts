import { HttpProblem } from '../../errors.js';
import { checkEncounter, checkPatient, resourcesOf } from '../../directory/fhir.js';
import { deletePatient, importDirectory, patientExists, upsertEncounter, upsertPatient, type EncounterResource, type PatientResource } from '../../directory/patients.js';
import { describeInputProblem, inputProblem } from '../../security/text.js';
import type { AdminDeps } from '../deps.js';
import type { Operator } from './operator.js';

/** The patient directory the pickers search, and each patient's encounters: FHIR R4 resources in. */

export async function addPatient(deps: AdminDeps, by: Operator, resource: unknown): Promise<PatientResource> {
  const patient = checkPatient(resource);
  await upsertPatient(deps.db, patient);
  await deps.audit.record({ ...by, type: 'patient.imported', patientId: patient.id, details: { patients: 1 } });
  return patient;
}

export async function removePatient(deps: AdminDeps, patientId: string): Promise<void> {
  if (!(await deletePatient(deps.db, patientId))) throw HttpProblem.notFound(`no patient ${patientId}`);
}

export async function addEncounter(deps: AdminDeps, patientId: string, resource: unknown): Promise<EncounterResource> {
  if (!(await patientExists(deps.db, patientId))) throw HttpProblem.notFound(`no patient ${patientId}`);
  const encounter = checkEncounter(resource, patientId);
  await upsertEncounter(deps.db, encounter);
  return encounter;
}

/**
 * The resources of an import: NDJSON, or a FHIR Bundle. `format` when the caller knows it (a content type);
 * otherwise text whose first line is a whole Bundle is one, anything else NDJSON.
 */
export function importedResources(text: string, format?: 'bundle' | 'ndjson'): unknown[] {
  if (format) return resourcesOf(text, format);
  const trimmed = text.trim();
  let whole: unknown;
  try {
    whole = trimmed.startsWith('{') ? JSON.parse(trimmed) : undefined;
  } catch {
    whole = undefined;
  }
  const isBundle = typeof whole === 'object' && whole !== null && (whole as { resourceType?: unknown }).resourceType === 'Bundle';
  return resourcesOf(trimmed, isBundle ? 'bundle' : 'ndjson');
}

/** Imports Patient and Encounter resources, all or nothing. */
export async function importPatients(deps: AdminDeps, by: Operator, resources: readonly unknown[]): Promise<{ patients: number; encounters: number }> {
  const patients: PatientResource[] = [];
  const encounters: EncounterResource[] = [];
  for (const [i, resource] of resources.entries()) {
    const unfit = inputProblem(resource, `resource ${i + 1}`);
    if (unfit) throw HttpProblem.invalid(describeInputProblem(unfit));
    const type = (resource as { resourceType?: unknown }).resourceType;
    if (type === 'Patient') patients.push(checkPatient(resource));
    else if (type === 'Encounter') encounters.push(checkEncounter(resource));
    else throw HttpProblem.invalid(`resource ${i + 1}: only Patient and Encounter resources are imported, not ${String(type)}`);
  }
  const ids = new Set(patients.map((p) => p.id));
  for (const encounter of encounters) {
    const patientId = encounter.subject.reference.slice('Patient/'.length);
    if (!ids.has(patientId) && !(await patientExists(deps.db, patientId))) throw HttpProblem.invalid(`Encounter/${encounter.id}: its patient ${patientId} is neither imported nor in the directory`);
  }
  await importDirectory(deps.db, patients, encounters);
  await deps.audit.record({ ...by, type: 'patient.imported', details: { patients: patients.length, encounters: encounters.length } });
  return { patients: patients.length, encounters: encounters.length };
}
