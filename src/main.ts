#!/usr/bin/env node
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';

import type { FastifyInstance } from 'fastify';

import { buildApp } from './app.js';
import { createCheckpoint } from './audit/checkpoints.js';
import { verifyAudit, type VerifyResult } from './audit/verify.js';
import { ConfigError, loadConfig, SIGNING_ALGS, type Config, type SigningAlg } from './config/config.js';
import { openDatabase } from './db/database.js';
import { migrateToLatest } from './db/migrate.js';
import { createLogger } from './http/logger.js';
import { rotateCookieKeys } from './keys/cookie-keys.js';
import { KeyRotationError, listSigningKeys, rotateSigningKeys } from './keys/signing-keys.js';
import { minPublishedSeconds, RETIRED_KEY_PUBLISH_SECONDS } from './maintenance.js';
import { SMART_CONFIGURATION_PATH } from './smart/smart-configuration.js';
import { DEMO_CLIENT_ID, DEMO_USERS, seedDemo } from './seed/demo.js';
import { SecretBox } from './security/secret-box.js';
import { loadOrCreateSecretKey } from './security/secret-key-file.js';

const USAGE = `Usage: smart-auth [command] [options]

Commands:
  serve                      Start the server (default)
  migrate                    Apply pending database migrations and exit
  seed                       Insert the demo users, patients and client where missing
  keys list                  List signing keys and their states
  keys rotate [--alg ALG]... [--force] [--cookies]
                             Promote each algorithm's published next key to signing, retire the
                             current one, publish a new next key (--cookies: also rotate cookie keys)
  clients list               List clients (JSON lines)
  clients create JSON        Register a client from RFC 7591 metadata; prints it with its secret
  users create --username U --password P --fhir-user TYPE/ID --name NAME [--role R]...
                             Create a user who can sign in
  patients import FILE       Import Patient and Encounter resources (FHIR Bundle .json, or .ndjson)
  launch create [--patient ID] [--encounter ID] [--client ID] [--user ID] [--intent TEXT] [--no-banner]
                             Create an EHR launch context; prints the launch id
  audit export [--format ndjson|bundle] [--from ISO] [--to ISO] [--type T] [--limit N]
                             Print audit events as FHIR AuditEvent resources
  audit verify [--checkpoint FILE]...
                             Check the audit trail's keyed hash chains and every stored signed checkpoint,
                             and hold the trail to each FILE that audit checkpoint printed
  audit checkpoint           Sign a checkpoint of the audit trail as it stands and print it as JSON, to
                             keep where the database's owner cannot change it
  healthcheck                Exit 0 when the server on PORT answers /readyz (for container health checks)
  gen-secret                 Print a new random SECRET_KEY
  help                       Show this text

Configuration comes from environment variables and a .env file in the working directory;
see .env.example for every variable.`;

/** Thrown for a wrong command line: printed with the usage, exit code 2. */
class UsageError extends Error {}

async function main(argv: readonly string[]): Promise<number> {
  const [command = 'serve', ...rest] = argv;
  switch (command) {
    case 'serve':
      return serve(readConfig());
    case 'migrate':
      return migrate(readConfig());
    case 'seed':
      return seed(readConfig());
    case 'keys':
      return keys(readConfig(), rest);
    case 'clients':
    case 'users':
    case 'patients':
    case 'launch':
    case 'audit':
      return operate(command, rest);
    case 'healthcheck':
      return healthcheck(readConfig());
    case 'gen-secret':
      process.stdout.write(`${randomBytes(32).toString('hex')}\n`);
      return 0;
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return 0;
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

function readConfig(): Config {
  if (existsSync('.env')) process.loadEnvFile('.env');
  return loadConfig(process.env);
}

async function serve(config: Config): Promise<number> {
  const started = performance.now();
  const log = createLogger(config.logLevel);
  // State is unknown after either: log it where operators look, and let the supervisor restart us.
  process.on('uncaughtException', (error) => {
    log.fatal({ err: error }, 'uncaught exception');
    process.exit(1);
  });
  process.on('unhandledRejection', (reason) => {
    log.fatal({ err: reason }, 'unhandled promise rejection');
    process.exit(1);
  });
  // Until it listens, the server may be waiting for its database: a stop signal then ends the wait.
  const starting = new AbortController();
  const stopStarting = (signal: NodeJS.Signals): void => {
    log.info({ signal }, 'stopping before the server started');
    starting.abort();
  };
  process.on('SIGTERM', stopStarting);
  process.on('SIGINT', stopStarting);
  let app: FastifyInstance;
  try {
    app = await buildApp(config, { logger: log, signal: starting.signal });
  } catch (error) {
    if (starting.signal.aborted) return 0;
    throw error;
  } finally {
    process.off('SIGTERM', stopStarting);
    process.off('SIGINT', stopStarting);
  }
  const address = await app.listen({ port: config.port, host: config.host });
  log.info({ address, issuer: config.issuer, database: config.database.kind, startupMs: Math.round(performance.now() - started) }, 'listening');
  if (config.seedDemo) process.stdout.write(banner(config, address));

  let closing = false;
  const shutdown = (signal: NodeJS.Signals): void => {
    if (closing) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    closing = true;
    log.info({ signal }, 'shutting down: finishing requests in flight');
    const timer = setTimeout(() => {
      log.error(`requests still in flight after ${config.shutdownTimeoutSeconds} s; exiting`);
      process.exit(1);
    }, config.shutdownTimeoutSeconds * 1000);
    timer.unref();
    app.close().then(
      () => {
        log.info('stopped');
        process.exit(0);
      },
      (error: unknown) => {
        log.error({ err: error }, 'error while shutting down');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  return new Promise<number>(() => undefined); // runs until a signal
}

function banner(config: Config, address: string): string {
  const fhir = config.fhirBaseUrls[0]!;
  const db = config.database.kind === 'pglite' ? `embedded (PGlite) in ${config.database.dataDir}` : 'Postgres';
  return [
    '',
    `SMART on FHIR authorization server — sandbox, listening on ${address}`,
    '',
    `  Issuer:            ${config.issuer}`,
    `  FHIR base (aud):   ${config.fhirBaseUrls.join(', ')}`,
    `  SMART discovery:   ${fhir}${SMART_CONFIGURATION_PATH}`,
    `  OpenID discovery:  ${config.issuer}/.well-known/openid-configuration`,
    `  Database:          ${db}`,
    '',
    '  Demo logins:',
    ...DEMO_USERS.map((u) => `    ${u.username.padEnd(10)} password ${u.password.padEnd(16)} ${u.fhirUser} (${u.name})`),
    `  Demo public client: ${DEMO_CLIENT_ID}`,
    '',
  ].join('\n') + '\n';
}

/** Asks the local server whether it is ready; for Docker's HEALTHCHECK, which has no curl in slim images. */
async function healthcheck(config: Config): Promise<number> {
  const basePath = new URL(config.issuer).pathname.replace(/\/$/, '');
  try {
    const res = await fetch(`http://127.0.0.1:${config.port}${basePath}/readyz`, { signal: AbortSignal.timeout(3000) });
    process.stdout.write(`${res.status} ${await res.text()}\n`);
    return res.ok ? 0 : 1;
  } catch (error) {
    process.stdout.write(`unreachable: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}

/**
 * Operator commands run through the admin API's own routes, in process: the same validation, the same
 * audit events, no second implementation. The server does not need to be running (on the embedded
 * database it must not be: one process at a time).
 */
async function operate(command: string, args: readonly string[]): Promise<number> {
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
  if (existsSync('.env')) process.loadEnvFile('.env');
  const adminToken = randomBytes(32).toString('base64url');
  const config = loadConfig({ ...process.env, ADMIN_TOKEN: adminToken, SEED_DEMO: 'false', LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' });
  const app = await buildApp(config, { background: false });
  const basePath = new URL(config.issuer).pathname.replace(/\/$/, '');
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
        const { id, createdAt, jws, header, claims, key } = checkpoint;
        process.stdout.write(`${JSON.stringify({ id, created_at: createdAt.toISOString(), jws, header, payload: claims, key }, null, 2)}\n`);
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
  if (/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(text)) return text;
  try {
    const { jws } = JSON.parse(text) as { jws?: unknown };
    if (typeof jws === 'string') return jws;
  } catch {
    // not JSON: refused below
  }
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

async function withDatabase<T>(config: Config, job: (db: Awaited<ReturnType<typeof openDatabase>>, box: () => Promise<SecretBox>) => Promise<T>): Promise<T> {
  const log = createLogger(config.logLevel);
  const database = await openDatabase(config.database, { poolMax: 2, log });
  const box = async (): Promise<SecretBox> => {
    const key = config.secretKey ?? (config.database.kind === 'pglite' ? (await loadOrCreateSecretKey(config.database.dataDir)).key : undefined);
    if (!key) throw new Error('SECRET_KEY is required');
    return new SecretBox(key, config.previousSecretKeys);
  };
  try {
    return await job(database, box);
  } finally {
    await database.close();
  }
}

async function migrate(config: Config): Promise<number> {
  return withDatabase(config, async ({ db }) => {
    const applied = await migrateToLatest(db);
    process.stdout.write(applied.length ? `Applied: ${applied.join(', ')}\n` : 'No pending migrations.\n');
    return 0;
  });
}

async function seed(config: Config): Promise<number> {
  return withDatabase(config, async ({ db }) => {
    await migrateToLatest(db);
    const result = await seedDemo(db, config);
    process.stdout.write(`Demo data: ${result.users} users, ${result.patients} patients, ${result.clients} clients added.\n`);
    return 0;
  });
}

async function keys(config: Config, args: readonly string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values } = parseArgs({
    args: [...rest],
    options: { alg: { type: 'string', multiple: true }, force: { type: 'boolean' }, cookies: { type: 'boolean' } },
    strict: true,
  });
  if (sub === 'list') {
    return withDatabase(config, async ({ db }) => {
      await migrateToLatest(db);
      for (const key of await listSigningKeys(db)) {
        const until = key.publishUntil ? ` published until ${key.publishUntil.toISOString()}` : '';
        process.stdout.write(`${key.alg.padEnd(6)} ${key.state.padEnd(8)} ${key.kid}  created ${key.createdAt.toISOString()}${until}\n`);
      }
      return 0;
    });
  }
  if (sub !== 'rotate') throw new UsageError(`unknown keys command "${sub ?? ''}" (expected list or rotate)`);
  const algs = values.alg?.map((alg) => {
    if (!(SIGNING_ALGS as readonly string[]).includes(alg)) throw new UsageError(`--alg ${alg}: expected one of ${SIGNING_ALGS.join(', ')}`);
    return alg as SigningAlg;
  });
  return withDatabase(config, async ({ db }, box) => {
    await migrateToLatest(db);
    const secretBox = await box();
    try {
      const results = await rotateSigningKeys(db, secretBox, {
        ...(algs ? { algs } : {}),
        force: values.force ?? false,
        minPublishedSeconds: minPublishedSeconds(config),
        retiredPublishSeconds: RETIRED_KEY_PUBLISH_SECONDS,
      });
      for (const r of results) process.stdout.write(`${r.alg}: now signing with ${r.activated}; retired ${r.retired ?? '(none)'}; next ${r.next}\n`);
    } catch (error) {
      if (!(error instanceof KeyRotationError)) throw error;
      process.stderr.write(`Not rotated: ${error.message}\n`);
      return 1;
    }
    if (values.cookies) process.stdout.write(`Cookie key added: ${await rotateCookieKeys(db, secretBox)}\n`);
    process.stdout.write(`Running servers pick the new keys up within ${config.keyRefreshSeconds} s.\n`);
    return 0;
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\nSee .env.example for every variable and its default.\n`);
      process.exitCode = 1;
    } else if (error instanceof UsageError || (error instanceof TypeError && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`${error.message}\n\n${USAGE}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`Failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exitCode = 1;
    }
  },
);
