import { sql, type Kysely } from 'kysely';
import Provider, { errors, type Adapter, type AdapterPayload } from 'oidc-provider';

import type { DB } from '../../db/schema.js';
import type { SecretBox } from '../../security/secret-box.js';
import { describeInputProblem, inputProblem, isStorableText } from '../../security/text.js';
import { stateOf } from '../context.js';

/**
 * Models whose rows carry a grantId and are removed by `revokeByGrantId` when a grant is revoked
 * (oidc-provider lib/helpers/revoke.js).
 */
const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
]);

/**
 * Models whose id is a bearer value: whoever holds it is let in (a token, a code, a session cookie's value,
 * a registration token). Their rows are keyed by a keyed hash of the id (SecretBox.bearerId), and the id is
 * kept out of the stored payload, so that a copy of the database yields no usable value. Grants and
 * interactions are identifiers that grant nothing by themselves and stay as they are.
 */
export const BEARER_MODELS: ReadonlySet<string> = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'ClientCredentials',
  'RegistrationAccessToken',
  'InitialAccessToken',
  'Session',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
  'PushedAuthorizationRequest',
]);

/** What a single-use model is called in the error that refuses its second use (oidc-provider's wording). */
const REUSE_LABELS: Readonly<Record<string, string>> = {
  AuthorizationCode: 'authorization code already consumed',
  RefreshToken: 'refresh token already used',
  DeviceCode: 'device code already consumed',
  BackchannelAuthenticationRequest: 'backchannel authentication request already consumed',
  PreAuthorizedCode: 'pre-authorized code already consumed',
};

/** Every model oidc-provider 9 may persist; `Client` is served from the `clients` table instead. */
export const PAYLOAD_MODELS = [
  'Session',
  'Interaction',
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'ClientCredentials',
  'Grant',
  'ReplayDetection',
  'PushedAuthorizationRequest',
  'RegistrationAccessToken',
  'InitialAccessToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
] as const;

/**
 * One JSONB table for every model, keyed by (model, id). Expired rows are invisible to `find` at once and
 * removed later by {@link purgeExpired}. Ids of {@link BEARER_MODELS} are stored as keyed hashes.
 */
export class PayloadAdapter implements Adapter {
  readonly #db: Kysely<DB>;
  readonly #box: SecretBox;
  readonly #model: string;
  readonly #grantable: boolean;
  readonly #hashed: boolean;

  constructor(db: Kysely<DB>, box: SecretBox, model: string) {
    this.#db = db;
    this.#box = box;
    this.#model = model;
    this.#grantable = GRANTABLE.has(model);
    this.#hashed = BEARER_MODELS.has(model);
  }

  /** The id a row is written under. */
  #storedId(id: string): string {
    return this.#hashed ? this.#box.bearerId(id) : id;
  }

  /** The ids a row may be found under: under a previous SECRET_KEY too. */
  #storedIds(id: string): string[] {
    return this.#hashed ? this.#box.bearerIds(id) : [id];
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    // Request parameters end up in payloads (an interaction's `state`, say); what Postgres cannot hold is the
    // request's error, not ours. Queries are refused earlier (input-guard.ts); this covers bodies oidc-provider read.
    const unfit = inputProblem(payload, '');
    if (unfit) throw new errors.InvalidRequest(describeInputProblem(unfit));
    const stored = this.#hashed ? withoutJti(payload) : payload;
    const row = {
      payload: JSON.stringify(stored),
      grant_id: this.#grantable ? (payload.grantId ?? null) : null,
      uid: payload.uid ?? null,
      user_code: payload.userCode ?? null,
      expires_at: typeof expiresIn === 'number' ? new Date(Date.now() + expiresIn * 1000) : null,
    };
    const storedId = this.#storedId(id);
    // Saved again after SECRET_KEY changed (a session, say): the copy under the old key goes.
    if (this.#hashed && this.#box.hasPreviousKeys) {
      await this.#db.deleteFrom('oidc_payloads').where('model', '=', this.#model).where('id', 'in', this.#storedIds(id).slice(1)).execute();
    }
    await this.#db
      .insertInto('oidc_payloads')
      .values({ model: this.#model, id: storedId, ...row })
      .onConflict((oc) => oc.columns(['model', 'id']).doUpdateSet(row))
      .execute();
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    const payload = await this.#findBy('id', this.#storedIds(id));
    if (payload && this.#hashed) payload.jti = id;
    return payload;
  }

  /** A session found by uid comes without its id (only a hash of it is stored): read it, never save it. */
  findByUid(uid: string): Promise<AdapterPayload | undefined> {
    return this.#findBy('uid', [uid]);
  }

  findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    return this.#findBy('user_code', [userCode]);
  }

  /**
   * Marks a code or refresh token used, atomically: of any number of requests presenting it at once, exactly
   * one flips `consumed_at` from null and goes on. Any other is a reuse, treated as oidc-provider treats a
   * sequential one (RFC 9700 §4.14, §2.2.2): the whole grant is revoked (every token issued under it, and the
   * grant itself, so that a token the winner is issuing right now is dead too), and the request gets
   * `invalid_grant`. Irreversible: after this, an error in the request loses the code.
   */
  async consume(id: string): Promise<void> {
    const ids = this.#storedIds(id);
    const flipped = await this.#db
      .updateTable('oidc_payloads')
      .set({ consumed_at: sql<Date>`now()` })
      .where('model', '=', this.#model)
      .where('id', 'in', ids)
      .where('consumed_at', 'is', null)
      .executeTakeFirst();
    if (Number(flipped.numUpdatedRows) > 0 || !(this.#model in REUSE_LABELS)) return;
    const ctx = Provider.ctx;
    if (ctx) stateOf(ctx).auditFailure = this.#model === 'RefreshToken' ? 'refresh_token.reused' : 'code.reused';
    const row = await this.#db.selectFrom('oidc_payloads').select('grant_id').where('model', '=', this.#model).where('id', 'in', ids).executeTakeFirst();
    if (row?.grant_id) await revokeGrant(this.#db, row.grant_id);
    throw new errors.InvalidGrant(REUSE_LABELS[this.#model]);
  }

  async destroy(id: string): Promise<void> {
    await this.#db.deleteFrom('oidc_payloads').where('model', '=', this.#model).where('id', 'in', this.#storedIds(id)).execute();
  }

  /** One indexed statement: every row of this model issued under the grant. */
  async revokeByGrantId(grantId: string): Promise<void> {
    await this.#db.deleteFrom('oidc_payloads').where('grant_id', '=', grantId).where('model', '=', this.#model).execute();
  }

  async #findBy(column: 'id' | 'uid' | 'user_code', values: readonly string[]): Promise<AdapterPayload | undefined> {
    // A value no row can hold (a NUL from a cookie or a URL) finds nothing, rather than failing in Postgres.
    if (!values.every(isStorableText)) return undefined;
    const row = await this.#db
      .selectFrom('oidc_payloads')
      .select(['payload', 'consumed_at'])
      .where('model', '=', this.#model)
      .where(column, 'in', values)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', sql<Date>`now()`)]))
      .executeTakeFirst();
    if (!row) return undefined;
    const payload = row.payload as AdapterPayload;
    if (row.consumed_at) payload.consumed = Math.floor(row.consumed_at.getTime() / 1000);
    return payload;
  }
}

/**
 * Renews a grant until `expiresAt` (each refresh does: oidc-provider never saves a grant again, so its first
 * expiry would cap the chain). Only updates a grant that still exists.
 */
export async function extendGrant(db: Kysely<DB>, grantId: string, expiresAt: Date): Promise<void> {
  await db
    .updateTable('oidc_payloads')
    .set({ expires_at: expiresAt, payload: sql`jsonb_set(payload, '{exp}', to_jsonb(${Math.floor(expiresAt.getTime() / 1000)}::bigint))` })
    .where('model', '=', 'Grant')
    .where('id', '=', grantId)
    .execute();
}

/** Expires the grant's access tokens now: for the sandbox launcher's simulated expired access token. */
export async function expireAccessTokens(db: Kysely<DB>, grantId: string): Promise<void> {
  await db
    .updateTable('oidc_payloads')
    .set({ expires_at: sql<Date>`now() - interval '1 second'`, payload: sql`jsonb_set(payload, '{exp}', to_jsonb(extract(epoch from now())::bigint - 1))` })
    .where('model', '=', 'AccessToken')
    .where('grant_id', '=', grantId)
    .execute();
}

function withoutJti(payload: AdapterPayload): AdapterPayload {
  const rest = { ...payload };
  delete rest.jti;
  return rest;
}

/**
 * Revokes a grant found reused: its tokens, codes and refresh tokens, the grant, and its launch context, in
 * one transaction; then tells oidc-provider's listeners, as its own revocation does (`grant.revoked`).
 */
async function revokeGrant(db: Kysely<DB>, grantId: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx.deleteFrom('oidc_payloads').where('grant_id', '=', grantId).execute();
    await trx.deleteFrom('oidc_payloads').where('model', '=', 'Grant').where('id', '=', grantId).execute();
    await trx.deleteFrom('grant_contexts').where('grant_id', '=', grantId).execute();
  });
  const ctx = Provider.ctx;
  ctx?.oidc.provider.emit('grant.revoked', ctx, grantId);
}

/**
 * Hashes the ids of bearer rows written before ids were hashed (the mark `bearer_ids_in_clear`), in batches,
 * and drops their clear `jti`. Safe in several processes at once: a row converted by one is not found by the
 * other. Returns the number of rows converted.
 */
export async function hashClearBearerIds(db: Kysely<DB>, box: SecretBox, batchSize = 1000): Promise<number> {
  let total = 0;
  for (;;) {
    // A hashed id is `<keyId>.<mac>`; oidc-provider's ids are nanoids, which have no period.
    const rows = await db.selectFrom('oidc_payloads').select(['model', 'id']).where('model', 'in', [...BEARER_MODELS]).where(sql<boolean>`position('.' in id) = 0`).limit(batchSize).execute();
    for (const row of rows) {
      await db
        .updateTable('oidc_payloads')
        .set({ id: box.bearerId(row.id), payload: sql`payload - 'jti'` })
        .where('model', '=', row.model)
        .where('id', '=', row.id)
        .execute();
    }
    total += rows.length;
    if (rows.length < batchSize) return total;
  }
}

/**
 * Removes rows that expired more than `graceSeconds` ago, in batches so that no statement holds locks for
 * long on a large table. oidc-provider never deletes expired rows itself.
 * @returns the number of rows removed.
 */
export async function purgeExpired(db: Kysely<DB>, { graceSeconds = 300, batchSize = 5000 } = {}): Promise<number> {
  let total = 0;
  for (;;) {
    const result = await db
      .deleteFrom('oidc_payloads')
      .where(
        sql<string>`ctid`,
        'in',
        db
          .selectFrom('oidc_payloads')
          .select(sql<string>`ctid`.as('ctid'))
          .where('expires_at', '<', sql<Date>`now() - make_interval(secs => ${graceSeconds})`)
          .limit(batchSize),
      )
      .executeTakeFirst();
    const removed = Number(result.numDeletedRows);
    total += removed;
    if (removed < batchSize) return total;
  }
}
