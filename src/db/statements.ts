import { createHash } from 'node:crypto';

import { CompiledQuery, createQueryId, type Compilable, type QueryExecutor, type QueryResult } from 'kysely';

import { nameStatement } from '../observability/query-observer.js';

/** A Kysely instance or transaction, of any schema. */
export interface Executes {
  getExecutor(): QueryExecutor;
}

/** Names of the fixed statements by their text, for the connection to prepare them under (src/db/pool.ts). */
const NAMES = new Map<string, string>();

/**
 * A statement of the hot path whose SQL text never varies: lists go as one array parameter (`= any($1)`,
 * `unnest($1, …)`), never as one placeholder per item. Nothing is built per request (kysely's query building
 * cost about 8% of the server's CPU on /token), and the text can be prepared once per connection under a
 * name derived from it, so that Postgres parses and plans it once instead of once per request.
 *
 * Statements run through the Kysely instance given, so its plugins (metrics, spans) see them as any query;
 * they run on PGlite unchanged (unnamed there).
 */
export class Statement<Row> {
  readonly #compiled: CompiledQuery<Row>;

  constructor(readonly text: string) {
    this.#compiled = CompiledQuery.raw(text);
    // The same name for the same text in every process: a pooler's server connection that holds the name
    // holds this very statement, whoever prepared it.
    NAMES.set(text, `sas_${createHash('sha256').update(text).digest('base64url').slice(0, 20)}`);
    nameStatement(this.#compiled.query, spanName(text));
  }

  execute(db: Executes, parameters: readonly unknown[]): Promise<QueryResult<Row>> {
    const executor = db.getExecutor();
    const queryId = createQueryId();
    // What a built query goes through before it runs: the plugins (QueryObserver) start timing it here.
    executor.transformQuery(this.#compiled.query, queryId);
    return executor.executeQuery({ ...this.#compiled, parameters, queryId });
  }

  /** The first row, or undefined. */
  async first(db: Executes, parameters: readonly unknown[]): Promise<Row | undefined> {
    return (await this.execute(db, parameters)).rows[0];
  }

  /** Rows inserted, updated or deleted. */
  async affected(db: Executes, parameters: readonly unknown[]): Promise<number> {
    return Number((await this.execute(db, parameters)).numAffectedRows ?? 0n);
  }
}

/** Every {@link FixedQuery}, to be built at once ({@link buildFixedQueries}). */
const QUERIES = new Set<{ build(db: Executes): unknown }>();

/**
 * A query built with kysely once and run as a {@link Statement} from then on: for a query too intricate to write
 * as fixed text by hand (joins, subqueries from shared fragments) that a hot path runs at every request. `slot`
 * stands for the one value that varies, wherever the built query puts it among its parameters.
 */
export class FixedQuery<Db extends Executes, R> {
  readonly #build: (db: Db, slot: object) => Compilable<R>;
  #fixed: { statement: Statement<R>; parameters: readonly unknown[]; slot: object } | undefined;

  constructor(build: (db: Db, slot: object) => Compilable<R>) {
    this.#build = build;
    QUERIES.add(this);
  }

  async first(db: Db, value: unknown): Promise<R | undefined> {
    return (await this.all(db, value))[0];
  }

  async all(db: Db, value: unknown): Promise<R[]> {
    const { statement, parameters, slot } = this.build(db);
    return (await statement.execute(db, parameters.map((p) => (p === slot ? value : p)))).rows;
  }

  /** Built once, by the first caller, with its Kysely instance (the text does not depend on which). */
  build(db: Db): { statement: Statement<R>; parameters: readonly unknown[]; slot: object } {
    if (!this.#fixed) {
      const slot = {};
      const compiled = this.#build(db, slot).compile();
      if (!compiled.parameters.includes(slot)) throw new Error('a fixed query without a slot for its value');
      this.#fixed = { statement: new Statement<R>(compiled.sql), parameters: compiled.parameters, slot };
    }
    return this.#fixed;
  }
}

/** Builds every {@link FixedQuery} of the modules loaded, so that {@link fixedStatements} lists them too. */
export function buildFixedQueries(db: Executes): void {
  for (const query of QUERIES) query.build(db);
}

/** The text of every fixed statement of the modules loaded (of a {@link FixedQuery}, once built). */
export function fixedStatements(): string[] {
  return [...NAMES.keys()];
}

/** The name a fixed statement is prepared under, or undefined for any other text. */
export function statementName(text: string): string | undefined {
  return NAMES.get(text);
}

/** `INSERT audit_events`: the main statement's verb and table, after any CTEs. */
function spanName(text: string): string {
  const main = mainStatement(text);
  const verb = /^\s*(select|insert|update|delete)\b/i.exec(main)?.[1]?.toUpperCase();
  if (!verb) return 'SQL';
  const table = (verb === 'SELECT' ? /\bfrom\s+(\w+)/i : verb === 'INSERT' ? /^\s*insert\s+into\s+(\w+)/i : verb === 'UPDATE' ? /^\s*update\s+(\w+)/i : /^\s*delete\s+from\s+(\w+)/i).exec(main)?.[1];
  return table ? `${verb} ${table}` : verb;
}

/** After `with … as (…), …`, the main statement: the first verb outside every parenthesis. */
function mainStatement(text: string): string {
  if (!/^\s*with\b/i.test(text)) return text;
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (depth === 0 && !/\w/.test(text[i - 1] ?? ' ') && /^(select|insert|update|delete)\b/i.test(text.slice(i, i + 7))) return text.slice(i);
  }
  return text;
}
