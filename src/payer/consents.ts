import { randomUUID } from 'node:crypto';

import { sql, type Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import type { MemberConsentKind } from '../db/tables/payer.js';

/**
 * A member's choices about payer data exchange (CMS-0057-F; Da Vinci PDex): opting out of Provider Access,
 * opting in to Payer-to-Payer (for any payer or one, with a period), and excluding sensitive data. Each is a
 * row; withdrawing keeps the row (withdrawn_at), so the member's history and the audit stay whole. The gateway
 * reads them at every request (src/payer/population.ts).
 */

export const MEMBER_CONSENT_KINDS: readonly MemberConsentKind[] = ['provider-access-opt-out', 'payer-to-payer-opt-in', 'exclude-sensitive'];

export interface MemberConsent {
  readonly id: string;
  readonly patientId: string;
  readonly kind: MemberConsentKind;
  readonly organization: string | null;
  readonly periodStart: Date;
  readonly periodEnd: Date | null;
  readonly recordedBy: string;
  readonly createdAt: Date;
  readonly withdrawnAt: Date | null;
  /** In force now: not withdrawn, within its period. */
  readonly active: boolean;
}

export interface NewMemberConsent {
  readonly patientId: string;
  readonly kind: MemberConsentKind;
  readonly organization?: string | undefined;
  readonly periodStart?: Date | undefined;
  readonly periodEnd?: Date | undefined;
  readonly recordedBy: string;
}

export async function recordMemberConsent(db: Kysely<DB>, consent: NewMemberConsent): Promise<MemberConsent> {
  const row = await db
    .insertInto('member_consents')
    .values({
      id: randomUUID(),
      patient_id: consent.patientId,
      kind: consent.kind,
      organization: consent.organization ?? null,
      ...(consent.periodStart ? { period_start: consent.periodStart } : {}),
      period_end: consent.periodEnd ?? null,
      recorded_by: consent.recordedBy,
      withdrawn_at: null,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return view(row, new Date());
}

/** Withdraws a consent of the patient's still in force; undefined when there is none by that id (or it was withdrawn). */
export async function withdrawMemberConsent(db: Kysely<DB>, patientId: string, id: string): Promise<MemberConsent | undefined> {
  const row = await db
    .updateTable('member_consents')
    .set({ withdrawn_at: sql<Date>`now()` })
    .where('id', '=', id)
    .where('patient_id', '=', patientId)
    .where('withdrawn_at', 'is', null)
    .returningAll()
    .executeTakeFirst();
  return row && view(row, new Date());
}

/** Withdraws every consent of a kind the patient has in force (the account page's "undo"); returns those withdrawn. */
export async function withdrawMemberConsentsOfKind(db: Kysely<DB>, patientId: string, kind: MemberConsentKind): Promise<MemberConsent[]> {
  const rows = await db
    .updateTable('member_consents')
    .set({ withdrawn_at: sql<Date>`now()` })
    .where('patient_id', '=', patientId)
    .where('kind', '=', kind)
    .where('withdrawn_at', 'is', null)
    .returningAll()
    .execute();
  const now = new Date();
  return rows.map((r) => view(r, now));
}

/** The patient's consents, newest first, withdrawn ones included. */
export async function memberConsents(db: Kysely<DB>, patientId: string): Promise<MemberConsent[]> {
  const rows = await db.selectFrom('member_consents').selectAll().where('patient_id', '=', patientId).orderBy('created_at', 'desc').orderBy('id').execute();
  const now = new Date();
  return rows.map((r) => view(r, now));
}

interface Row {
  id: string;
  patient_id: string;
  kind: MemberConsentKind;
  organization: string | null;
  period_start: Date;
  period_end: Date | null;
  recorded_by: string;
  created_at: Date;
  withdrawn_at: Date | null;
}

function view(row: Row, now: Date): MemberConsent {
  const periodStart = new Date(row.period_start);
  const periodEnd = row.period_end && new Date(row.period_end);
  const withdrawnAt = row.withdrawn_at && new Date(row.withdrawn_at);
  return {
    id: row.id,
    patientId: row.patient_id,
    kind: row.kind,
    organization: row.organization,
    periodStart,
    periodEnd,
    recordedBy: row.recorded_by,
    createdAt: new Date(row.created_at),
    withdrawnAt,
    active: !withdrawnAt && periodStart <= now && (!periodEnd || periodEnd > now),
  };
}

const CONSENT_SCOPE = 'http://terminology.hl7.org/CodeSystem/consentscope';
const ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';

/**
 * A consent as a FHIR R4 Consent after Da Vinci HRex's (scope `patient-privacy`, category IDSCL for
 * information disclosure, provision permit or deny): opt-ins permit, opt-outs and exclusions deny.
 */
export function consentResource(consent: MemberConsent): Record<string, unknown> {
  const permit = consent.kind === 'payer-to-payer-opt-in';
  return {
    resourceType: 'Consent',
    id: consent.id,
    status: consent.withdrawnAt ? 'inactive' : 'active',
    scope: { coding: [{ system: CONSENT_SCOPE, code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '64292-6', display: 'Release of information consent' }] }, { coding: [{ system: ACT_CODE, code: 'IDSCL' }] }],
    patient: { reference: `Patient/${consent.patientId}` },
    dateTime: consent.createdAt.toISOString(),
    policy: [{ uri: `urn:smart-auth-server:member-consent:${consent.kind}` }],
    provision: {
      type: permit ? 'permit' : 'deny',
      period: { start: consent.periodStart.toISOString(), ...(consent.periodEnd ? { end: consent.periodEnd.toISOString() } : {}) },
      ...(consent.organization ? { actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { identifier: identifierOf(consent.organization) } }] } : {}),
      ...(consent.kind === 'exclude-sensitive' ? { securityLabel: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }] } : {}),
    },
  };
}

function identifierOf(token: string): { system: string; value: string } {
  const at = token.lastIndexOf('|');
  return { system: token.slice(0, at), value: token.slice(at + 1) };
}
