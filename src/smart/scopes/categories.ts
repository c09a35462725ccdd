/**
 * The category sub-resources a patient is offered instead of all Conditions or all Observations: the
 * ONC (g)(10) granular scopes (§170.315(g)(10)(v)(A)(1)(iii), US Core 6.1+/7), with the code systems the
 * Inferno US Core test kit requests them under (smart_scopes_constants.rb), plus Clinical Test, which ONC
 * attests with the `procedure` observation category.
 */
export interface Category {
  readonly resourceType: 'Condition' | 'Observation';
  /** `system|code`, the value of the scope's `category` parameter. */
  readonly value: string;
  /** What a patient reads on the consent page. */
  readonly label: string;
}

const CONDITION = 'http://terminology.hl7.org/CodeSystem/condition-category';
const US_CORE_CONDITION = 'http://hl7.org/fhir/us/core/CodeSystem/condition-category';
const OBSERVATION = 'http://terminology.hl7.org/CodeSystem/observation-category';
const US_CORE_OBSERVATION = 'http://hl7.org/fhir/us/core/CodeSystem/us-core-category';

export const CATEGORIES: readonly Category[] = [
  { resourceType: 'Condition', value: `${CONDITION}|problem-list-item`, label: 'Problem list' },
  { resourceType: 'Condition', value: `${CONDITION}|encounter-diagnosis`, label: 'Diagnoses from visits' },
  { resourceType: 'Condition', value: `${US_CORE_CONDITION}|health-concern`, label: 'Health concerns' },
  { resourceType: 'Observation', value: `${OBSERVATION}|laboratory`, label: 'Laboratory results' },
  { resourceType: 'Observation', value: `${OBSERVATION}|vital-signs`, label: 'Vital signs' },
  { resourceType: 'Observation', value: `${OBSERVATION}|social-history`, label: 'Social history' },
  { resourceType: 'Observation', value: `${OBSERVATION}|survey`, label: 'Surveys and assessments' },
  { resourceType: 'Observation', value: `${US_CORE_OBSERVATION}|sdoh`, label: 'Social determinants of health' },
  { resourceType: 'Observation', value: `${OBSERVATION}|procedure`, label: 'Clinical tests' },
];

export function categoriesFor(resourceType: string): readonly Category[] {
  return CATEGORIES.filter((c) => c.resourceType === resourceType);
}

export function categoryLabel(resourceType: string, value: string): string | undefined {
  return CATEGORIES.find((c) => c.resourceType === resourceType && c.value === value)?.label;
}
