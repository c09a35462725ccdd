import type { Generated } from 'kysely';

export interface CookieKeysTable {
  id: string;
  /** Sealed by SecretBox (purpose `cookie-key`, context the id). */
  secret: string;
  created_at: Generated<Date>;
}
