import type { ColumnType, Generated } from 'kysely';

/** What the sandbox launcher asked of one launch beyond its context (src/launch/launcher-options.ts). */
export interface LauncherOptionsTable {
  /** The launch's id as stored in launches (a keyed hash of the launch id). */
  launch_id: string;
  skip_login: Generated<boolean>;
  skip_consent: Generated<boolean>;
  /** A simulated error (src/smart/simulated-errors.ts), or null. */
  simulate: string | null;
  /** The patients the picker offers; null for whatever the user may choose. */
  patients: ColumnType<string[] | null, string | null, string | null>;
  created_at: Generated<Date>;
}
