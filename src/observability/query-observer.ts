import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from 'kysely';

import type { Metrics } from './metrics.js';
import { SpanKind, startSpan, tracingEnabled } from './tracing.js';
import type { Span } from '@opentelemetry/api';

/** SQL statement kinds by kysely's node kinds, for span names (`SELECT signing_keys`). */
const OPERATIONS: Partial<Record<RootOperationNode['kind'], string>> = {
  SelectQueryNode: 'SELECT',
  InsertQueryNode: 'INSERT',
  UpdateQueryNode: 'UPDATE',
  DeleteQueryNode: 'DELETE',
  MergeQueryNode: 'MERGE',
  RawNode: 'SQL',
};

interface Started {
  readonly at: number;
  readonly span: Span | undefined;
}

/**
 * A kysely plugin that times every query for the metrics and gives it a span under the request's. kysely
 * calls transformQuery as it compiles a query it is about to run and transformResult once it has the rows;
 * a query that fails reaches no transformResult, so it is neither timed nor ended (its span is dropped).
 */
export class QueryObserver implements KyselyPlugin {
  readonly #metrics: Metrics;
  readonly #tracing = tracingEnabled();
  readonly #started = new WeakMap<object, Started>();

  constructor(metrics: Metrics) {
    this.#metrics = metrics;
  }

  /** Whether there is anything to observe: a plugin that does nothing would still cost two calls a query. */
  get useful(): boolean {
    return this.#metrics.enabled || this.#tracing;
  }

  transformQuery({ queryId, node }: PluginTransformQueryArgs): RootOperationNode {
    const raw = this.#tracing ? rawName(node) : undefined;
    const operation = raw?.split(' ')[0] ?? OPERATIONS[node.kind] ?? 'SQL';
    const span = this.#tracing ? startSpan(raw ?? `${operation}${tableOf(node)}`, SpanKind.CLIENT, { 'db.system.name': 'postgresql', 'db.operation.name': operation }) : undefined;
    this.#started.set(queryId, { at: performance.now(), span });
    return node;
  }

  async transformResult({ queryId, result }: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    const started = this.#started.get(queryId);
    if (started) {
      this.#metrics.databaseQuery((performance.now() - started.at) / 1000, false);
      started.span?.end();
    }
    return result;
  }
}

/** Span names of fixed statements (src/db/statements.ts), whose node is raw SQL: worked out once per statement. */
const RAW_NAMES = new WeakMap<object, string>();

/** `INSERT audit_events` for raw SQL, as kysely's nodes give for built queries; the main statement after any CTEs. */
function rawName(node: RootOperationNode): string | undefined {
  if (node.kind !== 'RawNode') return undefined;
  let name = RAW_NAMES.get(node);
  if (name === undefined) {
    const text = node.sqlFragments.join('?');
    const main = mainStatement(text);
    const verb = /^\s*(select|insert|update|delete)\b/i.exec(main)?.[1]?.toUpperCase();
    const table = (verb === 'SELECT' ? /\bfrom\s+(\w+)/i : verb === 'INSERT' ? /^\s*insert\s+into\s+(\w+)/i : verb === 'UPDATE' ? /^\s*update\s+(\w+)/i : /^\s*delete\s+from\s+(\w+)/i).exec(main)?.[1];
    name = verb ? `${verb}${table ? ` ${table}` : ''}` : 'SQL';
    RAW_NAMES.set(node, name);
  }
  return name;
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

function tableOf(node: RootOperationNode): string {
  const table = (n: unknown): string | undefined => {
    const named = n as { table?: { identifier?: { name?: string } } } | undefined;
    return named?.table?.identifier?.name;
  };
  const name =
    node.kind === 'SelectQueryNode' || node.kind === 'DeleteQueryNode'
      ? table(node.from?.froms[0])
      : node.kind === 'InsertQueryNode' || node.kind === 'MergeQueryNode'
        ? table(node.into)
        : node.kind === 'UpdateQueryNode'
          ? table(node.table)
          : undefined;
  return name ? ` ${name}` : '';
}
