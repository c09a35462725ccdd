/**
 * Start-up time and resident memory of the built server in sandbox mode, started as `npm start` starts it.
 *
 *   npm run build && npx tsx bench/sandbox-start.ts [CHECKOUT] [DATA_DIR]
 *
 * CHECKOUT (default: this one) must be built; DATA_DIR (default: a new temporary directory, so a first
 * start) is the embedded database's directory: give an existing one to measure a later start. Prints one
 * JSON line: milliseconds from spawning to listening, VmRSS 5 s later and VmHWM (the peak), in MB, and
 * whether the sandbox's data pack was written by this start.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { startFlags } from './lib/servers.js';

const [checkout = resolve(import.meta.dirname, '..'), dataDir = mkdtempSync(join(tmpdir(), 'sandbox-start-'))] = process.argv.slice(2);
const started = performance.now();
const child = spawn(process.execPath, [...(await startFlags(checkout)), 'dist/src/main.js', 'serve'], {
  cwd: checkout,
  env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'info' },
  stdio: ['ignore', 'pipe', 'pipe'],
});
let output = '';
const status = (field: string): number => Math.round(Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${String(child.pid)}/status`, 'utf8'))?.[1] ?? 0) / 1024);
const address = await new Promise<string>((done, fail) => {
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString();
    const match = /"address":"(http:\/\/[^"]+)"/.exec(output);
    if (match) done(match[1]!);
  });
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.on('close', () => fail(new Error(`the server exited:\n${output}`)));
});
const startupMs = Math.round(performance.now() - started);
await new Promise((done) => setTimeout(done, 5000));
const [rssMB, peakMB] = [status('VmRSS'), status('VmHWM')];
const metadata = await fetch(`${address}/fhir/metadata`);
console.log(JSON.stringify({ checkout, dataDir, startupMs, rssMB, peakMB, fhirMetadata: metadata.status, packWritten: output.includes('sandbox FHIR data written') }));
child.kill('SIGTERM');
await new Promise((done) => child.on('close', done));
