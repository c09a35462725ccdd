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
    const raw = this.#tracing ? STATEMENT_NAMES.get(node) : undefined;
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

/** Span names of statements whose node is raw SQL, given by whoever wrote the SQL (src/db/statements.ts). */
const STATEMENT_NAMES = new WeakMap<object, string>();

/** Names a raw-SQL node for traces (`INSERT audit_events`), as kysely's built nodes name themselves. */
export function nameStatement(node: object, name: string): void {
  STATEMENT_NAMES.set(node, name);
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
