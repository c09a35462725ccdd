import type { ColumnType, Generated } from 'kysely';

export interface PatientsTable {
  id: string;
  /** The FHIR R4 Patient resource. */
  resource: ColumnType<Record<string, unknown>, string, string>;
  display_name: string;
  /** Lower-cased names and identifier values, for the picker's search. */
  search_text: string;
  /** FHIR date (YYYY, YYYY-MM or YYYY-MM-DD). */
  birth_date: string | null;
  gender: string | null;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}
