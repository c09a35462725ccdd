import type { ColumnType, Generated } from 'kysely';

export interface EncountersTable {
  id: string;
  patient_id: string;
  /** The FHIR R4 Encounter resource. */
  resource: ColumnType<Record<string, unknown>, string, string>;
  status: string;
  /** FHIR dateTime of period.start, when known. */
  period_start: string | null;
  created_at: Generated<Date>;
}
