import type { ColumnType, Generated } from 'kysely';

/** Facts about the data that code checks at start-up (a conversion still to run, say), by key. */
export interface ServerStateTable {
  key: string;
  value: ColumnType<unknown, string, string>;
  updated_at: Generated<Date>;
}
