import assert from 'node:assert/strict';
import { it } from 'node:test';

import { PGlite } from '@electric-sql/pglite';
import { Kysely, sql } from 'kysely';
import { PGliteDialect } from 'kysely-pglite-dialect';

import { migrateToLatest, withTransactionMigrationLock } from '../src/db/migrate.js';
import type { DB } from '../src/db/schema.js';
import { importDirectory, patientSearch, searchPatients } from '../src/directory/patients.js';
import { describeEachDatabase } from './helpers/databases.js';

interface PlanNode {
  readonly 'Node Type': string;
  readonly 'Relation Name'?: string;
  readonly 'Index Name'?: string;
  readonly Plans?: readonly PlanNode[];
}

function nodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)];
}

/**
 * The patient picker searches the directory at every page it shows a clinician. On an EHR's directory (tens of
 * thousands of patients here) each kind of search must be served by an index, never by reading every patient:
 * words by the trigram index (pg_trgm), a birth date by its own, the first page by name.
 */
describeEachDatabase('the directory search', (ctx, kind) => {
  const PATIENTS = 5_000;

  it('the directory has its search indexes, on Postgres and on the embedded database', async () => {
    const { rows } = await sql<{ indexname: string; indexdef: string }>`select indexname, indexdef from pg_indexes where tablename = 'patients' order by indexname`.execute(ctx.current.database.db);
    const byName = Object.fromEntries(rows.map((r) => [r.indexname, r.indexdef]));
    assert.match(byName.patients_search_text ?? '', /USING gin \(search_text (\w+\.)?gin_trgm_ops\)/);
    assert.match(byName.patients_display_name ?? '', /\(display_name, id\)/);
    assert.match(byName.patients_birth_date_prefix ?? '', /\(birth_date text_pattern_ops\)/);
  });

  it('finds patients by name, identifier and birth date among many, each by an index', async () => {
    const db = ctx.current.database.db;
    await importDirectory(db, [
      { resourceType: 'Patient', id: 'okafor', name: [{ family: 'Okafor', given: ['Daniel'] }], birthDate: '1962-03-14', identifier: [{ system: 'urn:mrn', value: 'MRN-77001' }] },
      { resourceType: 'Patient', id: 'fernandez', name: [{ family: 'Fernández', given: ['Lucía'] }], birthDate: '1990-07-02' },
    ], []);
    // Many more, as an import would write them (generated in the database: quicker).
    await insertPatients(db, 1, PATIENTS);
    await sql`analyze patients`.execute(db);

    assert.deepEqual((await searchPatients(db, 'okafor')).map((p) => p.id), ['okafor']);
    assert.deepEqual((await searchPatients(db, 'daniel mrn-77001')).map((p) => p.id), ['okafor']);
    assert.deepEqual((await searchPatients(db, 'Okafor, Daniel')).map((p) => p.id), ['okafor'], 'family name, comma, given name');
    assert.deepEqual((await searchPatients(db, 'lucía fernández')).map((p) => p.id), ['fernandez']);
    assert.deepEqual((await searchPatients(db, '1962-03-14')).map((p) => p.id), ['okafor']);
    assert.deepEqual((await searchPatients(db, 'mrn-100042')).map((p) => p.id), ['p-42']);
    assert.equal((await searchPatients(db, '')).length, 25);
    assert.deepEqual((await searchPatients(db, '50%')).map((p) => p.id), [], 'LIKE wildcards are searched literally');

    if (kind !== 'postgres') return; // PGlite's planner is Postgres's; its plans are checked once, here, on more rows.
    // The planner reads a table of a few thousand rows whole; at 100,000 it must not (measured on 200,000: a word's
    // search took 2.1 ms by the trigram index, 55 ms by reading every row).
    await insertPatients(db, PATIENTS + 1, 100_000);
    await sql`analyze patients`.execute(db);
    const plan = async (query: string): Promise<PlanNode[]> => {
      const compiled = patientSearch(db, query).compile();
      const text = compiled.sql.replace(/\$(\d+)/g, (_m, n: string) => literal(compiled.parameters[Number(n) - 1]));
      const { rows } = await sql<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>`explain (format json) ${sql.raw(text)}`.execute(db);
      return nodes(rows[0]!['QUERY PLAN'][0].Plan);
    };
    for (const [query, index] of [['okafor', 'patients_search_text'], ['daniel mrn-77001', 'patients_search_text'], ['1962-03-14', 'patients_birth_date_prefix'], ['1962-03', 'patients_birth_date_prefix'], ['', 'patients_display_name']] as const) {
      const steps = await plan(query);
      assert.ok(steps.some((s) => s['Index Name'] === index), `"${query}" by ${index}: ${JSON.stringify(steps.map((s) => [s['Node Type'], s['Index Name']]))}`);
      assert.ok(!steps.some((s) => s['Node Type'] === 'Seq Scan'), `"${query}" reads no patient it does not need`);
    }
  });
});

it('a database without pg_trgm migrates all the same, and its search reads the directory whole', async () => {
  // PGlite without the extension loaded: `create extension pg_trgm` fails there, as where Postgres lacks contrib.
  const db = new Kysely<DB>({ dialect: withTransactionMigrationLock(new PGliteDialect(new PGlite())) });
  try {
    await migrateToLatest(db);
    const { rows } = await sql<{ indexname: string }>`select indexname from pg_indexes where tablename = 'patients' order by indexname`.execute(db);
    assert.deepEqual(rows.map((r) => r.indexname), ['patients_birth_date_prefix', 'patients_display_name', 'patients_pkey']);
    await importDirectory(db, [{ resourceType: 'Patient', id: 'okafor', name: [{ family: 'Okafor', given: ['Daniel'] }] }], []);
    assert.deepEqual((await searchPatients(db, 'okafor')).map((p) => p.id), ['okafor']);
  } finally {
    await db.destroy();
  }
});

/** Patients `p-<from>` to `p-<to>`, made in the database as an import would store them. */
async function insertPatients(db: Kysely<DB>, from: number, to: number): Promise<void> {
  await sql`insert into patients (id, resource, display_name, search_text, birth_date, gender)
    select 'p-' || i, jsonb_build_object('resourceType', 'Patient', 'id', 'p-' || i), 'Patient ' || lpad(i::text, 6, '0'),
           'patient ' || lpad(i::text, 6, '0') || ' ' || md5(i::text) || ' mrn-' || (100000 + i), (date '1900-01-01' + (i % 10000))::text, 'unknown'
    from generate_series(${from}::int, ${to}::int) as i`.execute(db);
}

/** A parameter as an SQL literal, for EXPLAIN of a statement kysely compiled (test data only). */
function literal(value: unknown): string {
  if (typeof value === 'number') return String(value);
  return `'${String(value).replace(/'/g, "''")}'`;
}
