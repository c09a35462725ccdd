import type { Generated } from 'kysely';

import type { LaunchContextColumns } from './launches.js';

export interface GrantContextsTable extends LaunchContextColumns {
  grant_id: string;
  fhir_base: string;
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
