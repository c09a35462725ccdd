import type { Kysely } from 'kysely';
import Provider, { errors, type Adapter, type AdapterPayload } from 'oidc-provider';

import type { DB } from '../../db/schema.js';
import { Batched } from '../../db/batched.js';
import { Statement } from '../../db/statements.js';
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
  /** Assertions of concurrent requests recorded together (src/db/batched.ts); each learns whether it was first. */
  readonly #record = new Batched<{ readonly id: string; readonly payload: string; readonly expiresAt: Date }, boolean>(async (batch) => {
    // One statement cannot insert a row twice: a jti twice in the batch goes once, and its later uses are replays.
    const first = new Map<string, number>();
    batch.forEach((entry, i) => {
      if (!first.has(entry.id)) first.set(entry.id, i);
    });
    const sent = [...first.values()].map((i) => batch[i]!);
    const { rows } = await RECORD.execute(this.#db, [sent.map((e) => e.id), sent.map((e) => e.payload), sent.map((e) => e.expiresAt)]);
    const recorded = new Set(rows.map((r) => r.id));
    return batch.map((entry, i) => first.get(entry.id) === i && recorded.has(entry.id));
  });

  constructor(db: Kysely<DB>) {
    this.#db = db;
  }

  find(): Promise<undefined> {
    return Promise.resolve(undefined);
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    if (!isStorableText(id)) throw new errors.InvalidClientAuth('client assertion rejected: its jti holds a NUL character or an unpaired surrogate');
    const recorded = await this.#record.call({ id, payload: JSON.stringify(payload), expiresAt: new Date(Date.now() + (expiresIn ?? 600) * 1000) });
    if (!recorded) {
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

/** Inserts each jti, or takes over the row of one that expired; a live one is a replay (not returned). */
const RECORD = new Statement<{ id: string }>(
  `insert into oidc_payloads (model, id, payload, expires_at) select 'ReplayDetection', id, payload, expires_at from unnest($1::text[], $2::jsonb[], $3::timestamptz[]) as r(id, payload, expires_at)` +
    ` on conflict (model, id) do update set expires_at = excluded.expires_at where oidc_payloads.expires_at < now() returning id`,
);
