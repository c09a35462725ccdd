import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { chown, mkdtemp, realpath, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

import pg from 'pg';

import { freePort } from './app.js';

const run = promisify(execFile);

/** Where initdb and pg_ctl are: POSTGRES_BIN_DIR, Debian's newest /usr/lib/postgresql/N/bin, or undefined. */
export function postgresBinDir(): string | undefined {
  const given = process.env.POSTGRES_BIN_DIR;
  if (given) return existsSync(join(given, 'initdb')) ? given : undefined;
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
  return versions.map((v) => join(root, v, 'bin')).find((dir) => existsSync(join(dir, 'initdb')));
}

/**
 * A Postgres cluster of the test's own, in a temporary folder on a free port, that the test may stop, crash
 * and start again without touching the shared server. initdb refuses root, so as root it runs as `postgres`.
 */
export class OwnPostgres {
  readonly #bin: string;
  readonly #dir: string;
  readonly #data: string;
  readonly port: number;
  readonly #asUser: readonly string[];

  private constructor(bin: string, dir: string, port: number, asUser: readonly string[]) {
    this.#bin = bin;
    this.#dir = dir;
    this.#data = join(dir, 'data');
    this.port = port;
    this.#asUser = asUser;
  }

  static async create(bin: string): Promise<OwnPostgres> {
    const cluster = await OwnPostgres.#allocate(bin);
    await cluster.#exec('initdb', ['-D', cluster.#data, '-U', 'postgres', '-A', 'trust', '--no-sync', '--no-instructions', '-E', 'UTF8']);
    return cluster;
  }

  /** A folder of its own (owned by `postgres` when we are root) and a free port; no data yet. */
  static async #allocate(bin: string): Promise<OwnPostgres> {
    const dir = await realpath(await mkdtemp(join(tmpdir(), 'smart-auth-pg-')));
    const asUser = process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--'] : [];
    if (asUser.length) {
      const [uid, gid] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])]);
      await chown(dir, Number(uid.stdout), Number(gid.stdout));
    }
    return new OwnPostgres(bin, dir, await freePort(), asUser);
  }

  /**
   * A streaming replica of this (running) cluster, made with pg_basebackup -R as an operator would: not
   * started. initdb's trust rules let replication connections in from loopback.
   */
  async replica(): Promise<OwnPostgres> {
    const standby = await OwnPostgres.#allocate(this.#bin);
    await standby.#exec('pg_basebackup', ['-h', '127.0.0.1', '-p', String(this.port), '-U', 'postgres', '-D', standby.#data, '-R', '-X', 'stream', '--no-sync', '-c', 'fast']);
    return standby;
  }

  /** Promotes a standby to primary and resolves once it accepts writes (pg_ctl promote -w). */
  async promote(): Promise<void> {
    await this.#exec('pg_ctl', ['-D', this.#data, '-w', '-t', '30', 'promote']);
  }

  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  /** Starts the cluster and resolves once it accepts connections (pg_ctl -w). */
  async start(): Promise<void> {
    const options = `-p ${this.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${this.#dir} -c max_connections=40 -c shared_buffers=16MB -c log_timezone=UTC`;
    await this.#exec('pg_ctl', ['-D', this.#data, '-l', join(this.#dir, 'log'), '-o', options, '-w', '-t', '30', 'start']).catch((error: unknown) => {
      const log = readFileSync(join(this.#dir, 'log'), 'utf8').split('\n').slice(-10).join('\n');
      throw new Error(`Postgres did not start:\n${log}`, { cause: error });
    });
  }

  /** The server's log file (pg_ctl -l): what it logged since it was first started. */
  get logFile(): string {
    return join(this.#dir, 'log');
  }

  /** When Postgres last said it accepts connections, from its log (wall-clock milliseconds). */
  readyAt(): number {
    const lines = readFileSync(join(this.#dir, 'log'), 'utf8').split('\n').filter((l) => l.includes('database system is ready to accept connections'));
    // log_line_prefix '%m [%p] ': "2026-12-01 15:09:51.922 UTC [22166] LOG:  …"
    const stamp = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}\.\d{3}) UTC/.exec(lines.at(-1) ?? '');
    if (!stamp) throw new Error('Postgres has not logged that it is ready');
    return Date.parse(`${stamp[1]}T${stamp[2]}Z`);
  }

  /** Whether a new connection gets an answer to a query now. */
  async accepts(): Promise<boolean> {
    const client = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: 1000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('select 1');
      return true;
    } catch {
      return false;
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /** Stops the cluster at once (a shutdown without checkpoint); nothing when it is not running. */
  async stop(): Promise<void> {
    await this.#exec('pg_ctl', ['-D', this.#data, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
  }

  /**
   * A crash: SIGKILL to the postmaster and every backend, as an OOM killer or a lost machine would do.
   * Committed transactions survive (they are in the WAL); connections die without a goodbye.
   */
  async kill9(): Promise<void> {
    const lockFile = join(this.#data, 'postmaster.pid');
    const postmaster = Number(readFileSync(lockFile, 'utf8').split('\n')[0]);
    // Every process of the cluster works in its data folder; a backend forked while the postmaster died
    // has no parent left to find it by.
    const deadline = Date.now() + 10_000;
    for (let alive = processesIn(this.#data); alive.length; alive = processesIn(this.#data)) {
      if (Date.now() > deadline) throw new Error(`Postgres processes ${alive.join(', ')} survived SIGKILL`);
      for (const pid of alive) signal(pid, 'SIGKILL');
      await sleep(10);
    }
    // A dead postmaster not yet reaped by init keeps its pid, which the next start would take for a
    // running server; the lock files of a dead one are what a machine's crash leaves, and go.
    if (processState(postmaster) === 'Z') {
      await rm(lockFile, { force: true });
      await rm(join(this.#dir, `.s.PGSQL.${this.port}.lock`), { force: true });
    }
  }

  /** Freezes every process of the cluster (SIGSTOP): connections stay open and nothing answers, as in a network partition. */
  freeze(): void {
    for (const pid of processesIn(this.#data)) signal(pid, 'SIGSTOP');
  }

  thaw(): void {
    for (const pid of processesIn(this.#data)) signal(pid, 'SIGCONT');
  }

  /** Stops the cluster (if running) and removes its folder. */
  async destroy(): Promise<void> {
    this.thaw();
    await this.stop();
    if (processesIn(this.#data).length) await this.kill9();
    await rm(this.#dir, { recursive: true, force: true });
  }

  async #exec(tool: string, args: readonly string[]): Promise<void> {
    const [command, ...rest] = [...this.#asUser, join(this.#bin, tool), ...args];
    await run(command!, rest, { cwd: this.#dir, timeout: 60_000 });
  }
}

/** The state letter of a process (R, S, Z …), or undefined once it is gone. */
function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

/** Live (not zombie) processes whose working directory is `dir`, from /proc (Linux). */
function processesIn(dir: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let cwd: string;
    try {
      cwd = readlinkSync(`/proc/${entry}/cwd`);
    } catch {
      continue; // exited meanwhile, or a zombie
    }
    const pid = Number(entry);
    if (cwd === dir && processState(pid) !== 'Z') found.push(pid);
  }
  return found;
}

/** A process listed a moment ago may have exited since (a backend ending its connection): that is no error. */
function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}
