import type { ColumnType, Generated } from 'kysely';


/** SMART App Launch 2.2 fhirContext item: a resource in context, by reference, canonical or identifier. */
export interface FhirContextItem {
  readonly reference?: string;
  readonly canonical?: string;
  readonly identifier?: { readonly system?: string; readonly value?: string };
  readonly type?: string;
  readonly role?: string;
}

/** The launch context columns, the same in a launch and in the grant it becomes. */
export interface LaunchContextColumns {
  patient: string | null;
  encounter: string | null;
  fhir_context: ColumnType<FhirContextItem[] | null, string | null, string | null>;
  intent: string | null;
  need_patient_banner: boolean | null;
  smart_style_url: string | null;
  tenant: string | null;
}

export interface LaunchesTable extends LaunchContextColumns {
  id: string;
  /** The client the launch is for; null when any client may use it. */
  client_id: string | null;
  /** The FHIR base (aud) the launch is for; null for any configured one. */
  fhir_base: string | null;
  /** The user the EHR launched as; null when whoever logs in. */
  user_id: string | null;
  created_at: Generated<Date>;
  expires_at: Date;
  consumed_at: Date | null;
}
