import { sql, type Kysely } from 'kysely';
import Provider, { errors, type Adapter, type AdapterPayload } from 'oidc-provider';

import type { DB } from '../../db/schema.js';
import { isStorableText } from '../../security/text.js';
import { stateOf } from '../context.js';

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
      const ctx = Provider.ctx;
      if (ctx) stateOf(ctx).auditFailure = 'client_assertion.replayed';
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
