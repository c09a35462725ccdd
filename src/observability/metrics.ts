import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/**
 * What the server counts, in Prometheus' text format (`/metrics`). One registry per server (no global
 * state): tests build several apps in one process.
 *
 * Every label has a bounded set of values: routes are Fastify's route patterns (never the URL), methods a
 * fixed list, event types and outcomes our own vocabularies, and client ids (bounded by registrations, but
 * anyone may register) capped at {@link MAX_CLIENT_LABELS} distinct values, past which they count as `other`.
 *
 * Without METRICS_PORT or METRICS_TOKEN nothing is counted: {@link DISABLED} does nothing.
 */
export interface Metrics {
  readonly enabled: boolean;
  /** One answered HTTP request: its route pattern (`(unmatched)` for a 404), method, status and duration. */
  httpRequest(route: string, method: string, status: number, seconds: number): void;
  /** An audit event, as the audit trail records it: tokens, introspections, sign-ins and consents are counted from these. */
  securityEvent(event: SecurityEvent): void;
  /** A database query and how long it took; `failed` when the database refused or failed it. */
  databaseQuery(seconds: number, failed: boolean): void;
  /** One batch of audit events written (or failed). */
  auditWrite(seconds: number, events: number, failed: boolean): void;
  /** Gauges read at scrape time. */
  observe(sources: ScrapeSources): void;
  /** The text exposition. */
  render(): Promise<string>;
  readonly contentType: string;
}

/** The parts of an audit event metrics read (src/audit/audit.ts AuditEvent). */
export interface SecurityEvent {
  readonly type: string;
  readonly outcome?: 'success' | 'failure' | undefined;
  readonly clientId?: string | undefined;
  readonly details?: Readonly<Record<string, unknown>> | undefined;
}

export interface ScrapeSources {
  /** The Postgres pool: connections open, idle, and requests waiting for one (undefined on PGlite). */
  readonly pool?: (() => { total: number; idle: number; waiting: number } | undefined) | undefined;
  /** Statements and commits the primary's connections have run since the start (undefined on PGlite). */
  readonly statements?: (() => { readonly statements: number; readonly commits: number; readonly unprepared: number } | undefined) | undefined;
  /** The read replica's state and measured lag (undefined without DATABASE_REPLICA_URL). */
  readonly replica?: (() => { state: string; lagMs: number | undefined } | undefined) | undefined;
  /** Audit events recorded but not yet written. */
  readonly auditQueue?: (() => number) | undefined;
  /** Signing keys: algorithm, state, and since when they are in that state. */
  readonly signingKeys?: (() => Promise<readonly { alg: string; state: string; since: Date }[]>) | undefined;
}

/** Distinct client ids given their own label values; more would let registrations grow the series without bound. */
export const MAX_CLIENT_LABELS = 200;
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
const LATENCY_BUCKETS = [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const GRANT_TYPES = new Set(['authorization_code', 'refresh_token', 'client_credentials']);
/** Why a sign-in failed (src/users/sign-in.ts). */
const LOGIN_FAILURES = new Set(['invalid', 'throttled_source', 'throttled_device', 'throttled_account']);
/** OAuth error codes (RFC 6749 §5.2, RFC 7662, RFC 7009) and ours; anything else is `other`. */
const ERROR_CODES = new Set([
  'invalid_request', 'invalid_client', 'invalid_grant', 'unauthorized_client', 'unsupported_grant_type', 'invalid_scope',
  'invalid_target', 'temporarily_unavailable', 'server_error', 'unsupported_token_type', 'too_many_requests', 'access_denied',
]);

export const DISABLED: Metrics = {
  enabled: false,
  httpRequest: () => undefined,
  securityEvent: () => undefined,
  databaseQuery: () => undefined,
  auditWrite: () => undefined,
  observe: () => undefined,
  render: async () => '',
  contentType: 'text/plain',
};

export function createMetrics(): Metrics {
  const registry = new Registry();
  const prefix = 'smart_auth_';
  collectDefaultMetrics({ register: registry });
  const clients = new Set<string>();
  const clientLabel = (id: string | undefined): string => {
    if (!id) return 'none';
    if (clients.has(id)) return id;
    if (clients.size >= MAX_CLIENT_LABELS) return 'other';
    clients.add(id);
    return id;
  };
  const bounded = (value: unknown, allowed: ReadonlySet<string>): string => (typeof value === 'string' && allowed.has(value) ? value : 'other');

  const http = new Histogram({ name: `${prefix}http_request_duration_seconds`, help: 'HTTP requests by route pattern, method and status, with their duration', labelNames: ['route', 'method', 'status'], buckets: LATENCY_BUCKETS, registers: [registry] });
  const issued = new Counter({ name: `${prefix}tokens_issued_total`, help: 'Access tokens issued, by grant type and client', labelNames: ['grant_type', 'client_id'], registers: [registry] });
  const tokenRequests = new Counter({ name: `${prefix}token_requests_total`, help: 'Token endpoint answers, by grant type and outcome (success or the OAuth error code)', labelNames: ['grant_type', 'outcome'], registers: [registry] });
  const introspections = new Counter({ name: `${prefix}introspections_total`, help: 'Introspection answers: active, inactive, or the OAuth error code', labelNames: ['outcome'], registers: [registry] });
  const logins = new Counter({ name: `${prefix}logins_total`, help: 'Sign-in attempts, by outcome and reason of failure', labelNames: ['outcome', 'reason'], registers: [registry] });
  const consents = new Counter({ name: `${prefix}consents_total`, help: 'Consent decisions', labelNames: ['outcome'], registers: [registry] });
  const events = new Counter({ name: `${prefix}audit_events_total`, help: 'Audit events recorded, by type and outcome', labelNames: ['type', 'outcome'], registers: [registry] });
  const queries = new Histogram({ name: `${prefix}db_query_duration_seconds`, help: 'Database queries and their duration', labelNames: ['outcome'], buckets: LATENCY_BUCKETS, registers: [registry] });
  const auditWrites = new Histogram({ name: `${prefix}audit_write_duration_seconds`, help: 'Audit batches written (one INSERT each) and their duration', labelNames: ['outcome'], buckets: LATENCY_BUCKETS, registers: [registry] });
  const auditRows = new Counter({ name: `${prefix}audit_events_written_total`, help: 'Audit events written to the database', registers: [registry] });

  let sources: ScrapeSources = {};
  new Gauge({
    name: `${prefix}db_pool_connections`,
    help: 'Postgres pool connections: open, idle, and requests waiting for one',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const pool = sources.pool?.();
      if (!pool) return;
      this.set({ state: 'open' }, pool.total);
      this.set({ state: 'idle' }, pool.idle);
      this.set({ state: 'waiting' }, pool.waiting);
    },
  });
  // Counters kept by the pool (src/db/pool.ts) as plain numbers, read at scrape time.
  const pooled = (key: 'statements' | 'commits' | 'unprepared', name: string, help: string) => {
    let counted = 0;
    new Counter({
      name: `${prefix}${name}`,
      help,
      registers: [registry],
      collect() {
        const now = sources.statements?.()?.[key];
        if (now === undefined) return;
        if (now > counted) this.inc(now - counted);
        counted = now;
      },
    });
  };
  pooled('statements', 'db_statements_total', 'SQL statements sent to the primary (begin and commit not counted)');
  pooled('commits', 'db_commits_total', 'Transactions committed on the primary: each statement outside a transaction, and each explicit transaction');
  pooled('unprepared', 'db_statements_unprepared_total', 'SQL statements sent to the primary without a prepared name, so parsed and planned each time');
  new Gauge({
    name: `${prefix}db_replica_lag_seconds`,
    help: 'How far the read replica was behind the primary at its last measurement (every second)',
    registers: [registry],
    collect() {
      const lagMs = sources.replica?.()?.lagMs;
      if (lagMs !== undefined) this.set(lagMs / 1000);
    },
  });
  new Gauge({
    name: `${prefix}db_replica_in_use`,
    help: 'Whether the lag-tolerant lookups read from the read replica now (1), or every read goes to the primary (0)',
    registers: [registry],
    collect() {
      const status = sources.replica?.();
      if (status) this.set(status.state === 'in_use' ? 1 : 0);
    },
  });
  new Gauge({
    name: `${prefix}audit_queue_depth`,
    help: 'Audit events recorded and not yet written',
    registers: [registry],
    collect() {
      this.set(sources.auditQueue?.() ?? 0);
    },
  });
  new Gauge({
    name: `${prefix}signing_key_age_seconds`,
    help: 'Seconds each signing key has been in its state (active: signing; next: published before signing), by algorithm',
    labelNames: ['alg', 'state'],
    registers: [registry],
    async collect() {
      const keys = (await sources.signingKeys?.().catch(() => undefined)) ?? [];
      this.reset();
      const now = Date.now();
      for (const { alg, state, since } of keys) this.set({ alg, state }, Math.round((now - since.getTime()) / 1000));
    },
  });

  return {
    enabled: true,
    httpRequest(route, method, status, seconds) {
      http.observe({ route, method: METHODS.has(method) ? method : 'OTHER', status: String(status) }, seconds);
    },
    securityEvent(event) {
      const outcome = event.outcome ?? 'success';
      events.inc({ type: event.type, outcome });
      const details = event.details ?? {};
      const grantType = bounded(details.grant_type, GRANT_TYPES);
      const error = bounded(details.error, ERROR_CODES);
      switch (event.type) {
        case 'token.issued':
        case 'token.refreshed':
          issued.inc({ grant_type: grantType, client_id: clientLabel(event.clientId) });
          tokenRequests.inc({ grant_type: grantType, outcome: 'success' });
          return;
        case 'token.introspected':
          introspections.inc({ outcome: details.active === true ? 'active' : 'inactive' });
          return;
        case 'login.success':
        case 'login.failure':
          logins.inc({ outcome, reason: outcome === 'success' ? 'none' : bounded(details.reason, LOGIN_FAILURES) });
          return;
        case 'consent.granted':
        case 'consent.denied':
          consents.inc({ outcome: event.type === 'consent.granted' ? 'granted' : 'denied' });
          return;
        default:
          // Failures at the token and introspection endpoints (src/oidc/audit-hooks.ts) name their route.
          if (outcome !== 'failure') return;
          if (details.route === 'token') tokenRequests.inc({ grant_type: grantType, outcome: error });
          if (details.route === 'introspection') introspections.inc({ outcome: error });
      }
    },
    databaseQuery(seconds, failed) {
      queries.observe({ outcome: failed ? 'error' : 'ok' }, seconds);
    },
    auditWrite(seconds, count, failed) {
      auditWrites.observe({ outcome: failed ? 'error' : 'ok' }, seconds);
      if (!failed) auditRows.inc(count);
    },
    observe(given) {
      sources = given;
    },
    render: () => registry.metrics(),
    contentType: registry.contentType,
  };
}
