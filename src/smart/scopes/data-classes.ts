import type { Scope } from './scope.js';

/**
 * USCDI v3 data classes (https://www.healthit.gov/isa/united-states-core-data-interoperability-uscdi), as the
 * consent page groups the kinds of data an app may be granted: a person decides about "Laboratory" or
 * "Medications", not about FHIR resource types. US Core maps each class to the resource types (and, for
 * Observation and Condition, the categories) listed here. Order: as a person scans them.
 */
export const DATA_CLASSES = [
  'Whole record',
  'Patient demographics',
  'Problems and health concerns',
  'Allergies and intolerances',
  'Medications',
  'Laboratory',
  'Vital signs',
  'Health status and assessments',
  'Immunizations',
  'Procedures',
  'Encounter information',
  'Clinical notes',
  'Diagnostic imaging and reports',
  'Care team members',
  'Goals and care plans',
  'Unique device identifiers',
  'Health insurance information',
  'Provenance',
  'Other data',
] as const;
export type DataClass = (typeof DATA_CLASSES)[number];

const BY_TYPE: Readonly<Record<string, DataClass>> = {
  '*': 'Whole record',
  Patient: 'Patient demographics',
  RelatedPerson: 'Patient demographics',
  Condition: 'Problems and health concerns',
  AllergyIntolerance: 'Allergies and intolerances',
  Medication: 'Medications',
  MedicationRequest: 'Medications',
  MedicationDispense: 'Medications',
  MedicationStatement: 'Medications',
  Observation: 'Laboratory',
  Specimen: 'Laboratory',
  QuestionnaireResponse: 'Health status and assessments',
  Immunization: 'Immunizations',
  Procedure: 'Procedures',
  ServiceRequest: 'Procedures',
  Encounter: 'Encounter information',
  Location: 'Encounter information',
  DocumentReference: 'Clinical notes',
  DiagnosticReport: 'Diagnostic imaging and reports',
  ImagingStudy: 'Diagnostic imaging and reports',
  CareTeam: 'Care team members',
  Practitioner: 'Care team members',
  PractitionerRole: 'Care team members',
  Organization: 'Care team members',
  Goal: 'Goals and care plans',
  CarePlan: 'Goals and care plans',
  Device: 'Unique device identifiers',
  Coverage: 'Health insurance information',
  ExplanationOfBenefit: 'Health insurance information',
  Provenance: 'Provenance',
};

/** Observation categories that belong to another class than Observation as a whole (Laboratory). */
const OBSERVATION_CATEGORIES: Readonly<Record<string, DataClass>> = {
  'vital-signs': 'Vital signs',
  'social-history': 'Health status and assessments',
  survey: 'Health status and assessments',
  sdoh: 'Health status and assessments',
  procedure: 'Procedures',
};

/** The data class of a resource scope; undefined for scopes that grant no data (openid, launch, …). */
export function dataClassOf(scope: Scope): DataClass | undefined {
  if (scope.kind !== 'resource') return undefined;
  if (scope.resourceType === 'Observation') {
    const category = scope.query.find((q) => q.name === 'category')?.value.split('|').pop();
    if (category && OBSERVATION_CATEGORIES[category]) return OBSERVATION_CATEGORIES[category];
    // A request for every Observation spans several classes: it sits with the lab results a person expects.
  }
  return BY_TYPE[scope.resourceType] ?? 'Other data';
}
