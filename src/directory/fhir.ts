import { HttpProblem } from '../errors.js';
import type { EncounterResource, PatientResource } from './patients.js';

/*
 * Checks of the FHIR R4 resources the directory takes: what it reads must be well-formed, and the rest of
 * the resource is kept as given. Not a full FHIR validator; it refuses what would corrupt the directory,
 * with a 400 that says what is wrong.
 */

/** FHIR R4 `id`: 1–64 of A–Z a–z 0–9 - . */
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const FHIR_DATE = /^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?$/;
const FHIR_DATETIME = /^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01])(T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d{1,9})?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00)))?)?)?$/;
const GENDERS = new Set(['male', 'female', 'other', 'unknown']);
const ENCOUNTER_STATUSES = new Set(['planned', 'arrived', 'triaged', 'in-progress', 'onleave', 'finished', 'cancelled', 'entered-in-error', 'unknown']);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function checkPatient(value: unknown): PatientResource {
  if (!isObject(value) || value.resourceType !== 'Patient') throw HttpProblem.invalid('expected a FHIR R4 Patient resource (resourceType "Patient")');
  if (typeof value.id !== 'string' || !FHIR_ID.test(value.id)) throw HttpProblem.invalid('Patient.id is required: 1–64 characters of A–Z, a–z, 0–9, - and .');
  if (value.name !== undefined) {
    if (!Array.isArray(value.name) || !value.name.every(isObject)) throw HttpProblem.invalid(`Patient/${value.id}: name must be an array of HumanName`);
    for (const name of value.name) {
      if (name.family !== undefined && typeof name.family !== 'string') throw HttpProblem.invalid(`Patient/${value.id}: name.family must be a string`);
      if (name.given !== undefined && !(Array.isArray(name.given) && name.given.every((g) => typeof g === 'string'))) throw HttpProblem.invalid(`Patient/${value.id}: name.given must be an array of strings`);
      if (name.text !== undefined && typeof name.text !== 'string') throw HttpProblem.invalid(`Patient/${value.id}: name.text must be a string`);
    }
  }
  if (value.birthDate !== undefined && (typeof value.birthDate !== 'string' || !FHIR_DATE.test(value.birthDate))) throw HttpProblem.invalid(`Patient/${value.id}: birthDate must be a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)`);
  if (value.gender !== undefined && !GENDERS.has(value.gender as string)) throw HttpProblem.invalid(`Patient/${value.id}: gender must be male, female, other or unknown`);
  if (value.identifier !== undefined && !(Array.isArray(value.identifier) && value.identifier.every((i) => isObject(i) && (i.value === undefined || typeof i.value === 'string')))) {
    throw HttpProblem.invalid(`Patient/${value.id}: identifier must be an array of Identifier`);
  }
  return value as unknown as PatientResource;
}

export function checkEncounter(value: unknown, patientId?: string): EncounterResource {
  if (!isObject(value) || value.resourceType !== 'Encounter') throw HttpProblem.invalid('expected a FHIR R4 Encounter resource (resourceType "Encounter")');
  if (typeof value.id !== 'string' || !FHIR_ID.test(value.id)) throw HttpProblem.invalid('Encounter.id is required: 1–64 characters of A–Z, a–z, 0–9, - and .');
  if (!ENCOUNTER_STATUSES.has(value.status as string)) throw HttpProblem.invalid(`Encounter/${value.id}: status must be one of ${[...ENCOUNTER_STATUSES].join(', ')}`);
  if (!isObject(value.class)) throw HttpProblem.invalid(`Encounter/${value.id}: class (a Coding) is required in R4`);
  const id = value.id;
  const subject = isObject(value.subject) ? value.subject.reference : undefined;
  const expected = patientId ? `Patient/${patientId}` : undefined;
  let resource: Record<string, unknown> = value;
  if (subject === undefined && expected) resource = { ...value, subject: { reference: expected } };
  else if (typeof subject !== 'string' || !/^Patient\/[A-Za-z0-9\-.]{1,64}$/.test(subject)) throw HttpProblem.invalid(`Encounter/${id}: subject.reference must be Patient/<id>`);
  else if (expected && subject !== expected) throw HttpProblem.invalid(`Encounter/${id}: subject.reference is ${subject}, not ${expected}`);
  const period = resource.period;
  if (period !== undefined && !(isObject(period) && [period.start, period.end].every((d) => d === undefined || (typeof d === 'string' && FHIR_DATETIME.test(d))))) {
    throw HttpProblem.invalid(`Encounter/${id}: period.start and period.end must be FHIR dateTimes`);
  }
  return resource as unknown as EncounterResource;
}

/** The Patient and Encounter resources of a FHIR Bundle (JSON) or NDJSON text; other resource types are errors. */
export function resourcesOf(text: string, format: 'bundle' | 'ndjson'): unknown[] {
  if (format === 'ndjson') {
    return text
      .split('\n')
      .map((line, i) => ({ line: line.trim(), i }))
      .filter(({ line }) => line)
      .map(({ line, i }) => {
        let resource: unknown;
        try {
          resource = JSON.parse(line);
        } catch {
          throw HttpProblem.invalid(`line ${i + 1} is not JSON`);
        }
        if (!isObject(resource)) throw HttpProblem.invalid(`line ${i + 1} is not a FHIR resource (a JSON object)`);
        return resource;
      });
  }
  let bundle: unknown;
  try {
    bundle = JSON.parse(text);
  } catch {
    throw HttpProblem.invalid('the body is not JSON');
  }
  if (!isObject(bundle) || bundle.resourceType !== 'Bundle' || !Array.isArray(bundle.entry)) throw HttpProblem.invalid('expected a FHIR Bundle with entry[]');
  return bundle.entry.map((entry: unknown, i: number) => {
    if (!isObject(entry) || !isObject(entry.resource)) throw HttpProblem.invalid(`entry[${i}] has no resource`);
    return entry.resource;
  });
}
