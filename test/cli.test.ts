import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { sql } from 'kysely';

import { migrations } from '../migrations/index.js';
import { loadConfig } from '../src/config/config.js';
import { openDatabase } from '../src/db/database.js';
import { PACKAGE_ROOT } from '../src/paths.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { SANDBOX_USAGE } from '../src/cli/sandbox.js';
import { generateSandboxPack } from '../src/seed/sandbox-pack.js';

const MAIN = join(PACKAGE_ROOT, 'src', 'main.ts');
const TSX = import.meta.resolve('tsx');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI in `cwd` with only the given environment (no inherited DATABASE_URL or .env). */
function start(args: string[], env: Record<string, string>, cwd: string, input?: string): ChildProcess {
  const child = spawn(process.execPath, ['--import', TSX, MAIN, ...args], { cwd, env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env }, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  if (input !== undefined) child.stdin!.end(input);
  return child;
}

function run(args: string[], env: Record<string, string>, cwd: string, input?: string): Promise<Run> {
  const child = start(args, env, cwd, input);
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

  const postgres = process.env.TEST_DATABASE_DIRECT_URL ?? process.env.TEST_DATABASE_URL;
  it('a database that refuses the connection for good: one line saying what to change, no stack trace, exit 1', { skip: postgres ? false : 'needs TEST_DATABASE_URL' }, async () => {
    const env = { SECRET_KEY: 'a'.repeat(64), FHIR_BASE_URLS: 'http://localhost:3999/fhir', PORT: '0' };
    const role = new URL(postgres!);
    role.username = 'no_such_role_here';
    role.password = '';
    const database = new URL(postgres!);
    database.pathname = '/no_such_database_here';
    for (const [url, expected] of [
      [role, 'Failed: the database refused the connection: the role is not allowed to connect (no such role, or pg_hba.conf refuses it): check the user in DATABASE_URL (server said: role "no_such_role_here" does not exist, SQLSTATE 28000)\n'],
      [database, 'Failed: the database refused the connection: the database does not exist: create it, or name another in DATABASE_URL (server said: database "no_such_database_here" does not exist, SQLSTATE 3D000)\n'],
    ] as const) {
      const { code, stderr } = await run(['serve'], { ...env, DATABASE_URL: url.href }, cwd);
      assert.equal(code, 1, stderr);
      assert.equal(stderr.split('\n').filter((line) => line.startsWith('Failed: ')).join('\n') + '\n', expected);
      assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace');
    }
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
      assert.ok(out.includes('Open http://localhost:3000/\n'), 'the address to open is the issuer');
      assert.ok(out.includes('  Launcher:          http://localhost:3000/launcher\n'));
      assert.ok(out.includes('  Sample app:        http://localhost:3000/sample-app/launch.html?iss=http%3A%2F%2Flocalhost%3A3000%2Ffhir\n'));

      const second = await run(['serve'], { ...env, DATA_DIR: join(cwd, 'data-other'), PORT: new URL(address).port }, cwd);
      assert.deepEqual([second.code, second.stderr], [1, `Failed: port ${new URL(address).port} on localhost is in use by another process (another server?): stop it, or set PORT to a free port\n`]);
      assert.ok(!existsSync(join(cwd, 'data-other')), 'the busy port is found before the database is created');

      const third = await run(['serve'], env, cwd);
      assert.equal(third.code, 1);
      assert.match(third.stderr, /^The embedded database in .+ is in use by process \d+\. It serves one process at a time; stop that process, or set DATABASE_URL to run several processes on Postgres\.\n$/);

      const user = await run(['users', 'create', '--username', 'late', '--fhir-user', 'Practitioner/late', '--name', 'Late', '--password-stdin'], env, cwd, 'late-password-1\n');
      assert.equal(user.code, 1);
      assert.match(user.stderr, /^Failed: the embedded database in .+ is in use by process \d+, a running server most likely\. Stop it and run this command again, or do this through the running server's admin API \(http:\/\/localhost:3000\/admin\/api, with ADMIN_TOKEN; its OpenAPI document is at \/admin\/api\/openapi\.json\)\n$/);

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

  it('operator commands: clients, users, patients import, launch create, audit export and verify', async () => {
    const env = { DATA_DIR: join(cwd, 'data-ops'), LOG_LEVEL: 'warn' };
    const created = await run(['clients', 'create', JSON.stringify({ client_id: 'cli-app', client_name: 'CLI App', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'system/*.rs' })], env, cwd);
    assert.equal(created.code, 0, created.stderr);
    const client = JSON.parse(created.stdout) as { client_id: string; client_secret: string };
    assert.equal(client.client_id, 'cli-app');
    assert.match(client.client_secret, /^[A-Za-z0-9_-]{43}$/);
    const invalid = await run(['clients', 'create', JSON.stringify({ grant_types: ['client_credentials'], token_endpoint_auth_method: 'none' })], env, cwd);
    assert.equal(invalid.code, 1);
    assert.equal(invalid.stderr, 'Failed: token_endpoint_auth_method: none cannot be used with client_credentials; backend services authenticate with private_key_jwt\n');
    const listed = await run(['clients', 'list'], env, cwd);
    assert.deepEqual(listed.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { client_id: string }).client_id), ['cli-app']);

    const onCommandLine = await run(['users', 'create', '--username', 'ops', '--password', 'ops-password-1', '--fhir-user', 'Practitioner/ops', '--name', 'Ops Person'], env, cwd);
    assert.equal(onCommandLine.code, 2);
    assert.match(onCommandLine.stderr, /^--password is not accepted: a password on the command line is visible to other users of the machine and kept in shell history\. Type it when asked, or pipe it in with --password-stdin\n/);
    const short = await run(['users', 'create', '--username', 'ops', '--password-stdin', '--fhir-user', 'Practitioner/ops', '--name', 'Ops Person'], env, cwd, 'short\n');
    assert.deepEqual([short.code, short.stderr], [1, 'Failed: password: must have at least 10 characters\n']);
    const user = await run(['users', 'create', '--username', 'ops', '--password-stdin', '--fhir-user', 'Practitioner/ops', '--name', 'Ops Person', '--role', 'clinician'], env, cwd, 'ops-password-1\n');
    assert.equal(user.code, 0, user.stderr);
    assert.equal((JSON.parse(user.stdout) as { username: string }).username, 'ops');

    const file = join(cwd, 'patients.ndjson');
    await writeFile(file, `${JSON.stringify({ resourceType: 'Patient', id: 'cli-p1', name: [{ family: 'Cli' }] })}\n${JSON.stringify({ resourceType: 'Encounter', id: 'cli-e1', status: 'finished', class: { code: 'AMB' }, subject: { reference: 'Patient/cli-p1' } })}\n`);
    const imported = await run(['patients', 'import', file], env, cwd);
    assert.equal(imported.stdout, 'Imported 1 patients and 1 encounters.\n', imported.stderr);

    const launch = await run(['launch', 'create', '--patient', 'cli-p1', '--encounter', 'cli-e1', '--client', 'cli-app'], env, cwd);
    assert.match(launch.stdout, /^[A-Za-z0-9_-]{32}\n$/, launch.stderr);

    const exported = await run(['audit', 'export'], env, cwd);
    const events = exported.stdout.trim().split('\n').map((l) => JSON.parse(l) as { resourceType: string; subtype: { code: string }[] });
    assert.ok(events.every((e) => e.resourceType === 'AuditEvent'));
    assert.deepEqual(events.map((e) => e.subtype[0]!.code).filter((t) => t !== 'admin.request'), ['client.created', 'user.created', 'patient.imported', 'launch.created']);
    const verified = await run(['audit', 'verify'], env, cwd);
    assert.equal(verified.code, 0, verified.stderr);
    assert.match(verified.stdout, /^Audit trail intact: \d+ events in \d+ chains\.\nStored checkpoints: none\.\n$/);
    // After going back to a release from before keyed chains (test/audit-integrity.test.ts has the refusal it lifts).
    const allowing = await run(['audit', 'verify', '--allow-unkeyed-chains'], env, cwd);
    assert.deepEqual([allowing.code, allowing.stdout], [0, verified.stdout], allowing.stderr);
  });

  it('payer commands: clients update sets a payer role, attribution import and list, report patient-access as CSV and JSON', async () => {
    const env = { DATA_DIR: join(cwd, 'data-payer'), LOG_LEVEL: 'warn' };
    const created = await run(['clients', 'create', JSON.stringify({ client_id: 'clinic', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'system/*.rs' })], env, cwd);
    assert.equal(created.code, 0, created.stderr);
    const npi = 'http://hl7.org/fhir/sid/us-npi|1234567893';
    const updated = await run(['clients', 'update', 'clinic', JSON.stringify({ payer_role: 'provider-access', organization_identifiers: [npi] })], env, cwd);
    assert.equal(updated.code, 0, updated.stderr);
    assert.deepEqual((JSON.parse(updated.stdout) as { organization_identifiers: string[] }).organization_identifiers, [npi]);
    const refused = await run(['clients', 'update', 'clinic', JSON.stringify({ payer_role: 'provider-access', organization_identifiers: [] })], env, cwd);
    assert.deepEqual([refused.code, refused.stderr], [1, 'Failed: organization_identifiers: a provider-access client needs the identifier (NPI or TIN) of the organisation it acts for\n']);

    const file = join(cwd, 'group.json');
    await writeFile(file, JSON.stringify({ resourceType: 'Group', id: 'clinic-list', identifier: [{ system: 'http://hl7.org/fhir/sid/us-npi', value: '1234567893' }], member: [{ entity: { reference: 'Patient/a' } }, { entity: { reference: 'Patient/b' }, inactive: true }] }));
    const imported = await run(['attribution', 'import', file], env, cwd);
    assert.equal(imported.stdout, `Imported attribution list clinic-list of ${npi}: 2 members.\n`, imported.stderr);
    assert.equal((await run(['attribution', 'import', file], env, cwd)).stdout, `Replaced attribution list clinic-list of ${npi}: 2 members.\n`);
    const listed = await run(['attribution', 'list'], env, cwd);
    assert.deepEqual(JSON.parse(listed.stdout.trim()), { ...(JSON.parse(listed.stdout.trim()) as object), id: 'clinic-list', organization: npi, members: 2, attributed_now: 1 });

    const csv = await run(['report', 'patient-access', '--year', '2025'], env, cwd);
    assert.equal(csv.stdout, 'year,client_id,client_name,unique_patients,patients_transferred_more_than_once,transfers\r\n2025,*,all Patient Access apps,0,0,0\r\n', csv.stderr);
    const json = await run(['report', 'patient-access', '--year', '2025', '--format', 'json'], env, cwd);
    assert.deepEqual(JSON.parse(json.stdout), { year: 2025, unique_patients: 0, patients_transferred_more_than_once: 0, transfers: 0, apps: [] });
    const noYear = await run(['report', 'patient-access'], env, cwd);
    assert.equal(noYear.code, 2);
    assert.match(noYear.stderr, /^report patient-access needs --year YYYY\n/);
  });

  it('audit checkpoint prints a signed checkpoint to keep elsewhere; audit verify --checkpoint finds the newest rows deleted after it', async () => {
    const dataDir = join(cwd, 'data-audit');
    const env = { DATA_DIR: dataDir, LOG_LEVEL: 'warn' };
    assert.equal((await run(['users', 'create', '--username', 'cp', '--password-stdin', '--fhir-user', 'Practitioner/cp', '--name', 'CP'], env, cwd, 'cp-password-1')).code, 0);
    const signed = await run(['audit', 'checkpoint'], env, cwd);
    assert.equal(signed.code, 0, signed.stderr);
    const checkpoint = JSON.parse(signed.stdout) as { id: string; jws: string; header: { alg: string; kid: string; typ: string }; payload: { total: number; chains: { chain: string; seq: string; hash: string; count: number }[] }; key: { kid: string; kty: string } };
    assert.match(checkpoint.jws, /^[\w-]+\.[\w-]+\.[\w-]+$/);
    assert.deepEqual([checkpoint.header.alg, checkpoint.header.typ, checkpoint.key.kid, checkpoint.key.kty], ['RS256', 'audit-checkpoint+jwt', checkpoint.header.kid, 'RSA']);
    assert.equal(checkpoint.payload.chains.length, 1, 'one chain per command run');
    const file = join(cwd, 'checkpoint.json');
    await writeFile(file, signed.stdout);

    const intact = await run(['audit', 'verify', '--checkpoint', file], env, cwd);
    assert.equal(intact.code, 0, intact.stderr);
    const total = checkpoint.payload.total;
    assert.match(intact.stdout, new RegExp(`^Audit trail intact: ${total} events in 1 chains\\.\\nStored checkpoints: 1, all signed by our keys and matched; the newest \\(\\S+\\) covers ${total} events\\.\\ncheckpoint ${file.replaceAll('.', '\\.')}: signed by our key and matched \\(\\S+, ${total} events in 1 chains\\)\\.\\n$`));

    // Someone with write access to the database removes the newest event, and the stored checkpoints with it.
    const [newest] = checkpoint.payload.chains;
    const database = await openDatabase({ kind: 'pglite', dataDir });
    const { db } = database;
    try {
      await sql`alter table audit_events disable trigger audit_events_no_change`.execute(db);
      await sql`alter table audit_checkpoints disable trigger audit_checkpoints_no_change`.execute(db);
      await sql`delete from audit_events where seq = ${newest!.seq}`.execute(db);
      await sql`delete from audit_checkpoints`.execute(db);
    } finally {
      await database.close();
    }
    const unnoticed = await run(['audit', 'verify'], env, cwd);
    assert.equal(unnoticed.code, 0, 'without a checkpoint, rows removed from the end leave no trace');
    const found = await run(['audit', 'verify', '--checkpoint', file], env, cwd);
    assert.equal(found.code, 1);
    assert.equal(found.stdout, `Audit trail intact: ${total - 1} events in 1 chains.\n`);
    assert.equal(found.stderr, `Audit checkpoint ${file}: the trail does not match it: event ${newest!.seq}, the head of chain ${JSON.stringify(newest!.chain)} (${total} events) it names, is no longer in the trail (rows were removed).\n`);

    await writeFile(join(cwd, 'not-a-checkpoint.json'), '{"hello": "world"}');
    const bad = await run(['audit', 'verify', '--checkpoint', join(cwd, 'not-a-checkpoint.json')], env, cwd);
    assert.deepEqual([bad.code, bad.stderr], [1, `Failed: ${join(cwd, 'not-a-checkpoint.json')} holds no checkpoint: expected the JSON that audit checkpoint prints, or a compact JWS\n`]);
  });

  it('sandbox reset: its help, refused outside a sandbox, and on a sandbox database the pack back in place of what apps wrote', async () => {
    const help = await run(['sandbox', '--help'], {}, cwd);
    assert.deepEqual([help.code, help.stdout], [0, `${SANDBOX_USAGE}\n`]);
    const unknown = await run(['sandbox', 'wipe'], {}, cwd);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /^unknown sandbox command "wipe" \(expected reset\)\n/);

    const dataDir = join(cwd, 'data-sandbox');
    const refused = await run(['sandbox', 'reset'], { DATA_DIR: dataDir, SANDBOX: 'false', LOG_LEVEL: 'warn' }, cwd);
    assert.deepEqual([refused.code, refused.stdout, refused.stderr], [1, '', 'Failed: sandbox reset works on a sandbox only, and this server is not one (SANDBOX=false). Set SANDBOX=true if this database is a sandbox\'s.\n']);
    assert.ok(!existsSync(dataDir), 'refused before the database is opened');

    const database = await openDatabase({ kind: 'pglite', dataDir });
    try {
      await migrateToLatest(database.db);
      await database.db.insertInto('fhir_resources').values({ resource_type: 'Observation', id: 'written-by-an-app', version_id: '1', resource: JSON.stringify({ resourceType: 'Observation', id: 'written-by-an-app' }) }).execute();
    } finally {
      await database.close();
    }
    const reset = await run(['sandbox', 'reset'], { DATA_DIR: dataDir, LOG_LEVEL: 'warn' }, cwd);
    const pack = generateSandboxPack();
    assert.deepEqual([reset.code, reset.stderr, reset.stdout], [0, '', `Sandbox data restored: ${pack.resources.length} FHIR resources; ${pack.patients.length} patients and ${pack.encounters.length} encounters in the patient directory.\n`]);
    const after = await openDatabase({ kind: 'pglite', dataDir });
    try {
      const rows = await after.db.selectFrom('fhir_resources').select(['resource_type', 'id']).execute();
      assert.equal(rows.length, pack.resources.length);
      assert.ok(!rows.some((r) => r.id === 'written-by-an-app'), 'the app\'s write is gone');
      assert.equal((await after.db.selectFrom('patients').select('id').execute()).length, pack.patients.length);
      const events = await after.db.selectFrom('audit_events').select(['type', 'outcome', 'actor_type', 'actor_id', 'details']).where('type', '=', 'sandbox.reset').execute();
      assert.deepEqual(events, [{ type: 'sandbox.reset', outcome: 'success', actor_type: 'admin', actor_id: 'cli', details: { resources: pack.resources.length, patients: pack.patients.length, encounters: pack.encounters.length } }]);
    } finally {
      await after.close();
    }
    // The trail, that event included, verifies under the sandbox's key.
    const verified = await run(['audit', 'verify'], { DATA_DIR: dataDir, LOG_LEVEL: 'warn' }, cwd);
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
  });
});
