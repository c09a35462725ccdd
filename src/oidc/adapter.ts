import { decodeProtectedHeader } from 'jose';
import { sql, type Kysely } from 'kysely';
import Provider, { errors, type Adapter, type AdapterPayload } from 'oidc-provider';

import type { ClientCache } from '../clients/client-cache.js';
import type { JwksCache } from '../clients/jwks-cache.js';
import type { DB } from '../db/schema.js';
import type { SecretBox } from '../security/secret-box.js';
import { REGISTERED_JWKS_URI } from './client-auth.js';
import { ALLOWED_SCOPE_PROPERTY } from './resource-server.js';

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
    return new PayloadAdapter(deps.db, model);
  };
}

/**
 * One JSONB table for every model, keyed by (model, id). Expired rows are invisible to `find` at once and
 * removed later by {@link purgeExpired}.
 */
export class PayloadAdapter implements Adapter {
  readonly #db: Kysely<DB>;
  readonly #model: string;
  readonly #grantable: boolean;

  constructor(db: Kysely<DB>, model: string) {
    this.#db = db;
    this.#model = model;
    this.#grantable = GRANTABLE.has(model);
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    const row = {
      payload: JSON.stringify(payload),
      grant_id: this.#grantable ? (payload.grantId ?? null) : null,
      uid: payload.uid ?? null,
      user_code: payload.userCode ?? null,
      expires_at: typeof expiresIn === 'number' ? new Date(Date.now() + expiresIn * 1000) : null,
    };
    await this.#db
      .insertInto('oidc_payloads')
      .values({ model: this.#model, id, ...row })
      .onConflict((oc) => oc.columns(['model', 'id']).doUpdateSet(row))
      .execute();
  }

  find(id: string): Promise<AdapterPayload | undefined> {
    return this.#findBy('id', id);
  }

  findByUid(uid: string): Promise<AdapterPayload | undefined> {
    return this.#findBy('uid', uid);
  }

  findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    return this.#findBy('user_code', userCode);
  }

  async consume(id: string): Promise<void> {
    await this.#db
      .updateTable('oidc_payloads')
      .set({ consumed_at: sql<Date>`now()` })
      .where('model', '=', this.#model)
      .where('id', '=', id)
      .execute();
  }

  async destroy(id: string): Promise<void> {
    await this.#db.deleteFrom('oidc_payloads').where('model', '=', this.#model).where('id', '=', id).execute();
  }

  /** One indexed statement: every row of this model issued under the grant. */
  async revokeByGrantId(grantId: string): Promise<void> {
    await this.#db.deleteFrom('oidc_payloads').where('grant_id', '=', grantId).where('model', '=', this.#model).execute();
  }

  async #findBy(column: 'id' | 'uid' | 'user_code', value: string): Promise<AdapterPayload | undefined> {
    const row = await this.#db
      .selectFrom('oidc_payloads')
      .select(['payload', 'consumed_at'])
      .where('model', '=', this.#model)
      .where(column, '=', value)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', sql<Date>`now()`)]))
      .executeTakeFirst();
    if (!row) return undefined;
    const payload = row.payload as AdapterPayload;
    if (row.consumed_at) payload.consumed = Math.floor(row.consumed_at.getTime() / 1000);
    return payload;
  }
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
    // A pending client can read and change its own registration, and nothing else until approved.
    const management = MANAGEMENT_ROUTES.has(Provider.ctx?.oidc.route ?? '');
    const cached = management ? undefined : this.#cache?.get(clientId);
    const readAt = this.#cache?.generation ?? 0;
    const metadata = cached ? structuredClone(cached) : await this.#read(clientId, management);
    if (!metadata) return undefined;
    if (!cached && !management) this.#cache?.set(clientId, structuredClone(metadata), readAt);
    if (typeof metadata.jwks_uri === 'string') await this.#inlineJwks(metadata, metadata.jwks_uri);
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
    // RFC 7591 `scope` lists every scope the client may be granted, SMART ones included; oidc-provider would
    // refuse those as client metadata, so the scope engine reads them from a property of their own.
    const { scope, ...rest } = row.metadata;
    const metadata = { ...rest, client_id: clientId } as AdapterPayload;
    if (typeof scope === 'string') (metadata as Record<string, unknown>)[ALLOWED_SCOPE_PROPERTY] = scope;
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
    const record = metadata as Record<string, unknown>;
    delete record.jwks_uri;
    record[REGISTERED_JWKS_URI] = uri;
    const ctx = Provider.ctx;
    const assertion = ctx?.oidc.params?.client_assertion;
    if (!ctx || typeof assertion !== 'string' || !this.#jwks) {
      record.jwks = { keys: [] };
      return;
    }
    let kid: string | undefined;
    try {
      kid = decodeProtectedHeader(assertion).kid;
    } catch {
      kid = undefined; // malformed: oidc-provider reports it
    }
    const result = await this.#jwks.get(uri, kid);
    if ('error' in result) {
      (ctx.state as { clientAuthProblem?: string }).clientAuthProblem = `the client's JWKS could not be used: ${result.error}`;
      record.jwks = { keys: [] };
    } else {
      record.jwks = { keys: result.keys };
    }
  }

  /** Dynamic registration writes here; the secret is sealed and kept out of the metadata column. */
  async upsert(clientId: string, payload: AdapterPayload): Promise<void> {
    const { client_secret: secret, [ALLOWED_SCOPE_PROPERTY]: allowed, [REGISTERED_JWKS_URI]: _registered, ...metadata } = payload as Record<string, unknown>;
    // Back to RFC 7591 names for our table: `scope` is every scope the client may be granted.
    if (typeof allowed === 'string') metadata.scope = allowed;
    // A client registered by JWKS URL keeps the URL, not the keys we last fetched from it.
    if (typeof _registered === 'string') {
      metadata.jwks_uri = _registered;
      delete metadata.jwks;
    }
    const row = {
      metadata: JSON.stringify({ ...metadata, client_id: clientId }),
      client_secret: typeof secret === 'string' ? this.#box.seal(secret, 'client-secret', clientId) : null,
      updated_at: sql<Date>`now()`,
    };
    await this.#db
      .insertInto('clients')
      .values({ client_id: clientId, ...row, status: this.#registrationStatus })
      .onConflict((oc) => oc.column('client_id').doUpdateSet(row))
      .execute();
    this.#cache?.invalidate(clientId);
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
