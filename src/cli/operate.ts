import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';

import type { FastifyInstance } from 'fastify';

import { buildApp } from '../app.js';
import { checkpointExport, checkpointJws, createCheckpoint } from '../audit/checkpoints.js';
import { verifyAudit, type VerifyResult } from '../audit/verify.js';
import { loadConfig } from '../config/config.js';
import { DataDirInUseError } from '../db/database.js';
import { readEnvironment } from './environment.js';
import { CommandFailed, UsageError } from './errors.js';
import { promptHidden } from './prompt.js';

/**
 * Operator commands run through the admin API's own routes, in process: the same validation, the same
 * audit events, no second implementation. The server does not need to be running (on the embedded
 * database it must not be: one process at a time).
 */
export async function operate(command: string, args: readonly string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: [...rest],
    allowPositionals: true,
    strict: true,
    options: {
      username: { type: 'string' },
      // Refused with a reason (below): a password on the command line is visible to every user of the
      // machine (ps, /proc) and kept in shell history.
      password: { type: 'string' },
      'password-stdin': { type: 'boolean' },
      'fhir-user': { type: 'string' },
      name: { type: 'string' },
      role: { type: 'string', multiple: true },
      patient: { type: 'string' },
      encounter: { type: 'string' },
      client: { type: 'string' },
      user: { type: 'string' },
      intent: { type: 'string' },
      'no-banner': { type: 'boolean' },
      format: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      type: { type: 'string' },
      limit: { type: 'string' },
      checkpoint: { type: 'string', multiple: true },
      'allow-unkeyed-chains': { type: 'boolean' },
      year: { type: 'string' },
      organization: { type: 'string' },
    },
  });
  if (values.password !== undefined) {
    throw new UsageError('--password is not accepted: a password on the command line is visible to other users of the machine and kept in shell history. Type it when asked, or pipe it in with --password-stdin');
  }
  const password = command === 'users' && sub === 'create' ? await readPassword(values['password-stdin'] === true) : undefined;
  const env = readEnvironment();
  const adminToken = randomBytes(32).toString('base64url');
  const config = loadConfig({ ...env, ADMIN_TOKEN: adminToken, SEED_DEMO: 'false', LOG_LEVEL: env.LOG_LEVEL ?? 'warn' });
  let app: FastifyInstance;
  try {
    app = await buildApp(config, { background: false });
  } catch (error) {
    if (!(error instanceof DataDirInUseError)) throw error;
    throw new CommandFailed(`the embedded database in ${error.dir} is in use by process ${error.pid}, a running server most likely. Stop it and run this command again, or do this through the running server's admin API (${config.issuer}/admin/api, with ADMIN_TOKEN; its OpenAPI document is at /admin/api/openapi.json)`);
  }
  const basePath = config.basePath;
  const call = async (method: 'GET' | 'POST' | 'PATCH', path: string, payload?: unknown, contentType = 'application/json') => {
    const res = await app.inject({ method, url: `${basePath}/admin/api${path}`, headers: { authorization: `Bearer ${adminToken}`, ...(payload === undefined ? {} : { 'content-type': contentType }) }, ...(payload === undefined ? {} : { payload: payload as string }) });
    if (res.statusCode >= 400) {
      const body = res.json<{ error_description?: string }>();
      throw new CommandFailed(body.error_description ?? `${res.statusCode}`);
    }
    return res;
  };
  try {
    const key = `${command} ${sub ?? ''}`;
    switch (key) {
      case 'clients list': {
        let after: string | null = null;
        do {
          const page: { items: unknown[]; next: string | null } = (await call('GET', `/clients?limit=500${after ? `&after=${encodeURIComponent(after)}` : ''}`)).json();
          for (const item of page.items) process.stdout.write(`${JSON.stringify(item)}\n`);
          after = page.next;
        } while (after);
        return 0;
      }
      case 'clients create':
        if (!positionals[0]) throw new UsageError('clients create needs the client metadata as JSON');
        process.stdout.write(`${JSON.stringify((await call('POST', '/clients', JSON.parse(positionals[0]))).json(), null, 2)}\n`);
        return 0;
      case 'clients update':
        if (!positionals[0] || !positionals[1]) throw new UsageError('clients update needs the client id and the changes as JSON');
        process.stdout.write(`${JSON.stringify((await call('PATCH', `/clients/${encodeURIComponent(positionals[0])}`, JSON.parse(positionals[1]))).json(), null, 2)}\n`);
        return 0;
      case 'report patient-access': {
        if (!values.year || !/^\d{4}$/.test(values.year)) throw new UsageError('report patient-access needs --year YYYY');
        const format = values.format ?? 'csv';
        if (format !== 'csv' && format !== 'json') throw new UsageError('--format must be csv or json');
        const res = await call('GET', `/reports/patient-access?year=${values.year}&format=${format}`);
        process.stdout.write(format === 'json' ? `${JSON.stringify(res.json(), null, 2)}\n` : res.body);
        return 0;
      }
      case 'attribution import': {
        const file = positionals[0];
        if (!file) throw new UsageError('attribution import needs a file holding a Group');
        const text = await readFile(file, 'utf8');
        const query = values.organization ? `?organization=${encodeURIComponent(values.organization)}` : '';
        const result = (await call('POST', `/attribution-lists${query}`, text, 'application/fhir+json')).json<{ id: string; organization: string; members: number; created: boolean }>();
        process.stdout.write(`${result.created ? 'Imported' : 'Replaced'} attribution list ${result.id} of ${result.organization}: ${result.members} members.\n`);
        return 0;
      }
      case 'attribution list':
        for (const item of (await call('GET', '/attribution-lists')).json<{ items: unknown[] }>().items) process.stdout.write(`${JSON.stringify(item)}\n`);
        return 0;
      case 'users create':
        if (!values.username || !values['fhir-user'] || !values.name) throw new UsageError('users create needs --username, --fhir-user and --name');
        process.stdout.write(`${JSON.stringify((await call('POST', '/users', { username: values.username, password, fhirUser: values['fhir-user'], name: values.name, roles: values.role ?? [] })).json(), null, 2)}\n`);
        return 0;
      case 'patients import': {
        const file = positionals[0];
        if (!file) throw new UsageError('patients import needs a file');
        const text = await readFile(file, 'utf8');
        const ndjson = file.endsWith('.ndjson');
        const result = (await call('POST', '/patients/$import', text, ndjson ? 'application/fhir+ndjson' : 'application/fhir+json')).json<{ patients: number; encounters: number }>();
        process.stdout.write(`Imported ${result.patients} patients and ${result.encounters} encounters.\n`);
        return 0;
      }
      case 'launch create': {
        const body = { patient: values.patient, encounter: values.encounter, client_id: values.client, user: values.user, intent: values.intent, need_patient_banner: !values['no-banner'] };
        const launch = (await call('POST', '/launches', JSON.parse(JSON.stringify(body)))).json<{ launch: string; expires_in: number }>();
        process.stdout.write(`${launch.launch}\n`);
        return 0;
      }
      case 'audit export': {
        const query = new URLSearchParams({ format: values.format ?? 'ndjson', limit: values.limit ?? '10000' });
        for (const name of ['from', 'to', 'type'] as const) if (values[name]) query.set(name, values[name]);
        process.stdout.write((await call('GET', `/audit/export?${query.toString()}`)).body);
        return 0;
      }
      case 'audit verify': {
        const checkpoints = await Promise.all((values.checkpoint ?? []).map(async (file) => ({ source: `checkpoint ${file}`, jws: await readCheckpointFile(file) })));
        const result = await verifyAudit(app.runtime.database.db, app.runtime.box, { checkpoints, allowUnkeyedChains: values['allow-unkeyed-chains'] ?? false });
        process.stdout.write(verifyReport(result, checkpoints.map((c) => c.source)));
        if (result.brokenAt) process.stderr.write(`Audit chain broken at event ${result.brokenAt.seq}: ${result.brokenAt.reason} (${result.checked} events before it are intact).\n`);
        if (result.refused) process.stderr.write(`Audit ${result.refused.checkpoint}: ${result.refused.reason}.\n`);
        return result.ok ? 0 : 1;
      }
      case 'audit checkpoint': {
        const { runtime } = app;
        const checkpoint = await createCheckpoint(runtime.database.db, runtime.box, runtime.config.issuer);
        process.stdout.write(`${JSON.stringify(checkpointExport(checkpoint), null, 2)}\n`);
        return 0;
      }
      default:
        throw new UsageError(`unknown command "${key.trim()}"`);
    }
  } finally {
    await app.close();
  }
}

/**
 * The new user's password: from standard input with --password-stdin (one line; a final newline is not
 * part of it), else asked for on a terminal (twice, not echoed), else none: the user cannot sign in until
 * an operator sets one.
 */
async function readPassword(fromStdin: boolean): Promise<string | undefined> {
  if (fromStdin) {
    const text = (await readAll(process.stdin)).replace(/\r?\n$/, '');
    if (!text) throw new CommandFailed('--password-stdin: standard input held no password');
    if (text.includes('\n')) throw new CommandFailed('--password-stdin: expected one line on standard input');
    return text;
  }
  if (!process.stdin.isTTY) {
    process.stderr.write('No password given (--password-stdin): the user cannot sign in until one is set (POST /admin/api/users/{id}/password).\n');
    return undefined;
  }
  const first = await promptHidden('Password for the new user (at least 10 characters; empty: none): ');
  if (!first) return undefined;
  if ((await promptHidden('The same password again: ')) !== first) throw new CommandFailed('the two passwords differ');
  return first;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
  return Buffer.concat(chunks).toString('utf8');
}

/** The JWS from what `audit checkpoint` printed (or from a file holding the bare compact JWS). */
async function readCheckpointFile(file: string): Promise<string> {
  let text: string;
  try {
    text = (await readFile(file, 'utf8')).trim();
  } catch (error) {
    throw new CommandFailed(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  const jws = checkpointJws(text);
  if (jws) return jws;
  throw new CommandFailed(`${file} holds no checkpoint: expected the JSON that audit checkpoint prints, or a compact JWS`);
}

function verifyReport(result: VerifyResult, given: readonly string[]): string {
  const lines: string[] = [];
  if (!result.brokenAt) lines.push(`Audit trail intact: ${result.checked} events in ${result.chains} chains.`);
  const { stored, newestStored } = result.checkpoints;
  if (!result.refused) {
    lines.push(newestStored ? `Stored checkpoints: ${stored}, all signed by our keys and matched; the newest (${newestStored.issuedAt.toISOString()}) covers ${newestStored.total} events.` : 'Stored checkpoints: none.');
    result.checkpoints.given.forEach((c, i) => lines.push(`${given[i]!}: signed by our key and matched (${c.issuedAt.toISOString()}, ${c.total} events in ${c.chains} chains).`));
  }
  return lines.map((l) => `${l}\n`).join('');
}
