/** A table a statement writes: kysely's `insert into "t"`, `update "t"`, `delete from "t"`, and raw SQL alike. */
const WRITTEN_TABLE = /\b(?:insert\s+into|update|delete\s+from|merge\s+into|truncate(?:\s+table)?)\s+(?:only\s+)?"?([A-Za-z_][A-Za-z0-9_]*)"?/gi;

/**
 * When this process last committed a write to each table (`performance.now()`), so that a read which must
 * see this process's own write (an operator's change to a client, then a request for that client) goes to
 * the primary until the replica has replayed past that moment (src/db/replica.ts). Kept on the connection,
 * where the commit is seen: a statement outside a transaction is committed when it returns, one inside a
 * transaction at its `commit`, and a rolled-back transaction wrote nothing.
 */
export class WriteClock {
  readonly #committed = new Map<string, number>();

  /** The last commit that wrote any of `tables`, or -Infinity when this process has written none of them. */
  lastWrite(tables: readonly string[]): number {
    let last = -Infinity;
    for (const table of tables) last = Math.max(last, this.#committed.get(table) ?? -Infinity);
    return last;
  }

  /** What one checked-out connection runs, statement by statement, until it is released. */
  session(): WriteSession {
    return new WriteSession((tables) => {
      const now = performance.now();
      for (const table of tables) this.#committed.set(table, now);
    });
  }
}

export class WriteSession {
  readonly #commit: (tables: Iterable<string>) => void;
  readonly #pending = new Set<string>();
  #inTransaction = false;

  constructor(commit: (tables: Iterable<string>) => void) {
    this.#commit = commit;
  }

  /** A statement that succeeded on this connection. */
  executed(text: string): void {
    const head = text.trimStart().slice(0, 32).toLowerCase();
    // Reads are by far the most frequent: nothing to look for.
    if (head.startsWith('select')) return;
    if (head.startsWith('begin') || head.startsWith('start transaction')) {
      this.#inTransaction = true;
      return;
    }
    if (head.startsWith('commit') || /^end\b/.test(head)) return this.#end(true);
    // `rollback to savepoint` undoes part of a transaction that may still commit what came before it.
    if (head.startsWith('rollback') && !/^rollback\s+to\b/.test(head)) return this.#end(false);
    const tables = [...text.matchAll(WRITTEN_TABLE)].map((m) => m[1]!.toLowerCase());
    if (!tables.length) return;
    if (this.#inTransaction) for (const table of tables) this.#pending.add(table);
    else this.#commit(tables);
  }

  /** Back to the pool: kysely ends every transaction before, so anything still pending was not committed. */
  released(): void {
    this.#end(false);
  }

  #end(committed: boolean): void {
    if (committed && this.#pending.size) this.#commit(this.#pending);
    this.#pending.clear();
    this.#inTransaction = false;
  }
}
