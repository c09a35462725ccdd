import type { Kysely } from 'kysely';

import { Batched } from '../../db/batched.js';
import { isRowError } from '../../db/faults.js';
import { payloadArrays, upsertPayloadsSql, type PayloadRowWrite } from '../../db/payload-rows.js';
import type { DB } from '../../db/schema.js';
import { Statement } from '../../db/statements.js';

export type { PayloadRowWrite };

/** A row to save, or rows to remove (a bearer row's ids under the current and any previous SECRET_KEY). */
export type PayloadWrite = { readonly save: PayloadRowWrite } | { readonly destroy: { readonly model: string; readonly ids: readonly string[] } };

/**
 * Group commit of saves and removals (src/db/batched.ts): those made in one tick, or while a write is in
 * flight, go together as one statement, so under load N requests' rows cost one statement and one commit
 * instead of N, and a request that saves one row and removes another at once (a session under a new id)
 * costs one. Each write resolves only once it is committed (nothing is answered before it is durable); of
 * two writes of one row in a batch the later one counts; a failed write fails exactly the writes it carried,
 * and a write refused for one row's content is retried write by write so that only that one fails.
 */
export class GroupedWrites {
  readonly #batch: Batched<PayloadWrite, undefined>;

  constructor(db: Kysely<DB>) {
    this.#batch = new Batched(
      async (writes) => {
        await WRITE.execute(db, writeArrays(writes));
        return writes.map(() => undefined);
      },
      { alone: isRowError },
    );
  }

  save(row: PayloadRowWrite): Promise<void> {
    return this.#batch.call({ save: row });
  }

  destroy(model: string, ids: readonly string[]): Promise<void> {
    return this.#batch.call({ destroy: { model, ids } });
  }

  /** A request's deferred writes, together: in one statement (shared with any other writes of the batch). */
  apply(writes: readonly PayloadWrite[]): Promise<unknown> {
    return Promise.all(writes.map((write) => this.#batch.call(write)));
  }
}

/**
 * The parameters of {@link WRITE}: the rows saved (the upsert's seven arrays) and the rows removed (model,
 * id). A row both saved and removed in the batch is only what its last write made it: one statement cannot
 * touch a row twice.
 */
function writeArrays(writes: readonly PayloadWrite[]): unknown[][] {
  const last = new Map<string, { readonly model: string; readonly id: string; readonly save?: PayloadRowWrite }>();
  const put = (model: string, id: string, save?: PayloadRowWrite) => {
    const key = `${model}\u0000${id}`;
    last.delete(key);
    last.set(key, { model, id, ...(save ? { save } : {}) });
  };
  for (const write of writes) {
    if ('save' in write) put(write.save.model, write.save.id, write.save);
    else for (const id of write.destroy.ids) put(write.destroy.model, id);
  }
  const rows = [...last.values()];
  const removed = rows.filter((r) => !r.save);
  return [...payloadArrays(rows.flatMap((r) => (r.save ? [r.save] : []))), removed.map((r) => r.model), removed.map((r) => r.id)];
}

/** Any number of rows saved and removed in one statement of fixed text. */
const WRITE = new Statement(
  `with removed as (delete from oidc_payloads p using unnest($8::text[], $9::text[]) as r(model, id) where p.model = r.model and p.id = r.id) ` + upsertPayloadsSql(1),
);
