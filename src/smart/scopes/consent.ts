import { reduce } from './algebra.js';
import { categoriesFor, categoryLabel } from './categories.js';
import { dataClassOf, type DataClass } from './data-classes.js';
import { formatScope, parseScope, PERMISSION_BITS, PERMISSION_LETTERS, type ResourceScope, type Scope } from './scope.js';

/**
 * What the consent page offers and what it gives back (ONC §170.315(g)(10) and SMART App Launch 2.2):
 * one choice per grantable scope, checked by default; for a request of all Conditions or all Observations
 * the category scopes as unchecked alternatives, and for a `*` request the common resource types, so that
 * a patient can grant less than the app asked and the server grants scopes the app did not literally ask
 * for.
 */

export interface ConsentOption {
  /** The scope string: the value of the form's `scope` checkbox. */
  readonly scope: string;
  /** Checked by default: what the app asked for is; narrower alternatives are not. */
  readonly checked: boolean;
  /** Plain words for a person. */
  readonly label: string;
  /** What the permissions allow, in words ("read and search"); only for data scopes. */
  readonly actions: string | undefined;
  readonly group: 'identity' | 'context' | 'data' | 'refresh' | 'other';
  /** For an alternative: the option it narrows. */
  readonly narrows: string | undefined;
  /** Something the person must know before granting it. */
  readonly note: string | undefined;
  /** The USCDI data class the page groups a data scope under. */
  readonly dataClass: DataClass | undefined;
  /** A user-level data scope: it reaches every patient the user may access, not one. */
  readonly anyPatient: boolean;
}

/** The resource types offered instead of `*`: the US Core patient-compartment types ONC tests. */
export const COMMON_RESOURCE_TYPES = [
  'Patient', 'AllergyIntolerance', 'CarePlan', 'CareTeam', 'Condition', 'Coverage', 'Device', 'DiagnosticReport', 'DocumentReference',
  'Encounter', 'Goal', 'Immunization', 'MedicationDispense', 'MedicationRequest', 'Observation', 'Procedure', 'Provenance',
  'QuestionnaireResponse', 'RelatedPerson', 'ServiceRequest', 'Specimen',
] as const;

export class ConsentError extends Error {
  override name = 'ConsentError';
}

export function consentOptions(grantable: readonly Scope[]): ConsentOption[] {
  const options: ConsentOption[] = [];
  for (const scope of grantable) {
    const text = formatScope(scope);
    options.push({ scope: text, checked: true, narrows: undefined, ...describeScope(scope), ...reach(scope) });
    if (scope.kind !== 'resource' || scope.query.length) continue;
    for (const alternative of alternativesOf(scope)) {
      const altText = formatScope(alternative);
      if (options.some((o) => o.scope === altText) || grantable.some((g) => formatScope(g) === altText)) continue;
      options.push({ scope: altText, checked: false, narrows: text, ...describeScope(alternative), ...reach(alternative) });
    }
  }
  return options;
}

function reach(scope: Scope): Pick<ConsentOption, 'dataClass' | 'anyPatient'> {
  return { dataClass: dataClassOf(scope), anyPatient: scope.kind === 'resource' && scope.context === 'user' };
}

function alternativesOf(scope: ResourceScope): ResourceScope[] {
  if (scope.resourceType === '*') return COMMON_RESOURCE_TYPES.map((resourceType) => ({ ...scope, resourceType }));
  return categoriesFor(scope.resourceType).map((c) => ({
    ...scope,
    syntax: 'v2' as const,
    query: [{ name: 'category', value: c.value, raw: `category=${c.value}` }],
  }));
}

/**
 * The scopes the person granted, from the `scope` values the consent form posted.
 * @throws {ConsentError} when a value was not offered (a forged or stale form).
 */
export function applyConsent(grantable: readonly Scope[], chosen: readonly string[]): Scope[] {
  const offered = consentOptions(grantable).map((o) => o.scope);
  const picked = new Set(chosen);
  for (const text of picked) if (!offered.includes(text)) throw new ConsentError(`${text} was not offered on this consent page`);
  // In the order the page offered them, which follows the request.
  return reduce(offered.filter((text) => picked.has(text)).map(parseScope));
}

const TYPE_LABELS: Readonly<Record<string, string>> = {
  '*': 'All of the health record',
  Patient: 'Demographics (name, birth date, contact details)',
  AllergyIntolerance: 'Allergies and intolerances',
  CarePlan: 'Care plans',
  CareTeam: 'Care team',
  Condition: 'Conditions (problems, diagnoses, health concerns)',
  Coverage: 'Insurance coverage',
  Device: 'Implanted devices',
  DiagnosticReport: 'Diagnostic reports',
  DocumentReference: 'Documents and clinical notes',
  Encounter: 'Visits and stays',
  ExplanationOfBenefit: 'Claims and explanations of benefit',
  Goal: 'Goals',
  Immunization: 'Immunizations',
  Location: 'Locations',
  Medication: 'Medications',
  MedicationDispense: 'Medications dispensed',
  MedicationRequest: 'Prescriptions',
  Observation: 'Observations (lab results, vital signs, assessments)',
  Organization: 'Organizations',
  Practitioner: 'Clinicians',
  PractitionerRole: 'Clinician roles',
  Procedure: 'Procedures',
  Provenance: 'Where the records came from',
  QuestionnaireResponse: 'Questionnaire answers',
  RelatedPerson: 'Related people and caregivers',
  ServiceRequest: 'Orders and referrals',
  Specimen: 'Specimens',
};

/** Plain words for a kind of data (a FHIR resource type), as the consent and connected-apps pages say it. */
export function resourceTypeLabel(resourceType: string): string {
  return TYPE_LABELS[resourceType] ?? capitalise(words(resourceType));
}

const ACTIONS: Readonly<Record<(typeof PERMISSION_LETTERS)[number], string>> = { c: 'create', r: 'read', u: 'update', d: 'delete', s: 'search' };

/** Plain words for a scope, for the consent page and the connected-apps page. */
export function describeScope(scope: Scope): Pick<ConsentOption, 'label' | 'actions' | 'group' | 'note'> {
  switch (scope.kind) {
    case 'fixed':
      return { ...FIXED_DESCRIPTIONS[scope.name], actions: undefined };
    case 'launch-context': {
      const what = scope.resourceType === 'Patient' ? 'which patient record is open' : scope.resourceType === 'Encounter' ? 'which visit is open' : `the ${words(scope.resourceType)} it was opened for`;
      return { label: `Know ${what}`, actions: undefined, group: 'context', note: undefined };
    }
    case 'extension':
      return { label: `Additional access: ${scope.value}`, actions: undefined, group: 'other', note: undefined };
    case 'resource': {
      const base = resourceTypeLabel(scope.resourceType);
      const constraint = scope.query.map((q) => (q.name === 'category' ? categoryLabel(scope.resourceType, q.value) : undefined) ?? `only where ${q.name} is ${q.value}`);
      const label = !constraint.length ? base : scope.resourceType === 'Observation' || scope.resourceType === 'Condition' ? constraint.join(', ') : `${base}: ${constraint.join(', ')}`;
      const who = scope.context === 'user' ? ' (any patient you can access)' : scope.context === 'system' ? ' (all patients)' : '';
      return {
        label: `${label}${who}`,
        actions: listWords(PERMISSION_LETTERS.filter((p) => scope.permissions & PERMISSION_BITS[p]).map((p) => ACTIONS[p])),
        group: 'data',
        note: scope.resourceType === '*' ? 'This includes kinds of data the record does not hold yet, and kinds added in the future.' : scope.permissions & ~PERMISSION_BITS.r & ~PERMISSION_BITS.s ? 'The app may change the record, not only read it.' : undefined,
      };
    }
  }
}

const FIXED_DESCRIPTIONS = {
  openid: { label: 'Confirm who you are', group: 'identity', note: undefined },
  fhirUser: { label: 'Know which person in the record you are', group: 'identity', note: undefined },
  profile: { label: 'See your name', group: 'identity', note: undefined },
  launch: { label: 'Know what was open when it was launched', group: 'context', note: undefined },
  offline_access: { label: 'Keep access when you are not using it', group: 'refresh', note: 'The app keeps access, even after you sign out, until you revoke it on your connected-apps page.' },
  online_access: { label: 'Keep access while you are signed in', group: 'refresh', note: undefined },
  udap: { label: 'Confirm who you are to a member of a trust community', group: 'identity', note: undefined },
  introspect: { label: 'Ask this server about access tokens', group: 'other', note: undefined },
  admin: { label: 'Administer this server', group: 'other', note: 'Full control over apps, users and data of this server.' },
  'ehr-launch': { label: 'Open apps with a patient and visit in context', group: 'other', note: undefined },
} as const;

function words(type: string): string {
  return type.replace(/([a-z])([A-Z])/g, '$1 $2').toLowerCase();
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function listWords(items: readonly string[]): string {
  if (items.length <= 1) return items.join('');
  return `${items.slice(0, -1).join(', ')} and ${items.at(-1)!}`;
}
