import type { Kysely } from 'kysely';

import { Batched } from '../../db/batched.js';
import { isRowError } from '../../db/faults.js';
import { payloadArrays, upsertPayloadsSql, type PayloadRowWrite } from '../../db/payload-rows.js';
import type { DB } from '../../db/schema.js';
import { Statement } from '../../db/statements.js';

export type { PayloadRowWrite };

/**
 * Group commit of saves (src/db/batched.ts): saves made in one tick, or while a write is in flight, go
 * together as one multi-row upsert, so under load N requests' rows cost one statement and one commit instead
 * of N. Each save resolves only once its row is committed (nothing is answered before it is durable); of two
 * saves of one row in a batch the later is written; a failed write fails exactly the saves whose rows it
 * carried, and a write refused for one row's content is retried row by row so that only that row's save fails.
 */
export class GroupedWrites {
  readonly #batch: Batched<PayloadRowWrite, undefined>;

  constructor(db: Kysely<DB>) {
    this.#batch = new Batched(
      async (rows) => {
        await UPSERT.execute(db, payloadArrays(rows));
        return rows.map(() => undefined);
      },
      { alone: isRowError },
    );
  }

  save(row: PayloadRowWrite): Promise<void> {
    return this.#batch.call(row);
  }
}

/** Any number of rows in one statement of fixed text. */
const UPSERT = new Statement(upsertPayloadsSql(1));
