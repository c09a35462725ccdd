import { evalFhirPath, parseFhirPath, type FhirPathAtom } from '@medplum/core';

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

/**
 * Whom a resource about to be written links to, for a write by a token that reaches some patients only: the
 * patients its compartment references name, and whether any of them is a reference that cannot be told
 * (a conditional `Patient?identifier=…`, a `urn:uuid:` of a transaction, a contained `#…`, a logical identifier):
 * the FHIR server may resolve such a reference to any patient. Unlike {@link patientsOf}, a reference filtered
 * out by `.where(resolve() is Patient)` counts here: that filter only recognises `Patient/<id>`.
 */
export function patientLinksOf(model: FhirModel, resource: FhirResource): { readonly patients: Set<string>; readonly unresolved: boolean } {
  const patients = new Set<string>();
  if (resource.resourceType === 'Patient') {
    // A Patient is its own record (without an id, no one's yet); its `link`s, the compartment's parameter of
    // Patient, tie it to others (`seealso`, `replaced-by`): a write linking to another patient reaches them.
    const own = patientsOf(model, resource);
    if (!own.size) return { patients: own, unresolved: false };
    for (const p of own) patients.add(p);
  }
  let unresolved = false;
  for (const code of model.compartment.get(resource.resourceType) ?? []) {
    const info = searchParameter(model, resource.resourceType, code);
    const plain = info && plainPathsOf(info.expression);
    // Every expression of FHIR R4's Patient compartment is a plain path; another model's may not be.
    if (!plain) return { patients, unresolved: true };
    for (const path of plain) {
      if (path.type !== resource.resourceType) continue;
      for (const value of follow(resource, path.steps)) {
        const id = patientReference(value);
        if (id) patients.add(id);
        else if (mayNamePatient(value)) unresolved = true;
      }
    }
  }
  return { patients, unresolved };
}

/** A value at a compartment path that is not a plain reference to another type of resource. */
function mayNamePatient(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  const { reference, identifier, type } = value as { reference?: unknown; identifier?: unknown; type?: unknown };
  // Not a string (`["Patient/123"]`): not FHIR, and no telling what a server makes of it.
  if (reference !== undefined && typeof reference !== 'string') return true;
  if (typeof reference === 'string') {
    const target = /(?:^|\/)([A-Z][A-Za-z]+)\/[A-Za-z0-9\-.]{1,64}(?:\/_history\/[^/]+)?$/.exec(reference)?.[1];
    return target === undefined || target === 'Patient';
  }
  return identifier !== undefined && !(typeof type === 'string' && type !== 'Patient');
}

/**
 * `Patient/123` (or an absolute URL ending so, or a version of it) → `123`. A reference that names Patient twice
 * (`Patient/456/Patient/123`) or carries a query or fragment (`Patient/456?x=/Patient/123`) is none: a FHIR
 * server may read it as the first patient it names, so it is no patient's here (and, in a write, one that
 * cannot be told: {@link mayNamePatient}).
 */
export function patientReference(value: unknown): string | undefined {
  const reference = typeof value === 'object' && value !== null ? (value as { reference?: unknown }).reference : undefined;
  if (typeof reference !== 'string' || /[?#]/.test(reference) || (reference.match(/(?:^|\/)Patient\//g)?.length ?? 0) > 1) return undefined;
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

/** Parsed FHIRPath expressions: the search parameters' expressions are few and used on every answer. */
const parsed = new Map<string, FhirPathAtom | null>();

/**
 * `Observation.subject`, `Encounter.participant.individual`, `Condition.subject.where(resolve() is Patient)`,
 * and unions of them: most search parameters of the Patient compartment. Followed on the JSON directly,
 * four times faster than the general evaluator, which takes everything else.
 */
const PLAIN_PATH = /^([A-Z][A-Za-z]+)((?:\.[a-z][A-Za-z]*)+)(?:\.where\(resolve\(\) is ([A-Z][A-Za-z]+)\))?$/;
interface PlainPath {
  readonly type: string;
  readonly steps: readonly string[];
  /** `.where(resolve() is T)`: only references to T. */
  readonly target: string | undefined;
}
const plainPaths = new Map<string, readonly PlainPath[] | null>();

function plainPathsOf(expression: string): readonly PlainPath[] | null {
  let plain = plainPaths.get(expression);
  if (plain === undefined) {
    const branches = expression.split(' | ').map((b) => PLAIN_PATH.exec(b.trim()));
    plain = branches.every((m) => m !== null) ? branches.map((m) => ({ type: m[1]!, steps: m[2]!.slice(1).split('.'), target: m[3] })) : null;
    plainPaths.set(expression, plain);
  }
  return plain;
}

function evaluate(expression: string, resource: FhirResource): unknown[] {
  const plain = plainPathsOf(expression);
  if (plain) {
    return plain.flatMap((p) => {
      if (p.type !== resource.resourceType) return [];
      const values = follow(resource, p.steps);
      return p.target === undefined ? values : values.filter((v) => referencesType(v, p.target!));
    });
  }
  let atom = parsed.get(expression);
  if (atom === undefined) {
    try {
      atom = parseFhirPath(expression);
    } catch {
      atom = null;
    }
    parsed.set(expression, atom);
  }
  if (atom === null) return [];
  try {
    return evalFhirPath(atom, resource);
  } catch {
    return [];
  }
}

/** A Reference to a resource of the type (relative or absolute, a version or not), as `resolve() is T` sees it. */
function referencesType(value: unknown, type: string): boolean {
  const reference = typeof value === 'object' && value !== null ? (value as { reference?: unknown }).reference : undefined;
  if (typeof reference !== 'string') return false;
  let pattern = referencePatterns.get(type);
  if (!pattern) referencePatterns.set(type, (pattern = new RegExp(`(?:^|/)${type}/[A-Za-z0-9\\-.]{1,64}(?:/_history/[^/]+)?$`)));
  return pattern.test(reference);
}
const referencePatterns = new Map<string, RegExp>();

/** The values at the end of the path, arrays flattened at each step (as FHIRPath navigates). */
function follow(value: unknown, steps: readonly string[]): unknown[] {
  let current: unknown[] = [value];
  for (const step of steps) {
    const next: unknown[] = [];
    for (const item of current) {
      if (typeof item !== 'object' || item === null) continue;
      const child = (item as Record<string, unknown>)[step];
      if (Array.isArray(child)) next.push(...(child as unknown[]).filter((c) => c !== null && c !== undefined));
      else if (child !== undefined && child !== null) next.push(child);
    }
    current = next;
  }
  return current;
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
