import { sql, type Kysely } from 'kysely';
import Provider, { errors, type Adapter, type AdapterPayload } from 'oidc-provider';

import type { DB } from '../../db/schema.js';
import type { SecretBox } from '../../security/secret-box.js';
import { describeInputProblem, inputProblem, isStorableText } from '../../security/text.js';
import { GRANT_CONTEXT_COLUMNS, grantContextOf, type GrantContext, type GrantContextRow } from '../../launch/context.js';
import { userOf, type User } from '../../users/users.js';
import { stateOf } from '../context.js';
import { GroupedWrites } from './grouped-writes.js';

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

  readonly #shared: SharedTokenReads | undefined;
  readonly #writes: GroupedWrites;

  /**
   * @param shared where lookups of {@link SHARED_READ_MODELS} go, to be shared with others of the same tick.
   * @param writes where saves go, to be written with those of other requests in flight.
   */
  constructor(db: Kysely<DB>, box: SecretBox, model: string, shared?: SharedTokenReads, writes = new GroupedWrites(db)) {
    this.#db = db;
    this.#writes = writes;
    this.#box = box;
    this.#model = model;
    this.#grantable = GRANTABLE.has(model);
    this.#hashed = BEARER_MODELS.has(model);
    this.#shared = SHARED_READ_MODELS.has(model) ? shared : undefined;
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
    await this.#writes.save({ model: this.#model, id: storedId, ...row });
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    const ids = this.#storedIds(id);
    let payload: AdapterPayload | undefined;
    if (this.#model === 'Grant') {
      // Brought along with the token this request found under it (SharedTokenReads): no second statement.
      const state = Provider.ctx && stateOf(Provider.ctx);
      const prefetched = state?.prefetchedGrant;
      if (prefetched?.id === id) {
        delete state!.prefetchedGrant;
        return prefetched.payload as AdapterPayload;
      }
    }
    if (this.#shared && ids.every(isStorableText)) {
      const ctx = Provider.ctx;
      const found = await this.#shared.find(this.#model, ids);
      payload = toPayload(found);
      if (ctx && found?.grant) {
        const state = stateOf(ctx);
        state.prefetchedGrant = { id: found.grant.id, payload: found.grant.payload };
        state.grantContext = { grantId: found.grant.id, context: found.grant.context ?? null };
      }
      if (ctx && found?.user) stateOf(ctx).prefetchedUser = found.user;
    } else {
      payload = await this.#findBy('id', ids);
    }
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
    return toPayload(row);
  }
}

interface PayloadRow {
  readonly payload: unknown;
  readonly consumed_at: Date | null;
}

function toPayload(row: PayloadRow | undefined): AdapterPayload | undefined {
  if (!row) return undefined;
  const payload = row.payload as AdapterPayload;
  if (row.consumed_at) payload.consumed = Math.floor(row.consumed_at.getTime() / 1000);
  return payload;
}

/**
 * Token models whose lookups are shared: introspection and revocation try access token, client credentials
 * and refresh token for one value at once; the token endpoint finds a code or a refresh token and then its
 * grant and the grant's launch context.
 */
export const SHARED_READ_MODELS: ReadonlySet<string> = new Set(['AccessToken', 'ClientCredentials', 'RefreshToken', 'AuthorizationCode']);

interface TokenRow extends PayloadRow {
  /** The live grant the token was issued under, and the grant's live launch context, read with it. */
  readonly grant?: { readonly id: string; readonly payload: unknown; readonly context: GrantContext | undefined };
  /** The user the token was issued to, read with it: undefined when disabled. */
  readonly user?: { readonly id: string; readonly user: User | undefined };
}

interface Wanted {
  readonly model: string;
  readonly ids: readonly string[];
  readonly resolve: (row: TokenRow | undefined) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Lookups of tokens by id asked for in the same tick go to the database as one statement: introspection and
 * revocation look a value up as an access token, client credentials token and refresh token at once
 * (oidc-provider's findToken), and concurrent requests' lookups join them. Each lookup gets the row of its
 * own model and ids, as its own statement would have found it (expired rows are invisible), with the grant
 * the token was issued under and that grant's launch context, which the request reads next.
 */
export class SharedTokenReads {
  readonly #db: Kysely<DB>;
  #pending: Wanted[] = [];

  constructor(db: Kysely<DB>) {
    this.#db = db;
  }

  find(model: string, ids: readonly string[]): Promise<TokenRow | undefined> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ model, ids, resolve, reject });
      if (this.#pending.length === 1) process.nextTick(() => void this.#flush());
    });
  }

  async #flush(): Promise<void> {
    const batch = this.#pending;
    this.#pending = [];
    try {
      const rows = await this.#db
        .selectFrom('oidc_payloads as t')
        .leftJoin('oidc_payloads as g', (join) =>
          join
            .on('g.model', '=', 'Grant')
            .onRef('g.id', '=', 't.grant_id')
            .on((eb) => eb.or([eb('g.expires_at', 'is', null), eb('g.expires_at', '>', sql<Date>`now()`)])),
        )
        .leftJoin('grant_contexts as gc', (join) => join.onRef('gc.grant_id', '=', 'g.id').on('gc.expires_at', '>', sql<Date>`now()`))
        .leftJoin('users as u', (join) => join.onRef('u.id', '=', sql<string>`t.payload->>'accountId'`))
        .select(['t.model', 't.id', 't.payload', 't.consumed_at', 'g.id as grant_row', 'g.payload as grant_payload', 'gc.grant_id as context_row'])
        .select(GRANT_CONTEXT_COLUMNS.map((column) => `gc.${column}` as const))
        .select(['u.id as user_row', 'u.username', 'u.name', 'u.roles', 'u.disabled', 'u.fhir_user as user_fhir_user'])
        .where('t.model', 'in', [...new Set(batch.map((w) => w.model))])
        .where('t.id', 'in', [...new Set(batch.flatMap((w) => w.ids))])
        .where((eb) => eb.or([eb('t.expires_at', 'is', null), eb('t.expires_at', '>', sql<Date>`now()`)]))
        .execute();
      const given = new Set<object>();
      for (const wanted of batch) {
        const row = rows.find((r) => r.model === wanted.model && wanted.ids.includes(r.id));
        if (!row) {
          wanted.resolve(undefined);
          continue;
        }
        // The same token asked for twice (two requests at once): each gets a payload of its own to change.
        const fresh = given.has(row) ? structuredClone(row) : row;
        given.add(row);
        wanted.resolve({
          payload: fresh.payload,
          consumed_at: fresh.consumed_at,
          ...(fresh.grant_row ? { grant: { id: fresh.grant_row, payload: fresh.grant_payload, context: fresh.context_row ? grantContextOf(fresh as GrantContextRow) : undefined } } : {}),
          ...(fresh.user_row
            ? { user: { id: fresh.user_row, user: userOf({ id: fresh.user_row, username: fresh.username!, name: fresh.name!, roles: fresh.roles!, disabled: fresh.disabled!, fhir_user: fresh.user_fhir_user! }) } }
            : {}),
        });
      }
    } catch (error) {
      for (const wanted of batch) wanted.reject(error);
    }
  }
}

/**
 * Renews a grant and its launch context until `expiresAt`, in one statement (each refresh does: oidc-provider
 * never saves a grant again, so its first expiry would cap the chain). An update, never a save: a grant
 * revoked meanwhile (a concurrent reuse of the refresh token) stays gone.
 */
export async function renewGrant(db: Kysely<DB>, grantId: string, expiresAt: Date): Promise<void> {
  await db
    .with('renewed', (w) =>
      w
        .updateTable('oidc_payloads')
        .set({ expires_at: expiresAt, payload: sql`jsonb_set(payload, '{exp}', to_jsonb(${Math.floor(expiresAt.getTime() / 1000)}::bigint))` })
        .where('model', '=', 'Grant')
        .where('id', '=', grantId)
        .returning('id'),
    )
    .updateTable('grant_contexts')
    .set({ last_used_at: sql<Date>`now()`, expires_at: expiresAt })
    .where('grant_id', '=', grantId)
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
