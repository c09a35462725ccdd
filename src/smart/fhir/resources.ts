import { evalFhirPath } from '@medplum/core';

import type { QueryParam } from '../scopes/scope.js';
import { searchParameter, type FhirModel } from './model.js';

/**
 * What the access rules ask of a resource: whose record it is part of (its Patient compartment, FHIR R4
 * CompartmentDefinition-patient), and whether it matches the parameters of a granular scope. FHIRPath is
 * evaluated by @medplum/core on the JSON as it is.
 */

/** A FHIR resource as JSON. */
export type FhirResource = Readonly<Record<string, unknown>> & { readonly resourceType: string; readonly id?: string };

export function isResource(value: unknown): value is FhirResource {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && typeof (value as { resourceType?: unknown }).resourceType === 'string';
}

/** Whether resources of this type belong to a patient's compartment at all (Practitioner, Medication … do not). */
export function inPatientCompartment(model: FhirModel, resourceType: string): boolean {
  return resourceType === 'Patient' || model.compartment.has(resourceType);
}

/** The patients (ids) whose compartment the resource is in: its own id for a Patient, else whom it references. */
export function patientsOf(model: FhirModel, resource: FhirResource): Set<string> {
  const patients = new Set<string>();
  if (resource.resourceType === 'Patient') {
    if (typeof resource.id === 'string') patients.add(resource.id);
    return patients;
  }
  for (const code of model.compartment.get(resource.resourceType) ?? []) {
    const info = searchParameter(model, resource.resourceType, code);
    if (!info) continue;
    for (const value of evaluate(info.expression, resource)) {
      const id = patientReference(value);
      if (id) patients.add(id);
    }
  }
  return patients;
}

/** `Patient/123` (or an absolute URL ending so, or a version of it) → `123`. */
export function patientReference(value: unknown): string | undefined {
  const reference = typeof value === 'object' && value !== null ? (value as { reference?: unknown }).reference : undefined;
  if (typeof reference !== 'string') return undefined;
  return /(?:^|\/)Patient\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/.exec(reference)?.[1];
}

/**
 * Does the resource match every parameter (a granular scope's query, SMART App Launch 2.2 §Scopes)? Token
 * (`system|code`, `|code`, `code`), reference, string, and uri parameters are understood; a parameter this
 * cannot evaluate does not match, so that nothing is returned on a guess.
 */
export function matchesAll(model: FhirModel, resource: FhirResource, query: readonly QueryParam[]): boolean {
  return query.every((q) => matches(model, resource, q));
}

function matches(model: FhirModel, resource: FhirResource, q: QueryParam): boolean {
  const [code = '', modifier] = q.name.split(':');
  if (modifier !== undefined) return false;
  const info = searchParameter(model, resource.resourceType, code);
  if (!info) return false;
  // FHIR search: comma-separated values are alternatives.
  const wanted = q.value.split(/(?<!\\),/).map((v) => v.replace(/\\,/g, ','));
  const values = evaluate(info.expression, resource);
  switch (info.type) {
    case 'token':
      return wanted.some((w) => values.some((v) => tokenMatches(v, w)));
    case 'reference':
      return wanted.some((w) => values.some((v) => referenceMatches(v, w)));
    case 'string':
      return wanted.some((w) => values.some((v) => stringsOf(v).some((s) => s.toLowerCase().startsWith(w.toLowerCase()))));
    case 'uri':
      return wanted.some((w) => values.some((v) => v === w));
    default:
      return false;
  }
}

function evaluate(expression: string, resource: FhirResource): unknown[] {
  try {
    return evalFhirPath(expression, resource);
  } catch {
    return [];
  }
}

/** Token matching (FHIR R4 §3.1.1.4.9): `system|code`, `|code` (no system), `system|` and `code`. */
function tokenMatches(value: unknown, wanted: string): boolean {
  const bar = wanted.indexOf('|');
  const system = bar === -1 ? undefined : wanted.slice(0, bar);
  const code = bar === -1 ? wanted : wanted.slice(bar + 1);
  return codingsOf(value).some((c) => (system === undefined || (system === '' ? c.system === undefined : c.system === system)) && (code === '' || c.code === code));
}

function codingsOf(value: unknown): { system: string | undefined; code: string | undefined }[] {
  if (typeof value === 'string' || typeof value === 'boolean') return [{ system: undefined, code: String(value) }];
  if (typeof value !== 'object' || value === null) return [];
  const v = value as { coding?: unknown; system?: unknown; code?: unknown; value?: unknown };
  if (Array.isArray(v.coding)) return v.coding.flatMap(codingsOf);
  // A Coding, or an Identifier (system + value), or a ContactPoint (system + value).
  const code = typeof v.code === 'string' ? v.code : typeof v.value === 'string' ? v.value : undefined;
  return [{ system: typeof v.system === 'string' ? v.system : undefined, code }];
}

function referenceMatches(value: unknown, wanted: string): boolean {
  const reference = typeof value === 'object' && value !== null ? (value as { reference?: unknown }).reference : undefined;
  if (typeof reference !== 'string') return false;
  return reference === wanted || reference.endsWith(`/${wanted}`);
}

function stringsOf(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (typeof value !== 'object' || value === null) return [];
  return Object.values(value).flatMap(stringsOf);
}
