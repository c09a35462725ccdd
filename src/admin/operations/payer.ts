import { HttpProblem } from '../../errors.js';
import { attributionListOf, deleteAttributionList, saveAttributionList } from '../../payer/attribution.js';
import { MEMBER_CONSENT_KINDS, recordMemberConsent, withdrawMemberConsent, type MemberConsent } from '../../payer/consents.js';
import { instant, KEPT_RANGE } from '../../payer/instants.js';
import { patientAccessCsv, patientAccessReport, type PatientAccessReport } from '../../payer/patient-access-report.js';
import { designateRepresentative, isRepresentativeUser, revokeRepresentative, type Representative } from '../../payer/representatives.js';
import { ORGANIZATION_IDENTIFIER_PATTERN } from '../../smart/client-rules.js';
import { getUser } from '../../users/users.js';
import type { MemberConsentKind } from '../../db/tables/payer.js';
import type { AdminDeps } from '../deps.js';
import type { Operator } from './operator.js';

/*
 * What an operator does for CMS-0057-F, whichever door they came in by (the admin API, the console, the CLI):
 * the Patient Access report, attribution lists, members' consents recorded on their behalf, and
 * representatives. Each change is audited.
 */

/** The first year a report can cover, and the last (next year's has not begun). */
const FIRST_YEAR = 2020;

export const YEAR_PROPERTY = { type: 'integer', minimum: FIRST_YEAR, maximum: 9999, description: 'a calendar year (UTC)' } as const;
export const PATIENT_ID_PROPERTY = { type: 'string', pattern: '^[A-Za-z0-9\\-.]{1,64}$', description: 'a FHIR id: 1-64 of A-Z a-z 0-9 - .' } as const;
const INSTANT = { type: 'string', format: 'date-time', description: `from ${KEPT_RANGE.earliest} to ${KEPT_RANGE.latest}` } as const;

export const MEMBER_CONSENT_SCHEMA = {
  type: 'object',
  required: ['kind'],
  additionalProperties: false,
  properties: {
    kind: { type: 'string', enum: [...MEMBER_CONSENT_KINDS] },
    organization: { type: 'string', pattern: ORGANIZATION_IDENTIFIER_PATTERN, description: 'payer-to-payer-opt-in only: the one payer (system|value) the member opts in for; omitted, any payer' },
    period_start: INSTANT,
    period_end: INSTANT,
  },
} as const;

export interface MemberConsentInput {
  kind: MemberConsentKind;
  organization?: string;
  period_start?: string;
  period_end?: string;
}

export const REPRESENTATIVE_SCHEMA = {
  type: 'object',
  required: ['user_id', 'patient_id'],
  additionalProperties: false,
  properties: { user_id: { type: 'string', minLength: 1, maxLength: 256 }, patient_id: PATIENT_ID_PROPERTY, period_end: INSTANT },
} as const;

export interface RepresentativeInput {
  user_id: string;
  patient_id: string;
  period_end?: string;
}

export async function patientAccessMetrics(deps: Pick<AdminDeps, 'db'>, year: number): Promise<PatientAccessReport> {
  const current = new Date().getUTCFullYear();
  if (year > current) throw HttpProblem.invalid(`year ${year} has not begun`);
  return patientAccessReport(deps.db, year);
}

export { patientAccessCsv };

export async function importAttribution(deps: AdminDeps, by: Operator, group: unknown, organization?: string): Promise<{ id: string; organization: string; members: number; created: boolean }> {
  const list = attributionListOf(group, organization);
  const { created } = await saveAttributionList(deps.db, list);
  await deps.audit.record({ ...by, type: 'attribution.imported', details: { list: list.id, organization: list.organization, members: list.members.length, created } });
  return { id: list.id, organization: list.organization, members: list.members.length, created };
}

export async function removeAttribution(deps: AdminDeps, by: Operator, id: string): Promise<void> {
  if (!(await deleteAttributionList(deps.db, id))) throw HttpProblem.notFound(`no attribution list ${id}`);
  await deps.audit.record({ ...by, type: 'attribution.deleted', details: { list: id } });
}

/** A member's consent, recorded by an operator (a member's call, a paper form). */
export async function addMemberConsent(deps: AdminDeps, by: Operator, patientId: string, input: MemberConsentInput, recordedBy = `admin:${by.actorId ?? 'token'}`): Promise<MemberConsent> {
  if (input.organization !== undefined && input.kind !== 'payer-to-payer-opt-in') throw HttpProblem.invalid('organization: only a payer-to-payer-opt-in names a payer');
  const periodStart = input.period_start === undefined ? undefined : instant('period_start', input.period_start, KEPT_RANGE);
  const periodEnd = input.period_end === undefined ? undefined : instant('period_end', input.period_end, KEPT_RANGE);
  if (periodStart && periodEnd && periodEnd <= periodStart) throw HttpProblem.invalid('period_end must be after period_start');
  const consent = await recordMemberConsent(deps.db, { patientId, kind: input.kind, organization: input.organization, periodStart, periodEnd, recordedBy });
  await deps.audit.record({ ...by, type: 'member_consent.recorded', patientId, details: { consent: consent.id, kind: consent.kind, ...(consent.organization ? { organization: consent.organization } : {}), ...(consent.periodEnd ? { period_end: consent.periodEnd.toISOString() } : {}) } });
  return consent;
}

export async function withdrawConsent(deps: AdminDeps, by: Operator, patientId: string, id: string): Promise<MemberConsent> {
  const consent = await withdrawMemberConsent(deps.db, patientId, id);
  if (!consent) throw HttpProblem.notFound(`no consent ${id} of patient ${patientId} still in force`);
  await deps.audit.record({ ...by, type: 'member_consent.withdrawn', patientId, details: { consent: consent.id, kind: consent.kind } });
  return consent;
}

/** An operator designates a representative: active at once (the operator has the paperwork). */
export async function addRepresentative(deps: AdminDeps, by: Operator, input: RepresentativeInput): Promise<Representative> {
  const periodEnd = input.period_end === undefined ? undefined : instant('period_end', input.period_end, KEPT_RANGE);
  if (periodEnd && periodEnd <= new Date()) throw HttpProblem.invalid('period_end is in the past');
  const user = await getUser(deps.db, input.user_id);
  if (!user) throw HttpProblem.notFound(`no user ${input.user_id}`);
  if (!isRepresentativeUser(user.fhirUser)) throw HttpProblem.invalid(`user ${input.user_id} is ${user.fhirUser}: a representative signs in as a RelatedPerson or a Person`);
  const representative = await designateRepresentative(deps.db, { userId: user.id, patientId: input.patient_id, status: 'active', periodEnd, designatedBy: `admin:${by.actorId ?? 'token'}` });
  if (!representative) throw HttpProblem.conflict(`user ${user.id} already acts, or was asked to act, for patient ${input.patient_id}: revoke that designation first`);
  await deps.audit.record({ ...by, type: 'representative.designated', userId: user.id, patientId: input.patient_id, details: { representative: representative.id, status: representative.status } });
  return representative;
}

export async function endRepresentative(deps: AdminDeps, by: Operator, id: string): Promise<Representative> {
  const revoked = await revokeRepresentative(deps.db, id);
  if (!revoked) throw HttpProblem.notFound(`no designation ${id} still standing`);
  const { representative, grantsRevoked } = revoked;
  await deps.audit.record({ ...by, type: 'representative.revoked', userId: representative.userId, patientId: representative.patientId, details: { representative: id, grants_revoked: grantsRevoked } });
  return representative;
}
