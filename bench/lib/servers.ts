import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';

import { PACKAGE_ROOT } from '../../src/paths.js';

/** A server process under measurement. */
export interface ServerProcess {
  readonly name: string;
  readonly url: string;
  readonly child: ChildProcess;
  stop(): Promise<void>;
  /** Resident set size now, in MiB (from /proc). */
  rssMiB(): Promise<number>;
  /** From spawning the process to its first ready answer, and its resident size then. */
  readonly startup: { readonly ms: number; readonly rssMiB: number };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function waitFor(url: string, child: ChildProcess, output: () => string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`server exited (${child.exitCode}):\n${output()}`);
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} not ready after ${timeoutMs} ms:\n${output()}`);
}

async function track(name: string, url: string, child: ChildProcess, spawnedAt: number): Promise<ServerProcess> {
  const ms = Math.round(performance.now() - spawnedAt);
  const rssMiB = async () => {
    const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
  };
  return {
    name,
    url,
    child,
    startup: { ms, rssMiB: await rssMiB() },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const done = await Promise.race([exited.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 15_000))]);
      if (!done) child.kill('SIGKILL');
    },
    rssMiB,
  };
}

/** The Node flags of `npm start` (the checkout's package.json), so that the server is measured as it is run. */
export async function startFlags(checkout = PACKAGE_ROOT): Promise<string[]> {
  const pkg = JSON.parse(await readFile(join(checkout, 'package.json'), 'utf8')) as { scripts: { start: string } };
  return pkg.scripts.start.split(/\s+/).filter((word) => word.startsWith('--'));
}

/** Our server, built (dist/), as `npm start` runs it, on the given environment. */
export async function startOurs(name: string, envOf: Record<string, string> | ((url: string) => Record<string, string>)): Promise<ServerProcess> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env = typeof envOf === 'function' ? envOf(url) : envOf;
  const flags = process.env.BENCH_NODE_FLAGS?.split(' ').filter(Boolean) ?? (await startFlags());
  const spawnedAt = performance.now();
  const child = spawn(process.execPath, [...flags, join(PACKAGE_ROOT, 'dist/src/main.js'), 'serve'], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PORT: String(port), HOST: '127.0.0.1', ISSUER: url, FHIR_BASE_URLS: `${url}/fhir`, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', process.env.BENCH_SERVER_STDOUT ? 'inherit' : 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  await waitFor(`${url}/readyz`, child, () => stderr);
  return track(name, url, child, spawnedAt);
}

/** Bare oidc-provider (bench/bare-server.ts) with the given clients. */
export async function startBare(clients: Record<string, unknown>[], challenge: string, databaseUrl?: string, options: { fastify?: boolean } = {}): Promise<ServerProcess> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const spawnedAt = performance.now();
  const child = spawn(process.execPath, [...(process.env.BENCH_BARE_NODE_FLAGS?.split(' ').filter(Boolean) ?? []), '--import', 'tsx', join(PACKAGE_ROOT, 'bench/bare-server.ts')], {
    cwd: PACKAGE_ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', BARE_CONFIG: JSON.stringify({ port, clients, ...(databaseUrl ? { databaseUrl } : {}), ...(options.fastify ? { fastify: true } : {}) }), BARE_CHALLENGE: challenge },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  await waitFor(`${url}/.well-known/openid-configuration`, child, () => stderr);
  return track(`bare oidc-provider${databaseUrl ? ' on Postgres' : ''}${options.fastify ? ' in Fastify' : ''}`, url, child, spawnedAt);
}

/** The gateway benchmark's upstream (bench/fhir-upstream.ts): the embedded FHIR server in a process of its own, on /fhir. */
export async function startUpstream(): Promise<ServerProcess> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const spawnedAt = performance.now();
  const child = spawn(process.execPath, ['--import', 'tsx', join(PACKAGE_ROOT, 'bench/fhir-upstream.ts')], {
    cwd: PACKAGE_ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', BENCH_UPSTREAM_PORT: String(port) },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  await waitFor(`${url}/fhir/metadata`, child, () => stderr);
  return track('embedded FHIR server (upstream)', url, child, spawnedAt);
}
