import type { Kysely } from 'kysely';

import { isRowError } from '../../db/faults.js';
import type { DB } from '../../db/schema.js';
import { payloadArrays, upsertPayloadsSql, type PayloadRowWrite } from '../../db/payload-rows.js';
import { Statement } from '../../db/statements.js';

export type { PayloadRowWrite };

interface Pending {
  readonly row: PayloadRowWrite;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/** Rows per statement: far above what a process has in flight, well below Postgres's 65,535 parameters. */
const MAX_ROWS = 500;

/**
 * Group commit of token saves (issue: one round trip per token request). A save that finds no write in
 * flight goes at once, alone: no request waits for company. Saves made while a write is in flight queue
 * and go together as one multi-row upsert when it ends, so under load N requests' tokens cost one
 * statement and one commit instead of N. Each save resolves only once its row is committed (nothing is
 * answered before it is durable); a failed write fails exactly the saves whose rows it carried, and a
 * write refused for one row's content is retried row by row so that only that row's save fails.
 */
export class GroupedWrites {
  readonly #db: Kysely<DB>;
  #queue: Pending[] = [];
  #writing: Promise<void> | undefined;

  constructor(db: Kysely<DB>) {
    this.#db = db;
  }

  save(row: PayloadRowWrite): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ row, resolve, reject });
      if (!this.#writing) this.#writing = this.#drain();
    });
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length) await this.#write(this.#nextBatch());
    } finally {
      this.#writing = undefined;
    }
  }

  /**
   * The saves at the head of the queue, up to the first that names a row already in the batch: one
   * statement cannot upsert a row twice, and the later save of a row must land after the earlier one.
   */
  #nextBatch(): Pending[] {
    const keys = new Set<string>();
    let n = 0;
    for (const { row } of this.#queue) {
      const key = `${row.model}\u0000${row.id}`;
      if (keys.has(key) || n === MAX_ROWS) break;
      keys.add(key);
      n++;
    }
    return this.#queue.splice(0, n);
  }

  async #write(batch: readonly Pending[]): Promise<void> {
    try {
      await this.#upsert(batch.map((p) => p.row));
      for (const p of batch) p.resolve();
      return;
    } catch (error) {
      if (batch.length === 1 || !isRowError(error)) {
        for (const p of batch) p.reject(error);
        return;
      }
    }
    for (const p of batch) {
      try {
        await this.#upsert([p.row]);
        p.resolve();
      } catch (error) {
        p.reject(error);
      }
    }
  }

  async #upsert(rows: readonly PayloadRowWrite[]): Promise<void> {
    await UPSERT.execute(this.#db, payloadArrays(rows));
  }
}

/** Any number of rows in one statement of fixed text. */
const UPSERT = new Statement(upsertPayloadsSql(1));
