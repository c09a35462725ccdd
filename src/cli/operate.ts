import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';

import { buildApp } from '../app.js';
import { checkpointExport, checkpointJws, createCheckpoint } from '../audit/checkpoints.js';
import { verifyAudit, type VerifyResult } from '../audit/verify.js';
import { loadConfig } from '../config/config.js';
import { readEnvironment } from './environment.js';
import { UsageError } from './usage-error.js';

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
      password: { type: 'string' },
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
    },
  });
  const env = readEnvironment();
  const adminToken = randomBytes(32).toString('base64url');
  const config = loadConfig({ ...env, ADMIN_TOKEN: adminToken, SEED_DEMO: 'false', LOG_LEVEL: env.LOG_LEVEL ?? 'warn' });
  const app = await buildApp(config, { background: false });
  const basePath = config.basePath;
  const call = async (method: 'GET' | 'POST', path: string, payload?: unknown, contentType = 'application/json') => {
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
      case 'users create':
        if (!values.username || !values['fhir-user'] || !values.name) throw new UsageError('users create needs --username, --fhir-user and --name');
        process.stdout.write(`${JSON.stringify((await call('POST', '/users', { username: values.username, password: values.password, fhirUser: values['fhir-user'], name: values.name, roles: values.role ?? [] })).json(), null, 2)}\n`);
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
        const result = await verifyAudit(app.runtime.database.db, app.runtime.box, { checkpoints });
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
  } catch (error) {
    if (!(error instanceof CommandFailed)) throw error;
    process.stderr.write(`Failed: ${error.message}\n`);
    return 1;
  } finally {
    await app.close();
  }
}

class CommandFailed extends Error {}

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
