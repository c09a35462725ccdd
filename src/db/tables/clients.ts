import type { ColumnType, Generated } from 'kysely';

export type ClientStatus = 'pending' | 'active' | 'suspended';

export interface ClientsTable {
  client_id: string;
  /** RFC 7591 client metadata, without the secret. */
  metadata: ColumnType<Record<string, unknown>, string, string>;
  /** Sealed by SecretBox (purpose `client-secret`, context the client_id); null for clients without one. */
  client_secret: string | null;
  status: Generated<ClientStatus>;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}
