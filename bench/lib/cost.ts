import { execFileSync } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';

import type pg from 'pg';

/** What an operation costs beside its latency: CPU of the server and of Postgres, and the SQL it sends. */
export interface Cost {
  /** CPU time of the server process per operation, µs (user + system, from /proc). */
  readonly serverUs: number;
  /** CPU time of every Postgres process on this machine per operation, µs; absent when the server has none. */
  readonly postgresUs?: number;
  /**
   * Of postgresUs, the backends serving connections (the statements themselves, their commits' WAL flushes); the
   * rest is the cluster's own work: WAL writer, checkpointer, background writer, autovacuum, and processes that
   * exited meanwhile.
   */
  readonly postgresBackendsUs?: number;
  /** SQL statements sent per operation (the server's smart_auth_db_statements_total); ours on Postgres only. */
  readonly statements?: number;
  /** Transactions committed per operation (smart_auth_db_commits_total). */
  readonly commits?: number;
  /** Bytes of write-ahead log the cluster wrote per operation: what its writes cost Postgres, counted, not timed. */
  readonly walBytes?: number;
}

export interface CostSnapshot {
  readonly serverMs: number | undefined;
  readonly postgresMs: number | undefined;
  readonly postgresBackendsMs: number | undefined;
  readonly sql: { readonly statements: number; readonly commits: number } | undefined;
  readonly walBytes: number | undefined;
}

let tickMs: number | undefined;
function msPerTick(): number {
  if (tickMs === undefined) {
    let hz = 100;
    try {
      hz = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
    } catch {
      // Linux's usual value
    }
    tickMs = 1000 / hz;
  }
  return tickMs;
}

/**
 * User + system CPU of a process so far, ms; undefined when /proc cannot tell. With `reaped`, also that of its
 * children that exited and were waited for.
 */
async function cpuMs(pid: number | string, reaped = false): Promise<number | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The fields after the command name, which may hold spaces and parentheses: utime and stime are 14th and
    // 15th, cutime and cstime 16th and 17th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const own = Number(fields[11]) + Number(fields[12]);
    return (reaped ? own + Number(fields[13]) + Number(fields[14]) : own) * msPerTick();
  } catch {
    return undefined;
  }
}

/**
 * CPU of every process named `postgres` so far (the cluster the bench runs on, when it is on this machine),
 * with that of backends that have exited: a connection a pool closed during a run took its CPU out of a sum
 * of live processes only (a negative figure once), while the postmaster, which waits for its backends,
 * keeps it as its children's time. `backends`: of it, the live processes serving a connection (their title
 * names the client: `postgres: user db 127.0.0.1(port) …`).
 */
async function postgresMs(): Promise<{ total: number; backends: number } | undefined> {
  let total = 0;
  let backends = 0;
  let found = false;
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
    if (comm.trim() !== 'postgres') continue;
    const ms = await cpuMs(pid, true);
    if (ms === undefined) continue;
    total += ms;
    found = true;
    const title = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    // A backend has no children of its own: its figure with them is its own.
    if (/^postgres: .* (\d{1,3}(\.\d{1,3}){3}|\[[0-9a-f:]+\]|\[local\])(\(\d+\))? /.test(title)) backends += ms;
  }
  return found ? { total, backends } : undefined;
}

/** The server's /metrics page; undefined without a token (bare has none) or when it does not answer. */
async function metricsText(url: string, metricsToken: string | undefined): Promise<string | undefined> {
  if (!metricsToken) return undefined;
  const res = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${metricsToken}` } }).catch(() => undefined);
  return res?.ok ? res.text() : undefined;
}

/** The server's statement and commit counters, from /metrics; undefined when it has none (PGlite, bare). */
async function sqlCounts(url: string, metricsToken: string | undefined): Promise<CostSnapshot['sql']> {
  const text = await metricsText(url, metricsToken);
  if (text === undefined) return undefined;
  const read = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  const statements = read('smart_auth_db_statements_total');
  const commits = read('smart_auth_db_commits_total');
  return Number.isFinite(statements) && Number.isFinite(commits) ? { statements, commits } : undefined;
}

/** Answers the server timed (its request histogram, every route but /metrics), and of them those over `boundSeconds`. */
export interface ServerLatency {
  readonly answers: number;
  readonly over: number;
}

/**
 * The server's own count of answers and of those slower than `boundSeconds` (a bucket boundary of
 * smart_auth_http_request_duration_seconds: 0.025 is one), from /metrics; undefined when it has none. Between
 * two readings: how many answers the server itself took longer than the bound for, from the moment it had the
 * request's headers to the moment its answer was written (Fastify's elapsedTime), without the time a request
 * waited in the load generator or the kernel.
 */
export async function serverLatency(url: string, metricsToken: string | undefined, boundSeconds: number): Promise<ServerLatency | undefined> {
  const text = await metricsText(url, metricsToken);
  if (text === undefined) return undefined;
  let answers = 0;
  let within = 0;
  let found = false;
  for (const line of text.split('\n')) {
    const m = /^smart_auth_http_request_duration_seconds_bucket\{(.*)\} (\S+)$/.exec(line);
    if (!m || /route="\/metrics"/.test(m[1]!)) continue;
    const le = /le="([^"]+)"/.exec(m[1]!)?.[1];
    if (le === '+Inf') answers += Number(m[2]);
    else if (le !== undefined && Number(le) === boundSeconds) {
      within += Number(m[2]);
      found = true;
    }
  }
  return found ? { answers, over: answers - within } : undefined;
}

/**
 * Where the cluster's write-ahead log is, in bytes from its start; undefined without a connection. The cluster's
 * own work (autovacuum, checkpoints) writes some too: over a run of thousands of operations, little.
 */
async function walPosition(admin: pg.Client | undefined): Promise<number | undefined> {
  if (!admin) return undefined;
  const { rows } = await admin.query<{ bytes: string }>(`select (pg_current_wal_lsn() - '0/0'::pg_lsn)::text as bytes`).catch(() => ({ rows: [] }));
  return rows[0] ? Number(rows[0].bytes) : undefined;
}

export async function snapshot(server: { readonly url: string; readonly pid: number | undefined }, { withPostgres, metricsToken, admin }: { readonly withPostgres: boolean; readonly metricsToken?: string | undefined; readonly admin?: pg.Client | undefined }): Promise<CostSnapshot> {
  const sql = await sqlCounts(server.url, metricsToken);
  const postgres = withPostgres ? await postgresMs() : undefined;
  return { serverMs: server.pid === undefined ? undefined : await cpuMs(server.pid), postgresMs: postgres?.total, postgresBackendsMs: postgres?.backends, sql, walBytes: withPostgres ? await walPosition(admin) : undefined };
}

/** The cost per operation between two snapshots, over `operations` answered. */
export function perOperation(before: CostSnapshot, after: CostSnapshot, operations: number): Cost | undefined {
  if (!operations || before.serverMs === undefined || after.serverMs === undefined) return undefined;
  const per = (a: number, b: number) => (b - a) / operations;
  return {
    serverUs: per(before.serverMs, after.serverMs) * 1000,
    ...(before.postgresMs !== undefined && after.postgresMs !== undefined ? { postgresUs: per(before.postgresMs, after.postgresMs) * 1000 } : {}),
    // A backend that exits between the snapshots takes its time out of the live sum (the total keeps it): never below 0.
    ...(before.postgresBackendsMs !== undefined && after.postgresBackendsMs !== undefined ? { postgresBackendsUs: Math.max(0, per(before.postgresBackendsMs, after.postgresBackendsMs) * 1000) } : {}),
    // The scrape itself sends a statement (the signing keys' ages): one in thousands of operations.
    ...(before.sql && after.sql ? { statements: per(before.sql.statements, after.sql.statements), commits: per(before.sql.commits, after.sql.commits) } : {}),
    ...(before.walBytes !== undefined && after.walBytes !== undefined ? { walBytes: per(before.walBytes, after.walBytes) } : {}),
  };
}
