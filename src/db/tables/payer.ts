import type { Generated } from 'kysely';

/** A provider organisation's attribution list (one imported Da Vinci ATR Group). */
export interface AttributionListsTable {
  id: string;
  /** The organisation's identifier, `system|value` (NPI, TIN). */
  organization: string;
  name: string | null;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}

/** Group.member: a patient attributed to the list's organisation, within its period unless inactive. */
export interface AttributionMembersTable {
  list_id: string;
  patient_id: string;
  period_start: Date | null;
  period_end: Date | null;
  inactive: Generated<boolean>;
}

export type MemberConsentKind = 'provider-access-opt-out' | 'payer-to-payer-opt-in' | 'exclude-sensitive';

/** A member's choice about who may reach their data; withdrawn ones are kept. */
export interface MemberConsentsTable {
  id: string;
  patient_id: string;
  kind: MemberConsentKind;
  /** A Payer-to-Payer opt-in for one payer (`system|value`); null: any payer. */
  organization: string | null;
  period_start: Generated<Date>;
  period_end: Date | null;
  /** `user:<id>` (the member on the account pages) or `admin:<id>` (an operator). */
  recorded_by: string;
  created_at: Generated<Date>;
  withdrawn_at: Date | null;
}

export type RepresentativeStatus = 'pending' | 'active' | 'revoked';

/** A person who may act for a patient. */
export interface RepresentativesTable {
  id: string;
  user_id: string;
  patient_id: string;
  status: RepresentativeStatus;
  period_start: Generated<Date>;
  period_end: Date | null;
  designated_by: string;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}

/** A client's role for a payer (CMS-0057-F), kept in its metadata as `payer_role`. */
export const PAYER_ROLES = ['patient-access', 'provider-access', 'payer-to-payer'] as const;
export type PayerRole = (typeof PAYER_ROLES)[number];
