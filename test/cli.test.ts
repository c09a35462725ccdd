import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { migrations } from '../migrations/index.js';
import { loadConfig } from '../src/config/config.js';
import { PACKAGE_ROOT } from '../src/paths.js';

const MAIN = join(PACKAGE_ROOT, 'src', 'main.ts');
const TSX = import.meta.resolve('tsx');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI in `cwd` with only the given environment (no inherited DATABASE_URL or .env). */
function start(args: string[], env: Record<string, string>, cwd: string): ChildProcess {
  return spawn(process.execPath, ['--import', TSX, MAIN, ...args], { cwd, env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
}

function run(args: string[], env: Record<string, string>, cwd: string): Promise<Run> {
  const child = start(args, env, cwd);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

describe('command line', () => {
  let cwd: string;
  before(async () => {
    cwd = await mkdtemp(join(tmpdir(), 'smart-auth-cli-'));
  });
  after(() => rm(cwd, { recursive: true, force: true }));

  it('stops at once on a bad variable, naming it and what is expected', async () => {
    const { code, stderr, stdout } = await run(['serve'], { PORT: 'eighty', LOG_LEVEL: 'loud' }, cwd);
    assert.equal(code, 1);
    assert.equal(stdout, '');
    assert.equal(
      stderr,
      'Invalid configuration:\n' +
        '  - PORT="eighty" is invalid: expected an integer from 0 to 65535 (0 picks a free port)\n' +
        '  - LOG_LEVEL="loud" is invalid: expected one of fatal, error, warn, info, debug, trace, silent\n' +
        'See .env.example for every variable and its default.\n',
    );
  });

  it('help, unknown commands and bad options', async () => {
    const help = await run(['help'], {}, cwd);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: smart-auth \[command\] \[options\]/);
    const unknown = await run(['frobnicate'], {}, cwd);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /^unknown command "frobnicate"\n\nUsage:/);
    const badAlg = await run(['keys', 'rotate', '--alg', 'HS256'], { DATA_DIR: join(cwd, 'data-bad') }, cwd);
    assert.equal(badAlg.code, 2);
    assert.match(badAlg.stderr, /^--alg HS256: expected one of RS256, RS384, ES256, ES384\n/);
  });

  it('gen-secret prints a key SECRET_KEY accepts', async () => {
    const { code, stdout } = await run(['gen-secret'], {}, cwd);
    assert.equal(code, 0);
    assert.match(stdout, /^[0-9a-f]{64}\n$/);
    assert.equal(loadConfig({ SECRET_KEY: stdout.trim() }).secretKey?.length, 32);
  });

  it('migrate, keys list, keys rotate on the embedded database', async () => {
    const env = { DATA_DIR: join(cwd, 'data-keys'), LOG_LEVEL: 'warn' };
    const first = await run(['migrate'], env, cwd);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout, `Applied: ${Object.keys(migrations).join(', ')}\n`);
    assert.equal((await run(['migrate'], env, cwd)).stdout, 'No pending migrations.\n');

    const listed = await run(['keys', 'list'], env, cwd);
    assert.equal(listed.code, 0, listed.stderr);
    assert.equal(listed.stdout, '', 'no keys before the server first started');

    const early = await run(['keys', 'rotate'], env, cwd);
    assert.equal(early.code, 1);
    assert.equal(early.stderr, 'Not rotated: no signing keys exist yet; start the server once to create them\n');
  });

  it('serve: starts on a fresh directory, serves discovery, refuses a second process, stops cleanly on SIGTERM', async () => {
    const dataDir = join(cwd, 'data-serve');
    const env = { DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'info' };
    const server = start(['serve'], env, cwd);
    let out = '';
    server.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const address = await new Promise<string>((resolve, reject) => {
      server.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const match = /"address":"(http:\/\/[^"]+)"/.exec(out);
        if (match) resolve(match[1]!);
      });
      server.on('close', () => reject(new Error(`server exited early:\n${out}`)));
    });
    try {
      const smart = await fetch(`${address}/fhir/.well-known/smart-configuration`);
      assert.equal(smart.status, 200);
      assert.ok(out.includes('Demo logins:'), 'the sandbox banner tells how to log in');
      assert.ok(out.includes('clinician  password clinician-demo'));

      const second = await run(['serve'], env, cwd);
      assert.equal(second.code, 1);
      assert.match(second.stderr, /The embedded database in .+ is in use by process \d+/);

      const keys = await run(['keys', 'rotate', '--alg', 'RS256'], env, cwd);
      assert.equal(keys.code, 1, 'the running server holds the embedded database');
    } finally {
      server.kill('SIGTERM');
    }
    const code = await new Promise<number | null>((resolve) => server.on('close', resolve));
    assert.equal(code, 0, out);
    assert.match(out, /"msg":"stopped"/);

    const listed = await run(['keys', 'list'], { DATA_DIR: dataDir }, cwd);
    assert.equal(listed.stdout.trim().split('\n').length, 8, 'active and next for four algorithms');
    const forced = await run(['keys', 'rotate', '--alg', 'RS256', '--force'], { DATA_DIR: dataDir }, cwd);
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(forced.stdout, /^RS256: now signing with [A-Za-z0-9_-]{43}; retired [A-Za-z0-9_-]{43}; next [A-Za-z0-9_-]{43}\nRunning servers pick the new keys up within 60 s\.\n$/);
  });
});
