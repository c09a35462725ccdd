import type { ColumnType, Generated } from 'kysely';

/** Append-only (a trigger refuses UPDATE, DELETE and TRUNCATE): signed statements of the audit trail's state. */
export interface AuditCheckpointsTable {
  /** bigint: a string from pg, a bigint from PGlite. */
  id: ColumnType<string | bigint, never, never>;
  created_at: Generated<Date>;
  /** The signing key that signed it: such a key is kept after retirement (pruneRetiredKeys). */
  kid: string;
  /** Compact JWS (typ `audit-checkpoint+jwt`) over the chain heads; the only part verification trusts. */
  jws: string;
}
