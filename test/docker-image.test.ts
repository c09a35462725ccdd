import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, posix } from 'node:path';
import { after, before, describe, it } from 'node:test';

import pg from 'pg';

import { PACKAGE_ROOT } from '../src/paths.js';
import { freePort } from './helpers/app.js';

/**
 * There is no Docker engine on these machines, so this builds the production tree by following the
 * Dockerfile itself: each stage's COPY instructions (honouring .dockerignore), the build stage's RUN
 * instructions (the runtime stage's only change ownership), the ENV, then the CMD and the HEALTHCHECK
 * command against a throw-away database. A Dockerfile that copies too little (the .npmrc the lock file
 * needs, a folder the server reads) fails here as it would fail `docker build`.
 *
 * npm installs from the local cache (prefer-offline): CI's own `npm ci` has just filled it.
 */

interface Instruction {
  readonly op: string;
  readonly args: string;
}

interface Stage {
  readonly name: string;
  readonly workdir: string;
  readonly instructions: Instruction[];
}

function parseDockerfile(text: string): Stage[] {
  const lines = text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const stages: Stage[] = [];
  for (const line of lines) {
    const [, op = '', args = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    const upper = op.toUpperCase();
    if (upper === 'FROM') {
      const name = /\bAS\s+(\S+)/i.exec(args)?.[1] ?? String(stages.length);
      stages.push({ name, workdir: '/', instructions: [] });
      continue;
    }
    const stage = stages.at(-1);
    assert.ok(stage, `${op} before FROM`);
    if (upper === 'WORKDIR') (stage as { workdir: string }).workdir = args;
    else stage.instructions.push({ op: upper, args });
  }
  return stages;
}

/** The exec form of CMD (or HEALTHCHECK … CMD): the image's commands must be JSON arrays. */
function execForm(args: string): string[] {
  const json = args.slice(args.indexOf('['));
  const argv = JSON.parse(json) as unknown;
  assert.ok(Array.isArray(argv) && argv.every((a) => typeof a === 'string'), `exec form expected: ${args}`);
  return argv;
}

function parseEnv(args: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [, name, value] of args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)/g)) env[name!] = value!.replace(/^"|"$/g, '');
  return env;
}

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function run(command: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, killSignal: 'SIGKILL' });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('the production image, built as the Dockerfile says (no Docker engine here)', { timeout: 300_000 }, () => {
  const stages: Stage[] = [];
  let root = '';
  let ignored: string[] = [];
  const buildEnv: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    npm_config_prefer_offline: 'true',
    npm_config_update_notifier: 'false',
  };
  const dirOf = (stage: string): string => join(root, stage);
  const database = { url: undefined as string | undefined, drop: async (): Promise<void> => {} };

  before(async () => {
    stages.push(...parseDockerfile(await readFile(join(PACKAGE_ROOT, 'Dockerfile'), 'utf8')));
    ignored = (await readFile(join(PACKAGE_ROOT, '.dockerignore'), 'utf8')).split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    root = await mkdtemp(join(tmpdir(), 'smart-auth-image-'));
    const adminUrl = process.env.TEST_DATABASE_URL;
    if (adminUrl) {
      const name = `smart_auth_image_${randomBytes(6).toString('hex')}`;
      const admin = async (text: string): Promise<void> => {
        const client = new pg.Client({ connectionString: adminUrl });
        await client.connect();
        try {
          await client.query(text);
        } finally {
          await client.end();
        }
      };
      await admin(`create database ${name}`);
      const url = new URL(adminUrl);
      url.pathname = `/${name}`;
      database.url = url.href;
      database.drop = () => admin(`drop database if exists ${name} with (force)`);
    }
  });
  after(async () => {
    await database.drop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  /** COPY [--from=stage] src... dest, dest relative to the stage's WORKDIR (/app). */
  async function copy(stage: Stage, args: string): Promise<void> {
    const from = /^--from=(\S+)\s+/.exec(args);
    const [...paths] = args.slice(from?.[0].length ?? 0).split(/\s+/);
    const dest = paths.pop()!;
    const target = join(dirOf(stage.name), posix.relative(stage.workdir, posix.resolve(stage.workdir, dest)));
    for (const source of paths) {
      const origin = from ? join(dirOf(from[1]!), posix.relative(stages.find((s) => s.name === from[1])!.workdir, source)) : join(PACKAGE_ROOT, source);
      if (!from) assert.ok(!ignored.includes(basename(source)), `${source} is in .dockerignore: COPY would not find it`);
      assert.ok(existsSync(origin), `COPY ${source}: not there`);
      const into = dest.endsWith('/') ? join(target, basename(source)) : target;
      await mkdir(dest.endsWith('/') ? target : join(target, '..'), { recursive: true });
      // .dockerignore names top-level entries of the build context (node_modules, dist, test, .data …).
      await cp(origin, into, { recursive: true, filter: (src) => from !== null || !ignored.some((i) => src === join(PACKAGE_ROOT, i) || src.startsWith(join(PACKAGE_ROOT, i) + '/')) });
    }
  }

  it('builds: npm ci from the lock file (without a warning), the build, npm prune to production dependencies', async () => {
    const build = stages.find((s) => s.name === 'build');
    assert.ok(build, 'a stage named build');
    await mkdir(dirOf('build'), { recursive: true });
    for (const { op, args } of build.instructions) {
      if (op === 'COPY') await copy(build, args);
      if (op === 'RUN') {
        const result = await run('sh', ['-c', args], dirOf('build'), buildEnv, 180_000);
        assert.equal(result.code, 0, `RUN ${args}\n${result.stdout}\n${result.stderr}`);
        // npm ci prints install-script and peer-dependency warnings on stderr (allowScripts, .npmrc).
        assert.doesNotMatch(result.stderr, /npm warn|npm error/i, `RUN ${args} warned:\n${result.stderr}`);
      }
    }
    const modules = join(dirOf('build'), 'node_modules');
    assert.ok(existsSync(join(modules, 'oidc-provider')) && existsSync(join(modules, 'prom-client')), 'production dependencies stay');
    assert.ok(!existsSync(join(modules, 'typescript')) && !existsSync(join(modules, 'tsx')), 'development dependencies are pruned');
  });

  it('starts from the runtime stage, answers /readyz, passes its HEALTHCHECK, and stops on SIGTERM', async () => {
    const runtime = stages.at(-1)!;
    let env: Record<string, string> = {};
    let cmd: string[] = [];
    let healthcheck: string[] = [];
    await mkdir(dirOf(runtime.name), { recursive: true });
    for (const { op, args } of runtime.instructions) {
      if (op === 'COPY') await copy(runtime, args);
      if (op === 'ENV') env = { ...env, ...parseEnv(args) };
      if (op === 'CMD') cmd = execForm(args);
      if (op === 'HEALTHCHECK') healthcheck = execForm(args);
    }
    assert.equal(env.SANDBOX, 'false', 'the image is never a sandbox');
    assert.equal(cmd[0], 'node');
    const port = await freePort();
    const issuer = `http://127.0.0.1:${port}`;
    const serverEnv = {
      PATH: process.env.PATH ?? '',
      ...env,
      HOST: '127.0.0.1',
      PORT: String(port),
      ISSUER: issuer,
      FHIR_BASE_URLS: `${issuer}/fhir`,
      SECRET_KEY: randomBytes(32).toString('hex'),
      DATA_DIR: join(root, 'data'),
      LOG_LEVEL: 'info',
      ...(database.url ? { DATABASE_URL: database.url } : {}),
    };
    const cwd = dirOf(runtime.name);
    const server = spawn(process.execPath, cmd.slice(1), { cwd, env: serverEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    server.stdout.on('data', (d: Buffer) => (out += d.toString()));
    server.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => server.on('close', resolve));
    try {
      let ready: Response | undefined;
      for (let attempt = 0; attempt < 120 && server.exitCode === null; attempt++) {
        ready = await fetch(`${issuer}/readyz`).catch(() => undefined);
        if (ready?.status === 200) break;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      assert.equal(ready?.status, 200, `/readyz:\n${out}`);
      assert.deepEqual(await ready.json(), { status: 'ready', database: database.url ? 'postgres' : 'pglite' });
      const check = await run(process.execPath, healthcheck.slice(1), cwd, serverEnv, 30_000);
      assert.equal(check.code, 0, check.stdout + check.stderr);
      if (database.url) assert.ok(!out.includes('Demo logins'), 'no demo data on Postgres unless asked for');
    } finally {
      server.kill('SIGTERM');
    }
    assert.equal(await exited, 0, out);
    // Not a terminal: JSON lines only, so that log collectors can read every one.
    for (const line of out.trim().split('\n')) assert.doesNotThrow(() => JSON.parse(line), `not JSON: ${line}`);
  });
});
