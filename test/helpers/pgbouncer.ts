import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { freePort } from './app.js';

const PGBOUNCER = '/usr/sbin/pgbouncer';

/**
 * Why a PgBouncer cannot be started here, or undefined when it can. CI installs Debian's and sets
 * REQUIRE_PGBOUNCER=true, so that there a missing one fails the tests instead of skipping them.
 */
export function pgbouncerMissing(): string | undefined {
  if (!process.env.TEST_DATABASE_URL) return 'needs TEST_DATABASE_URL (Postgres)';
  if (existsSync(PGBOUNCER) || process.env.REQUIRE_PGBOUNCER === 'true') return undefined;
  return `needs ${PGBOUNCER} (apt-get install pgbouncer)`;
}

export interface Pgbouncer {
  /** The URL of `database` through this PgBouncer. */
  url(database: string): string;
  stop(): Promise<void>;
}

/**
 * A PgBouncer of the test's own, in transaction mode, in front of TEST_DATABASE_URL's server: every
 * transaction may run on another server connection, as behind the poolers production runs behind.
 */
export async function startPgbouncer({ poolSize = 4 } = {}): Promise<Pgbouncer> {
  const upstream = new URL(process.env.TEST_DATABASE_URL!);
  const dir = await mkdtemp(join(tmpdir(), 'smart-auth-pgbouncer-'));
  const port = await freePort();
  await writeFile(
    join(dir, 'pgbouncer.ini'),
    [
      '[databases]',
      `* = host=${upstream.hostname} port=${upstream.port || 5432}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = trust',
      `auth_file = ${join(dir, 'userlist.txt')}`,
      'pool_mode = transaction',
      `default_pool_size = ${poolSize}`,
      'server_reset_query =',
      'ignore_startup_parameters = extra_float_digits',
      '',
    ].join('\n'),
  );
  await writeFile(join(dir, 'userlist.txt'), `"${decodeURIComponent(upstream.username || 'postgres')}" ""\n`);
  // PgBouncer refuses to run as root; the postgres user must then be able to read its files.
  const asRoot = process.getuid?.() === 0;
  await chmod(dir, 0o755);
  const child: ChildProcess = spawn(PGBOUNCER, [...(asRoot ? ['-u', 'postgres'] : []), join(dir, 'pgbouncer.ini')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let output = '';
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const deadline = Date.now() + 10_000;
  while (!(await accepts(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
      throw new Error(`PgBouncer did not start: ${output}`);
    }
    await sleep(50);
  }
  return {
    url(database) {
      const url = new URL(upstream.href);
      url.port = String(port);
      url.pathname = `/${database}`;
      return url.href;
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGINT'); // PgBouncer's immediate shutdown
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
