/**
 * What an EHR may put in a launch's `fhirContext` (SMART App Launch 2.2 §fhirContext): each item names a
 * resource by a relative `reference`, a `canonical` or an `identifier`, with an optional `type` and `role`.
 * Checked when the launch is created (admin API, CLI, launcher), so that nothing the spec forbids reaches a
 * token response.
 */

import type { FhirContextItem } from '../db/tables/launches.js';

/** The role an item has when it names none: the resource is in context for the launch itself. */
export const LAUNCH_ROLE = 'launch';
/** A relative reference to a resource (or one version of it) on the FHIR server the token is for. */
const RELATIVE_REFERENCE = /^([A-Z][A-Za-z]{1,63})\/[A-Za-z0-9\-.]{1,64}(\/_history\/[A-Za-z0-9\-.]{1,64})?$/;

/** The first problem with the items, in words for the EHR's developer; undefined when they are all valid. */
export function fhirContextProblem(items: readonly FhirContextItem[]): string | undefined {
  for (const [i, item] of items.entries()) {
    const at = `fhirContext[${i}]`;
    if (item.reference === undefined && item.canonical === undefined && item.identifier === undefined) return `${at}: needs a reference, a canonical or an identifier`;
    let type = item.type;
    if (item.reference !== undefined) {
      const match = RELATIVE_REFERENCE.exec(item.reference);
      // SMART 2.2: `reference` is relative to the FHIR base; an absolute URL could point anywhere.
      if (!match) return `${at}.reference ${JSON.stringify(item.reference)} must be a relative reference such as Observation/123`;
      if (item.type !== undefined && item.type !== match[1]) return `${at}.type ${item.type} does not match the reference's type ${match[1]}`;
      type = match[1];
    }
    // SMART 2.2: roles are absolute URIs, except the ones SMART defines; only `launch` is defined.
    if (item.role !== undefined && item.role !== LAUNCH_ROLE && !isAbsoluteUri(item.role)) return `${at}.role ${JSON.stringify(item.role)} must be an absolute URI (or "launch")`;
    // The patient and the encounter of a launch travel as `patient` and `encounter`, never as fhirContext.
    if ((type === 'Patient' || type === 'Encounter') && (item.role === undefined || item.role === LAUNCH_ROLE)) {
      return `${at}: a ${type} in the launch role is given as ${type === 'Patient' ? 'patient' : 'encounter'}, not in fhirContext; give it another role to include it`;
    }
  }
  return undefined;
}

function isAbsoluteUri(value: string): boolean {
  return /^[A-Za-z][A-Za-z0-9+.-]*:\S+$/.test(value);
}
