import type { ColumnType, Generated } from 'kysely';

/** oidc-provider's persisted models, one row per (model, id). */
export interface OidcPayloadsTable {
  model: string;
  id: string;
  /** Written as a JSON string, read back as the parsed object. */
  payload: ColumnType<Record<string, unknown>, string, string>;
  grant_id: string | null;
  uid: string | null;
  user_code: string | null;
  expires_at: Date | null;
  consumed_at: Date | null;
  created_at: Generated<Date>;
}
