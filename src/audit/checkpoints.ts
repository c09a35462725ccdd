import { Ajv } from 'ajv';
import { CompactSign, compactVerify, decodeProtectedHeader, exportJWK, type JWK } from 'jose';
import { sql, type Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import { activeSigningKey, ownSigningKey, type OwnSigningKey } from '../keys/signing-keys.js';
import type { SecretBox } from '../security/secret-box.js';

/**
 * Signed checkpoints of the audit trail: for every chain its head (last sequence number, hash, row count),
 * signed as a compact JWS with the server's active RS256 key. The chain shows a row edited, inserted or
 * removed in the middle; only a statement made earlier shows rows removed from the end of a chain, or a
 * whole chain removed. Checkpoints are stored in `audit_checkpoints` and can be exported and kept where the
 * database's owner cannot reach (`smart-auth audit checkpoint`).
 */

/** RFC 8725 §3.11 explicit typing: the same keys sign ID tokens, and neither may pass for the other. */
export const CHECKPOINT_TYPE = 'audit-checkpoint+jwt';
const CHECKPOINT_ALG = 'RS256';

export interface ChainHead {
  readonly chain: string;
  /** The chain's last row (bigint, as a string). */
  readonly seq: string;
  readonly hash: string;
  /** Rows of the chain up to and including `seq`. */
  readonly count: number;
}

export interface CheckpointClaims {
  readonly iss: string;
  readonly iat: number;
  /** Rows in the trail: the sum of the chains' counts. */
  readonly total: number;
  readonly chains: readonly ChainHead[];
}

export interface Checkpoint {
  readonly jws: string;
  readonly header: { readonly alg: string; readonly kid: string; readonly typ: string };
  readonly claims: CheckpointClaims;
  /** The public key that verifies it, for whoever keeps the checkpoint elsewhere. */
  readonly key: JWK;
}

export interface StoredCheckpoint extends Checkpoint {
  readonly id: string;
  readonly createdAt: Date;
}

export class CheckpointError extends Error {
  override name = 'CheckpointError';
}

/** Every chain's head and count, in one statement so that they describe one snapshot of the trail. */
export async function trailHeads(db: Kysely<DB>): Promise<ChainHead[]> {
  const { rows } = await sql<{ chain: string; count: string | number | bigint; seq: string | bigint; hash: string }>`
    select h.chain, h.count, h.seq, e.hash
    from (select chain, count(*) as count, max(seq) as seq from audit_events group by chain) h
    join audit_events e on e.seq = h.seq
    order by h.chain`.execute(db);
  return rows.map((r) => ({ chain: r.chain, seq: String(r.seq), hash: r.hash, count: Number(r.count) }));
}

/** Signs a checkpoint of the trail as it stands and stores it. */
export async function createCheckpoint(db: Kysely<DB>, box: SecretBox, issuer: string): Promise<StoredCheckpoint> {
  const chains = await trailHeads(db);
  const claims: CheckpointClaims = { iss: issuer, iat: Math.floor(Date.now() / 1000), total: chains.reduce((n, c) => n + c.count, 0), chains };
  const key = await activeSigningKey(db, box, CHECKPOINT_ALG);
  const header = { alg: CHECKPOINT_ALG, kid: key.kid, typ: CHECKPOINT_TYPE };
  const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify(claims))).setProtectedHeader(header).sign(key.privateKey);
  const row = await db.insertInto('audit_checkpoints').values({ kid: key.kid, jws }).returning(['id', 'created_at']).executeTakeFirstOrThrow();
  return { id: String(row.id), createdAt: row.created_at, jws, header, claims, key: await publicJwk(key) };
}

/** A checkpoint as exported to be kept elsewhere (`smart-auth audit checkpoint`, the console): what it says and the key that verifies it. */
export function checkpointExport(checkpoint: StoredCheckpoint): Record<string, unknown> {
  const { id, createdAt, jws, header, claims, key } = checkpoint;
  return { id, created_at: createdAt.toISOString(), jws, header, payload: claims, key };
}

/** The compact JWS of an exported checkpoint: its JSON ({@link checkpointExport}), or the bare JWS; undefined for anything else. */
export function checkpointJws(text: string): string | undefined {
  const trimmed = text.trim();
  if (/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(trimmed)) return trimmed;
  try {
    const { jws } = JSON.parse(trimmed) as { jws?: unknown };
    return typeof jws === 'string' ? jws : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Verifies checkpoints: signed by a key of ours (whatever its state), explicitly typed, well formed. Keys
 * are opened once per verifier.
 */
export class CheckpointVerifier {
  readonly #db: Kysely<DB>;
  readonly #box: SecretBox;
  readonly #keys = new Map<string, Promise<OwnSigningKey | undefined>>();

  constructor(db: Kysely<DB>, box: SecretBox) {
    this.#db = db;
    this.#box = box;
  }

  /** @throws {CheckpointError} saying why the checkpoint is refused. */
  async verify(jws: string): Promise<Checkpoint> {
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(jws);
    } catch {
      throw new CheckpointError('not a compact JWS');
    }
    if (header.typ !== CHECKPOINT_TYPE) throw new CheckpointError(`typ is ${JSON.stringify(header.typ ?? null)}, not ${CHECKPOINT_TYPE}`);
    if (typeof header.kid !== 'string' || !header.kid) throw new CheckpointError('no kid in the header');
    const kid = header.kid;
    let pending = this.#keys.get(kid);
    if (!pending) {
      pending = ownSigningKey(this.#db, this.#box, kid);
      this.#keys.set(kid, pending);
    }
    const key = await pending;
    if (!key) throw new CheckpointError(`signed by a key that is not ours (kid ${kid}: none of our signing keys, or one whose private part does not open under SECRET_KEY)`);
    let payload: Uint8Array;
    try {
      ({ payload } = await compactVerify(jws, key.publicKey, { algorithms: [key.alg] }));
    } catch {
      throw new CheckpointError(`the signature does not verify with our key ${kid}`);
    }
    let claims: unknown;
    try {
      claims = JSON.parse(new TextDecoder().decode(payload));
    } catch {
      throw new CheckpointError('the content is not JSON');
    }
    if (!validClaims(claims)) throw new CheckpointError(`the content is malformed: ${ajv.errorsText(validClaims.errors)}`);
    if (claims.chains.reduce((n, c) => n + c.count, 0) !== claims.total) throw new CheckpointError('the total is not the sum of the chains\' counts');
    return { jws, header: { alg: key.alg, kid, typ: CHECKPOINT_TYPE }, claims, key: await publicJwk(key) };
  }
}

/**
 * Whether a scheduled checkpoint is due: none stored that verifies and is younger than most of the
 * interval (each process asks on its own timer, so between them they write about one per interval), and
 * rows written since the newest. A stored checkpoint that does not verify is not taken as the newest, so
 * someone inserting one cannot stop checkpoints from being written.
 */
export async function checkpointDue(db: Kysely<DB>, box: SecretBox, intervalSeconds: number): Promise<boolean> {
  const newestRow = await db.selectFrom('audit_events').select('seq').orderBy('seq', 'desc').limit(1).executeTakeFirst();
  if (!newestRow) return false;
  const stored = await db.selectFrom('audit_checkpoints').select('jws').orderBy('id', 'desc').limit(1).executeTakeFirst();
  if (!stored) return true;
  let newest: Checkpoint;
  try {
    newest = await new CheckpointVerifier(db, box).verify(stored.jws);
  } catch (error) {
    if (error instanceof CheckpointError) return true;
    throw error;
  }
  if (Date.now() / 1000 - newest.claims.iat < intervalSeconds * 0.9) return false;
  return newest.claims.chains.every((c) => BigInt(c.seq) < BigInt(newestRow.seq));
}

/** Stored checkpoints, oldest first, a page at a time. */
export async function* storedCheckpoints(db: Kysely<DB>, pageSize = 500): AsyncGenerator<{ id: string; jws: string }> {
  let after = '0';
  for (;;) {
    const rows = await db.selectFrom('audit_checkpoints').select(['id', 'jws']).where(sql<string>`id`, '>', after).orderBy('id').limit(pageSize).execute();
    for (const row of rows) yield { id: String(row.id), jws: row.jws };
    if (rows.length < pageSize) return;
    after = String(rows.at(-1)!.id);
  }
}

async function publicJwk(key: OwnSigningKey): Promise<JWK> {
  return { ...(await exportJWK(key.publicKey)), kid: key.kid, alg: key.alg, use: 'sig' };
}

const ajv = new Ajv({ allErrors: false, strict: true });
const validClaims = ajv.compile<CheckpointClaims>({
  type: 'object',
  required: ['iss', 'iat', 'total', 'chains'],
  properties: {
    iss: { type: 'string', maxLength: 2048 },
    iat: { type: 'integer', minimum: 0 },
    total: { type: 'integer', minimum: 0 },
    chains: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['chain', 'seq', 'hash', 'count'],
        properties: {
          chain: { type: 'string', maxLength: 64 },
          seq: { type: 'string', pattern: '^[1-9][0-9]{0,18}$' },
          hash: { type: 'string', maxLength: 128 },
          count: { type: 'integer', minimum: 1 },
        },
      },
    },
  },
});
