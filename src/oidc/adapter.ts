import { decodeProtectedHeader } from 'jose';
import { sql, type Kysely } from 'kysely';
import Provider, { errors, type Adapter, type AdapterPayload } from 'oidc-provider';

import type { ClientCache } from '../clients/client-cache.js';
import type { JwksCache } from '../clients/jwks-cache.js';
import type { DB } from '../db/schema.js';
import type { SecretBox } from '../security/secret-box.js';
import { REGISTERED_JWKS_URI, toProviderMetadata, toRfc7591Metadata, widenedProperties } from '../smart/client-rules.js';
import { describeInputProblem, inputProblem, isStorableText } from '../security/text.js';
import { stateOf } from './context.js';

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

export interface AdapterDeps {
  readonly db: Kysely<DB>;
  readonly box: SecretBox;
  /** Key sets of clients registered by JWKS URL; without it such clients have no keys. */
  readonly jwks?: JwksCache | undefined;
  /** The status of a client created by dynamic registration. */
  readonly registrationStatus?: 'active' | 'pending' | undefined;
  /** Active clients' metadata, shared with whatever else changes clients in this process. */
  readonly clients?: ClientCache<AdapterPayload> | undefined;
}

/** oidc-provider's routes of dynamic registration management (RFC 7592), where pending clients exist too. */
const MANAGEMENT_ROUTES = new Set(['client', 'client_update', 'client_delete', 'registration']);

/** The `adapter` option of oidc-provider: one instance per model name. */
export function createAdapterFactory(deps: AdapterDeps): (model: string) => Adapter {
  return (model) => {
    if (model === 'Client') return new ClientAdapter(deps);
    if (model === 'ReplayDetection') return new ReplayDetectionAdapter(deps.db);
    return new PayloadAdapter(deps.db, deps.box, model);
  };
}

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
 * Clients live in our own `clients` table (written by the admin API and dynamic registration) so that they
 * carry a status and their secrets are sealed at rest. Only active clients exist for oidc-provider.
 */
export class ClientAdapter implements Adapter {
  readonly #db: Kysely<DB>;
  readonly #box: SecretBox;

  readonly #jwks: JwksCache | undefined;
  readonly #registrationStatus: 'active' | 'pending';
  readonly #cache: ClientCache<AdapterPayload> | undefined;

  constructor({ db, box, jwks, registrationStatus, clients }: AdapterDeps) {
    this.#db = db;
    this.#box = box;
    this.#jwks = jwks;
    this.#registrationStatus = registrationStatus ?? 'active';
    this.#cache = clients;
  }

  async find(clientId: string): Promise<AdapterPayload | undefined> {
    if (!isStorableText(clientId)) return undefined; // no client is registered under such an id

    // A pending client can read and change its own registration, and nothing else until approved.
    const management = MANAGEMENT_ROUTES.has(Provider.ctx?.oidc.route ?? '');
    const cached = management ? undefined : this.#cache?.get(clientId);
    const readAt = this.#cache?.generation ?? 0;
    const metadata = cached ? structuredClone(cached) : await this.#read(clientId, management);
    if (!metadata) return undefined;
    if (!cached && !management) this.#cache?.set(clientId, structuredClone(metadata), readAt);
    const jwksUri = (metadata as Record<string, unknown>)[REGISTERED_JWKS_URI];
    if (typeof jwksUri === 'string') await this.#inlineJwks(metadata, jwksUri);
    return metadata;
  }

  async #read(clientId: string, management: boolean): Promise<AdapterPayload | undefined> {
    const row = await this.#db
      .selectFrom('clients')
      .select(['metadata', 'client_secret'])
      .where('client_id', '=', clientId)
      .where('status', 'in', management ? ['active', 'pending'] : ['active'])
      .executeTakeFirst();
    if (!row) return undefined;
    const metadata = { ...toProviderMetadata(row.metadata), client_id: clientId } as AdapterPayload;
    if (row.client_secret) metadata.client_secret = this.#box.open(row.client_secret, 'client-secret', clientId);
    return metadata;
  }

  /**
   * oidc-provider caches a JWKS URL's keys for at least 60 s whatever the response says; SMART wants no
   * longer than Cache-Control allows, a fresh fetch when a client rotates to a new kid, and no SSRF. So the
   * keys are fetched by our JwksCache and handed to oidc-provider inline, and only when this request
   * carries a client assertion to verify. A fetch failure leaves the key set empty and says why.
   */
  async #inlineJwks(metadata: AdapterPayload, uri: string): Promise<void> {
    const ctx = Provider.ctx;
    const assertion = ctx?.oidc.params?.client_assertion;
    if (!ctx || typeof assertion !== 'string' || !this.#jwks) return;
    let kid: string | undefined;
    try {
      kid = decodeProtectedHeader(assertion).kid;
    } catch {
      kid = undefined; // malformed: oidc-provider reports it
    }
    const result = await this.#jwks.get(uri, kid);
    if ('error' in result) stateOf(ctx).clientAuthProblem = `the client's JWKS could not be used: ${result.error}`;
    else metadata.jwks = { keys: [...result.keys] };
  }

  /**
   * Dynamic registration and its updates write here (RFC 7591, RFC 7592); the secret is sealed and kept out of
   * the metadata column. When an operator must approve registrations, an update that widens what an approved
   * client may do (see widenedProperties) sends it back for approval; one that narrows keeps it active.
   */
  async upsert(clientId: string, payload: AdapterPayload): Promise<void> {
    const { client_secret: secret, ...served } = payload as Record<string, unknown>;
    const metadata = toRfc7591Metadata(served);
    const ctx = Provider.ctx;
    const current = ctx?.oidc.route === 'client_update' ? ctx.oidc.client : undefined;
    const widened = current ? widenedProperties(toRfc7591Metadata(current.metadata()), metadata) : [];
    const reapprove = widened.length > 0 && this.#registrationStatus === 'pending';
    const row = {
      metadata: JSON.stringify({ ...metadata, client_id: clientId }),
      client_secret: typeof secret === 'string' ? this.#box.seal(secret, 'client-secret', clientId) : null,
      updated_at: sql<Date>`now()`,
    };
    const saved = await this.#db
      .insertInto('clients')
      .values({ client_id: clientId, ...row, status: this.#registrationStatus })
      .onConflict((oc) => oc.column('client_id').doUpdateSet(reapprove ? { ...row, status: 'pending' } : row))
      .returning('status')
      .executeTakeFirstOrThrow();
    this.#cache?.invalidate(clientId);
    if (ctx && current) stateOf(ctx).clientUpdate = { widened, status: saved.status };
  }

  async destroy(clientId: string): Promise<void> {
    await this.#db.deleteFrom('clients').where('client_id', '=', clientId).execute();
    this.#cache?.invalidate(clientId);
  }

  findByUid(): Promise<undefined> {
    return Promise.resolve(undefined);
  }

  findByUserCode(): Promise<undefined> {
    return Promise.resolve(undefined);
  }

  consume(): Promise<void> {
    return Promise.resolve();
  }

  revokeByGrantId(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * Client assertion `jti`s, recorded so that each assertion is used once across every server process.
 * oidc-provider's ReplayDetection.unique() looks the id up and then saves it: two processes receiving the
 * same assertion at the same moment would both find nothing. Here the lookup always misses and the save
 * is a single insert-if-absent; a conflict is the replay, reported as oidc-provider reports one.
 */
export class ReplayDetectionAdapter implements Adapter {
  readonly #db: Kysely<DB>;

  constructor(db: Kysely<DB>) {
    this.#db = db;
  }

  find(): Promise<undefined> {
    return Promise.resolve(undefined);
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    if (!isStorableText(id)) throw new errors.InvalidClientAuth('client assertion rejected: its jti holds a NUL character or an unpaired surrogate');
    const result = await this.#db
      .insertInto('oidc_payloads')
      .values({
        model: 'ReplayDetection',
        id,
        payload: JSON.stringify(payload),
        expires_at: new Date(Date.now() + (expiresIn ?? 600) * 1000),
      })
      .onConflict((oc) => oc.columns(['model', 'id']).doUpdateSet({ expires_at: sql<Date>`excluded.expires_at` }).where('oidc_payloads.expires_at', '<', sql<Date>`now()`))
      .executeTakeFirst();
    if (Number(result.numInsertedOrUpdatedRows ?? 0n) === 0) {
      throw new errors.InvalidClientAuth('client assertion rejected: its jti was already used; every assertion needs a new jti');
    }
  }

  findByUid(): Promise<undefined> {
    return Promise.resolve(undefined);
  }

  findByUserCode(): Promise<undefined> {
    return Promise.resolve(undefined);
  }

  consume(): Promise<void> {
    return Promise.resolve();
  }

  async destroy(id: string): Promise<void> {
    await this.#db.deleteFrom('oidc_payloads').where('model', '=', 'ReplayDetection').where('id', '=', id).execute();
  }

  revokeByGrantId(): Promise<void> {
    return Promise.resolve();
  }
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
