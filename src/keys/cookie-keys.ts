import { randomBytes, randomUUID } from 'node:crypto';

import { sql, type Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import type { SecretBox } from '../security/secret-box.js';

const LOCK = sql`select pg_advisory_xact_lock(hashtext('smart-auth:cookie-keys'))`;
const SEAL_PURPOSE = 'cookie-key';

/**
 * Keys that sign oidc-provider's cookies (Keygrip: the first signs, all verify). They come from the
 * database so every process agrees, and never from code.
 */
export async function ensureCookieKey(db: Kysely<DB>, box: SecretBox): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await LOCK.execute(trx);
    const existing = await trx.selectFrom('cookie_keys').select('id').limit(1).executeTakeFirst();
    if (!existing) await insert(trx, box);
  });
}

/** Adds a new signing key in front; older keys keep verifying cookies until pruned. */
export async function rotateCookieKeys(db: Kysely<DB>, box: SecretBox): Promise<string> {
  return db.transaction().execute(async (trx) => {
    await LOCK.execute(trx);
    return insert(trx, box);
  });
}

/** Newest first. */
export async function loadCookieKeys(db: Kysely<DB>, box: SecretBox): Promise<{ ids: string[]; secrets: string[] }> {
  const rows = await db.selectFrom('cookie_keys').select(['id', 'secret']).orderBy('created_at', 'desc').orderBy('id').execute();
  return { ids: rows.map((r) => r.id), secrets: rows.map((r) => box.open(r.secret, SEAL_PURPOSE, r.id)) };
}

/**
 * Removes keys superseded more than `keepSeconds` ago (a cookie they signed has outlived every session by
 * then). The newest key is never removed.
 */
export async function pruneCookieKeys(db: Kysely<DB>, keepSeconds: number): Promise<number> {
  const rows = await db.selectFrom('cookie_keys').select(['id', 'created_at']).orderBy('created_at', 'desc').execute();
  const cutoff = Date.now() - keepSeconds * 1000;
  const stale = rows.filter((row, i) => i > 0 && rows[i - 1]!.created_at.getTime() < cutoff).map((r) => r.id);
  if (!stale.length) return 0;
  await db.deleteFrom('cookie_keys').where('id', 'in', stale).execute();
  return stale.length;
}

async function insert(db: Kysely<DB>, box: SecretBox): Promise<string> {
  const id = randomUUID();
  await db.insertInto('cookie_keys').values({ id, secret: box.seal(randomBytes(32).toString('base64url'), SEAL_PURPOSE, id) }).execute();
  return id;
}
