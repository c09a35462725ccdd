import type { Generated } from 'kysely';

/** A session of the operator console (src/users/console-sessions.ts). */
export interface ConsoleSessionsTable {
  /** SecretBox bearer id (keyed hash) of the session id the cookie holds: never the id itself. */
  id_hash: string;
  /** The operator; null for a session opened with ADMIN_TOKEN. */
  user_id: string | null;
  created_at: Generated<Date>;
  seen_at: Generated<Date>;
  /** The earlier of the idle timeout from `seen_at` and the absolute limit from `created_at`. */
  expires_at: Date;
}
