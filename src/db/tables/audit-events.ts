import type { ColumnType } from 'kysely';

export type AuditOutcome = 'success' | 'failure';
export type AuditActorType = 'user' | 'client' | 'admin' | 'system' | 'anonymous';

/** Append-only (a trigger refuses UPDATE, DELETE and TRUNCATE); `hash` chains each row to the one before in its chain. */
export interface AuditEventsTable {
  /** bigint: a string from pg, a bigint from PGlite. */
  seq: ColumnType<string | bigint, never, never>;
  /** The chain the row belongs to: one per server process run ('' for rows from before chains). */
  chain: string;
  recorded_at: Date;
  type: string;
  outcome: AuditOutcome;
  actor_type: AuditActorType;
  actor_id: string | null;
  user_id: string | null;
  client_id: string | null;
  patient_id: string | null;
  grant_id: string | null;
  scope: string | null;
  source_ip: string | null;
  request_id: string | null;
  details: ColumnType<Record<string, unknown>, string, never>;
  prev_hash: string;
  hash: string;
}
