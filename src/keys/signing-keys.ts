import { createPrivateKey, createPublicKey, generateKeyPair, type JsonWebKey, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';

import { calculateJwkThumbprint, type JWK } from 'jose';
import { sql, type Kysely, type Transaction } from 'kysely';

import type { SigningAlg } from '../config/config.js';
import type { DB } from '../db/schema.js';
import type { SigningKeyState } from '../db/tables/signing-keys.js';
import { SecretBoxError, type SecretBox } from '../security/secret-box.js';

const generate = promisify(generateKeyPair);

/**
 * Signing keys live in Postgres, private parts sealed with SECRET_KEY. Per algorithm there is one `active`
 * key (signs), one `next` key (published, not yet signing) and any number of `retired` keys (published until
 * the tokens they signed have expired).
 *
 * Rotation promotes `next` to `active`. Because `next` was published since it was created, a client that
 * caches our JWKS already knows the key before the first token it signs; and because each server process
 * re-reads the key set periodically, a process that has not yet seen the rotation keeps signing with the old
 * key, which stays published. No process ever signs with a key another process does not publish.
 */
export interface SigningKeyRow {
  readonly kid: string;
  readonly alg: SigningAlg;
  readonly state: SigningKeyState;
  readonly createdAt: Date;
  readonly activatedAt: Date | null;
  readonly retiredAt: Date | null;
  readonly publishUntil: Date | null;
}

export interface LoadedSigningKeys {
  /** Private JWKs in the order oidc-provider must see them: active keys first, so they are the ones chosen to sign. */
  readonly keys: readonly JWK[];
  readonly rows: readonly SigningKeyRow[];
}

export class KeyRotationError extends Error {
  override name = 'KeyRotationError';
}

const LOCK = sql`select pg_advisory_xact_lock(hashtext('smart-auth:signing-keys'))`;
const SEAL_PURPOSE = 'signing-key';

/** Creates the missing active and next keys for each algorithm. Safe to call from several processes at once. */
export async function ensureSigningKeys(db: Kysely<DB>, box: SecretBox, algs: readonly SigningAlg[]): Promise<string[]> {
  return db.transaction().execute(async (trx) => {
    await LOCK.execute(trx);
    const present = await trx.selectFrom('signing_keys').select(['alg', 'state']).where('state', 'in', ['active', 'next']).execute();
    const created: string[] = [];
    for (const alg of algs) {
      for (const state of ['active', 'next'] as const) {
        if (!present.some((r) => r.alg === alg && r.state === state)) created.push(await insertKey(trx, box, alg, state));
      }
    }
    return created;
  });
}

export interface RotateOptions {
  /** Which algorithms to rotate; all that have keys when omitted. */
  readonly algs?: readonly SigningAlg[];
  /**
   * The `next` key must have been published at least this long, so that every process and every client
   * cache holds it before it signs. Rotation is refused earlier unless `force` is set.
   */
  readonly minPublishedSeconds: number;
  /** How long a retired key stays in the JWKS: at least the lifetime of anything it signed. */
  readonly retiredPublishSeconds: number;
  readonly force?: boolean;
  /**
   * Scheduled rotation: skip an algorithm whose active key is younger than this, checked under the lock, so
   * that processes deciding at the same moment rotate once between them.
   */
  readonly dueAfterDays?: number;
}

export interface RotationResult {
  readonly alg: SigningAlg;
  readonly activated: string;
  readonly retired: string | undefined;
  readonly next: string;
}

export async function rotateSigningKeys(db: Kysely<DB>, box: SecretBox, options: RotateOptions): Promise<RotationResult[]> {
  return db.transaction().execute(async (trx) => {
    await LOCK.execute(trx);
    const rows = await trx
      .selectFrom('signing_keys')
      .select(['kid', 'alg', 'state', 'created_at', 'activated_at'])
      .where('state', 'in', ['active', 'next'])
      .execute();
    if (!rows.length) throw new KeyRotationError('no signing keys exist yet; start the server once to create them');
    const algs = options.algs ?? [...new Set(rows.map((r) => r.alg as SigningAlg))].sort();
    const results: RotationResult[] = [];
    for (const alg of algs) {
      const next = rows.find((r) => r.alg === alg && r.state === 'next');
      const active = rows.find((r) => r.alg === alg && r.state === 'active');
      if (options.dueAfterDays !== undefined && active) {
        const age = Date.now() - (active.activated_at ?? active.created_at).getTime();
        if (age < options.dueAfterDays * 86_400_000) continue;
      }
      if (!next) throw new KeyRotationError(`no next ${alg} key to promote; is ${alg} in SIGNING_ALGS? The server creates one when it starts`);
      const publishedFor = (Date.now() - next.created_at.getTime()) / 1000;
      if (!options.force && publishedFor < options.minPublishedSeconds) {
        throw new KeyRotationError(
          `the next ${alg} key (${next.kid}) has been published for ${Math.floor(publishedFor)} s, less than the ${options.minPublishedSeconds} s ` +
            'every server process and client cache needs to see it before it signs; wait, or force the rotation',
        );
      }
      if (active) {
        await trx
          .updateTable('signing_keys')
          .set({ state: 'retired', retired_at: sql<Date>`now()`, publish_until: sql<Date>`now() + make_interval(secs => ${options.retiredPublishSeconds})` })
          .where('kid', '=', active.kid)
          .execute();
      }
      await trx.updateTable('signing_keys').set({ state: 'active', activated_at: sql<Date>`now()` }).where('kid', '=', next.kid).execute();
      const newNext = await insertKey(trx, box, alg, 'next');
      results.push({ alg, activated: next.kid, retired: active?.kid, next: newNext });
    }
    return results;
  });
}

/** Algorithms whose active key is older than `days`. */
export async function keysDueForRotation(db: Kysely<DB>, days: number): Promise<SigningAlg[]> {
  const rows = await db
    .selectFrom('signing_keys')
    .select('alg')
    .where('state', '=', 'active')
    .where(sql<Date>`coalesce(activated_at, created_at)`, '<', sql<Date>`now() - make_interval(days => ${days})`)
    .execute();
  return rows.map((r) => r.alg as SigningAlg);
}

/**
 * Drops retired keys whose publication period is over, except those that signed an audit checkpoint: a
 * checkpoint must stay verifiable for as long as it is kept, here or exported, and what makes a key ours is
 * its private part sealed under SECRET_KEY (see {@link ownSigningKey}), so the row itself must stay. Such a
 * key is no longer published and never signs again; there is one per RS256 rotation, a handful a year.
 * Keeping a public key alone would not do: anyone who can write the database could add one of their own.
 */
export async function pruneRetiredKeys(db: Kysely<DB>): Promise<number> {
  const result = await db
    .deleteFrom('signing_keys')
    .where('state', '=', 'retired')
    .where('publish_until', '<', sql<Date>`now()`)
    .where((eb) => eb.not(eb.exists(eb.selectFrom('audit_checkpoints').select('audit_checkpoints.kid').whereRef('audit_checkpoints.kid', '=', 'signing_keys.kid'))))
    .executeTakeFirst();
  return Number(result.numDeletedRows);
}

/** One of our signing keys, opened: for statements the server signs itself (audit checkpoints). */
export interface OwnSigningKey {
  readonly kid: string;
  readonly alg: SigningAlg;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

/** The key that signs now for `alg`. */
export async function activeSigningKey(db: Kysely<DB>, box: SecretBox, alg: SigningAlg): Promise<OwnSigningKey> {
  const row = await db.selectFrom('signing_keys').select(['kid', 'alg', 'private_jwk']).where('alg', '=', alg).where('state', '=', 'active').executeTakeFirst();
  if (!row) throw new KeyRotationError(`no active ${alg} key yet; start the server once to create it`);
  return openKey(box, row);
}

/**
 * The signing key `kid`, whatever its state, when it is ours: its sealed private part opens under our
 * SecretBox (the seal is bound to the kid). Someone who can write the database could add a row with a key of
 * their own, or replace a row's public_jwk, but cannot seal without SECRET_KEY; so the public key is derived
 * from the private part, never read from public_jwk.
 */
export async function ownSigningKey(db: Kysely<DB>, box: SecretBox, kid: string): Promise<OwnSigningKey | undefined> {
  const row = await db.selectFrom('signing_keys').select(['kid', 'alg', 'private_jwk']).where('kid', '=', kid).executeTakeFirst();
  if (!row) return undefined;
  try {
    return openKey(box, row);
  } catch (error) {
    if (error instanceof SecretBoxError) return undefined;
    throw error;
  }
}

/** The algorithm too is taken from the sealed JWK, not from the row's other columns. */
function openKey(box: SecretBox, row: { kid: string; alg: string; private_jwk: string }): OwnSigningKey {
  const jwk = JSON.parse(box.open(row.private_jwk, SEAL_PURPOSE, row.kid)) as JsonWebKey & { alg?: string };
  const privateKey = createPrivateKey({ key: jwk, format: 'jwk' });
  return { kid: row.kid, alg: (jwk.alg ?? row.alg) as SigningAlg, privateKey, publicKey: createPublicKey(privateKey) };
}

export async function listSigningKeys(db: Kysely<DB>): Promise<SigningKeyRow[]> {
  const rows = await db
    .selectFrom('signing_keys')
    .select(['kid', 'alg', 'state', 'created_at', 'activated_at', 'retired_at', 'publish_until'])
    .orderBy('alg')
    .orderBy('created_at')
    .orderBy('kid')
    .execute();
  return rows.map(toRow);
}

/** Every key that must be published now, with its private part, in signing order. */
export async function loadSigningKeys(db: Kysely<DB>, box: SecretBox): Promise<LoadedSigningKeys> {
  const rows = await db
    .selectFrom('signing_keys')
    .selectAll()
    .where((eb) => eb.or([eb('state', '!=', 'retired'), eb('publish_until', '>', sql<Date>`now()`)]))
    .execute();
  const rank: Record<SigningKeyState, number> = { active: 0, next: 1, retired: 2 };
  rows.sort((a, b) => rank[a.state] - rank[b.state] || b.created_at.getTime() - a.created_at.getTime());
  const keys = rows.map((row) => JSON.parse(box.open(row.private_jwk, SEAL_PURPOSE, row.kid)) as JWK);
  return { keys, rows: rows.map(toRow) };
}

async function insertKey(trx: Transaction<DB>, box: SecretBox, alg: SigningAlg, state: 'active' | 'next'): Promise<string> {
  const { publicKey, privateKey } = await generateFor(alg);
  const publicJwk = publicKey.export({ format: 'jwk' }) as JWK;
  const kid = await calculateJwkThumbprint(publicJwk, 'sha256');
  const published = { ...publicJwk, kid, alg, use: 'sig' };
  const privateJwk = { ...(privateKey.export({ format: 'jwk' }) as JWK), kid, alg, use: 'sig' };
  await trx
    .insertInto('signing_keys')
    .values({
      kid,
      alg,
      state,
      public_jwk: JSON.stringify(published),
      private_jwk: box.seal(JSON.stringify(privateJwk), SEAL_PURPOSE, kid),
      activated_at: state === 'active' ? sql<Date>`now()` : null,
    })
    .execute();
  return kid;
}

function generateFor(alg: SigningAlg): Promise<{ publicKey: KeyObject; privateKey: KeyObject }> {
  switch (alg) {
    case 'RS256':
    case 'RS384':
      return generate('rsa', { modulusLength: 2048 });
    case 'ES256':
      return generate('ec', { namedCurve: 'P-256' });
    case 'ES384':
      return generate('ec', { namedCurve: 'P-384' });
  }
}

function toRow(row: { kid: string; alg: string; state: SigningKeyState; created_at: Date; activated_at: Date | null; retired_at: Date | null; publish_until: Date | null }): SigningKeyRow {
  return {
    kid: row.kid,
    alg: row.alg as SigningAlg,
    state: row.state,
    createdAt: row.created_at,
    activatedAt: row.activated_at,
    retiredAt: row.retired_at,
    publishUntil: row.publish_until,
  };
}
