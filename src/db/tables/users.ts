import type { ColumnType, Generated } from 'kysely';

export interface UsersTable {
  id: string;
  username: string;
  /** PHC-format argon2id hash; null for a user who cannot log in with a password. */
  password_hash: string | null;
  /** The FHIR resource the user is, relative to a FHIR base: `Practitioner/123`, `Patient/abc`, … */
  fhir_user: string;
  name: string;
  roles: ColumnType<string[], string | undefined, string>;
  disabled: Generated<boolean>;
  last_login_at: Date | null;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}
