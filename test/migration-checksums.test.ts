import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { PACKAGE_ROOT } from '../src/paths.js';

/**
 * The SHA-256 of every migration that has landed. A landed migration may already have run on someone's
 * database, and kysely never runs it again: an edit would leave that database different from a fresh one,
 * silently. So a migration is frozen once it lands; a change is a new migration.
 *
 * To add a migration: put the file in migrations/, list it at the end of migrations/index.ts, and add its
 * name and checksum at the end of this list, in the same commit. The failing test prints the line to add;
 * or run `sha256sum migrations/<name>.ts` (the checksum is of the file with LF line endings, so a checkout
 * that converts them to CRLF agrees).
 */
const LANDED: Readonly<Record<string, string>> = {
  '2026-11-28T00-00-foundation': '70aa717c3894c57e666d382150c8e2f82a1a2b2e6be86ef6ab878b1697b43365',
  '2026-11-28T01-00-launch': 'f50dcbed69ce8035653031119c8f12dbda1afbc78996f958016a7e4ceee61237',
  '2026-11-28T02-00-audit': '5bbaf838d41c56bc931b546fcf710bd7be1a6395b4dc5a28e5ab4aacaa05f4f9',
  '2026-11-28T03-00-audit-chains': 'a4bbd6ec6c8f48e250e4b181fada5cd2ca229739776d45092d91e19e78063d49',
  '2026-12-01T00-00-bearer-hashes': 'e736a455336d5152c76a56c4ddaaf89f17aec0cf214beeff3c33fb7b24b56601',
  '2026-12-01T01-00-login-throttle': '026ce391d9d7fc6c8a512fd00f25abe88830e35f736396d2c8bd1cf1829d3176',
  '2026-12-01T02-00-audit-checkpoints': 'dfbd23f0b125050a4cd321380404ec511798408eac9728afe1dd877547abebc3',
  '2026-12-02T01-00-console-sessions': '6fb0e3416ac423d14453b63f2ca02eac2d8b3020be57478a4585c8857f998819',
  '2026-12-02T03-00-sandbox-resources': 'dcc74893ad61b7c1081df03cfd08b0b71321f2a6a37572e9ca44a598e8517694',
  '2026-12-02T04-00-launcher-options': '5afccb514c2fa3c6a88d2b6a66020f294dea31e13ebbf09d719b1aa86b21ed79',
  '2026-12-02T05-00-udap': '3f9b625a7cb184fd0dfa8af0460f1e17dd638a8e560272bf955d519865d40a97',
  '2026-12-02T06-00-payer': '86bb4f8f8205792d42c10957caef0c49833f9c707935043644d8eb3cef0bb48c',
  '2026-12-02T07-00-tiered-oauth': '161da4e8671de551aa8f30ee3c22b05eb907f268b63c378522f4413cc1704d03',
  '2026-12-02T08-00-audit-hash-index': '274b082839cdb16afa59256046688c40e495655a7a5ef9108f9f54283629ca5b',
  '2026-12-03T00-00-patient-search-index': '1b9fa6840f9bf157543530425e0b21182d6e0a0ff167c4799f40d9df7776bb48',
  '2026-12-03T01-00-single-use-check': 'f355d179ab10653307169846cec77b0ddd3cae4fc7f69affc15003609c782797',
  '2026-12-03T02-00-single-decision-check': '3ce894bc9a41122c4319cca48c4c834bf2c019704592821a8ef48c8774713e2e',
};

const MIGRATIONS_DIR = join(PACKAGE_ROOT, 'migrations');

/** The migration files by name (without .ts); index.ts lists them and is not one. */
async function migrationFiles(): Promise<string[]> {
  const entries = await readdir(MIGRATIONS_DIR, { withFileTypes: true });
  return entries.filter((e) => e.isFile() && e.name.endsWith('.ts') && e.name !== 'index.ts').map((e) => e.name.slice(0, -'.ts'.length)).sort();
}

async function checksum(name: string): Promise<string> {
  const text = (await readFile(join(MIGRATIONS_DIR, `${name}.ts`), 'utf8')).replaceAll('\r\n', '\n');
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

describe('migrations are frozen once landed', () => {
  it('no landed migration was edited or removed', async () => {
    const present = new Set(await migrationFiles());
    for (const [name, expected] of Object.entries(LANDED)) {
      assert.ok(present.has(name), `migrations/${name}.ts has landed and was removed; a landed migration stays (a change is a new migration)`);
      assert.equal(await checksum(name), expected, `migrations/${name}.ts has landed and was edited; revert it and make the change in a new migration`);
    }
  });

  it('every migration has its checksum in this file', async () => {
    for (const name of await migrationFiles()) {
      if (LANDED[name] !== undefined) continue;
      assert.fail(`migrations/${name}.ts has no checksum: add  '${name}': '${await checksum(name)}',  at the end of LANDED in test/migration-checksums.test.ts`);
    }
  });
});
