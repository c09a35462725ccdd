import type { ColumnType, Generated } from 'kysely';

import type { FhirContextItem } from '../../launch/context.js';

export interface GrantContextsTable {
  grant_id: string;
  fhir_base: string;
  patient: string | null;
  encounter: string | null;
  fhir_context: ColumnType<FhirContextItem[] | null, string | null, string | null>;
  intent: string | null;
  need_patient_banner: boolean | null;
  smart_style_url: string | null;
  tenant: string | null;
  launch_id: string | null;
  /** The user's FHIR resource as an absolute URL, when fhirUser was granted. */
  fhir_user: string | null;
  client_id: string | null;
  account_id: string | null;
  /** The granted scope, as the token response says it. */
  scope: string | null;
  last_used_at: Date | null;
  created_at: Generated<Date>;
  expires_at: Date;
}
