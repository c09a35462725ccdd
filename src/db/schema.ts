import type { AuditCheckpointsTable } from './tables/audit-checkpoints.js';
import type { AuditEventsTable } from './tables/audit-events.js';
import type { ClientsTable } from './tables/clients.js';
import type { ConsoleSessionsTable } from './tables/console-sessions.js';
import type { CookieKeysTable } from './tables/cookie-keys.js';
import type { EncountersTable } from './tables/encounters.js';
import type { GrantContextsTable } from './tables/grant-contexts.js';
import type { LaunchesTable } from './tables/launches.js';
import type { LoginThrottleTable } from './tables/login-throttle.js';
import type { OidcPayloadsTable } from './tables/oidc-payloads.js';
import type { AttributionListsTable, AttributionMembersTable, MemberConsentsTable, RepresentativesTable } from './tables/payer.js';
import type { PatientsTable } from './tables/patients.js';
import type { ServerStateTable } from './tables/server-state.js';
import type { SigningKeysTable } from './tables/signing-keys.js';
import type { UserPatientsTable } from './tables/user-patients.js';
import type { UsersTable } from './tables/users.js';

export interface DB {
  oidc_payloads: OidcPayloadsTable;
  signing_keys: SigningKeysTable;
  cookie_keys: CookieKeysTable;
  clients: ClientsTable;
  users: UsersTable;
  patients: PatientsTable;
  encounters: EncountersTable;
  launches: LaunchesTable;
  grant_contexts: GrantContextsTable;
  user_patients: UserPatientsTable;
  audit_events: AuditEventsTable;
  server_state: ServerStateTable;
  login_throttle: LoginThrottleTable;
  audit_checkpoints: AuditCheckpointsTable;
  console_sessions: ConsoleSessionsTable;
  attribution_lists: AttributionListsTable;
  attribution_members: AttributionMembersTable;
  member_consents: MemberConsentsTable;
  representatives: RepresentativesTable;
}
