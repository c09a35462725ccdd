import type { Kysely } from 'kysely';

import type { DB } from './schema.js';

/** Is this mark set (see the server_state table)? */
export async function hasMark(db: Kysely<DB>, key: string): Promise<boolean> {
  return !!(await db.selectFrom('server_state').select('key').where('key', '=', key).executeTakeFirst());
}

export async function clearMark(db: Kysely<DB>, key: string): Promise<void> {
  await db.deleteFrom('server_state').where('key', '=', key).execute();
}
