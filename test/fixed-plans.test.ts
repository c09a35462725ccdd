import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { sql } from 'kysely';
import pg from 'pg';

// Every module of the server, so that every fixed statement is declared.
import '../src/app.js';
import { openDatabase } from '../src/db/database.js';
import { FIXED_PLAN_SETTINGS } from '../src/db/pool.js';
import { buildFixedQueries, fixedStatements } from '../src/db/statements.js';
import { designateRepresentative } from '../src/payer/representatives.js';
import { createTestDatabase, type TestDatabase } from './helpers/databases.js';

/**
 * The hot path's fixed statements are planned once per connection, without their values, and the plan is kept
 * while the tables grow (src/db/pool.ts). Each is planned here as the server's connections plan it, on tables
 * of a few thousand rows (where Postgres, left to itself, reads a token's table whole rather than make what it
 * counts as a hundred index probes), and its plan must read every table by an index on the key it is given,
 * join row by row in the order written, and never read all of one kind of row to find one.
 */
const directUrl = process.env.TEST_DATABASE_DIRECT_URL ?? process.env.TEST_DATABASE_URL;

interface PlanNode {
  readonly 'Node Type': string;
  readonly 'Relation Name'?: string;
  readonly 'Index Name'?: string;
  readonly 'Index Cond'?: string;
  readonly Plans?: readonly PlanNode[];
}

function nodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)];
}

describe('the plans of the fixed statements', { skip: directUrl ? false : 'needs TEST_DATABASE_URL (Postgres)' }, () => {
  let test: TestDatabase;
  let client: pg.Client;
  /** The settings of the fixed statements' connections, on this session or on every new one. */
  const settings = Object.entries(FIXED_PLAN_SETTINGS);

  before(async () => {
    test = await createTestDatabase('postgres', { adminUrl: directUrl });
    buildFixedQueries(test.database.db);
    client = new pg.Client({ connectionString: test.url });
    await client.connect();
    // Some of each kind of row the hot path reads, a few thousand in all, as statistics see them.
    for (const [model, count] of [['Grant', 800], ['Session', 400], ['Interaction', 200], ['AuthorizationCode', 100], ['AccessToken', 1000], ['RefreshToken', 500], ['ClientCredentials', 300]] as const) {
      await client.query(
        `insert into oidc_payloads (model, id, payload, grant_id, uid, expires_at)
         select $1, md5($1 || i), jsonb_build_object('accountId', 'user-' || (i % 300), 'clientId', 'client-' || (i % 100), 'scope', 'openid patient/*.rs launch/patient fhirUser offline_access'),
                case when $1 in ('AuthorizationCode', 'AccessToken', 'RefreshToken') then md5('Grant' || (i % 800 + 1)) end,
                case when $1 = 'Session' then md5('uid' || i) end, now() + interval '1 day'
         from generate_series(1, $2::int) as i`,
        [model, count],
      );
    }
    await client.query(`insert into users (id, username, fhir_user, name) select 'user-' || i, 'user' || i, 'Practitioner/p' || i, 'User ' || i from generate_series(0, 299) as i`);
    await client.query(`insert into clients (client_id, metadata, status) select 'client-' || i, '{}', 'active' from generate_series(0, 99) as i`);
    await client.query(`insert into grant_contexts (grant_id, fhir_base, patient, expires_at) select md5('Grant' || i), 'https://ehr.example/fhir', 'patient-' || i, now() + interval '1 day' from generate_series(1, 800) as i`);
    await client.query('analyze');
    for (const [setting, value] of settings) await client.query(`set ${setting} = ${value}`);
  });
  after(async () => {
    await client.end();
    await test.drop();
  });

  it('every one reads by index on the key it is given and joins row by row, in the order written', async () => {
    const texts = fixedStatements();
    // The token write and lookups, interactions, sessions, consumption, replay, audit, the gateway's door.
    assert.ok(texts.length >= 14, `${texts.length} fixed statements`);
    const faults: string[] = [];
    for (const [i, text] of texts.entries()) {
      await client.query(`prepare fixed_${i} as ${text}`);
      const { rows } = await client.query<{ n: number }>('select cardinality(parameter_types) as n from pg_prepared_statements where name = $1', [`fixed_${i}`]);
      const values = Array.from({ length: rows[0]!.n }, () => 'null').join(', ');
      const explained = await client.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>(`explain (format json) execute fixed_${i}${values ? `(${values})` : ''}`);
      for (const node of nodes(explained.rows[0]!['QUERY PLAN'][0].Plan)) {
        const where = `${node['Node Type']}${node['Relation Name'] ? ` on ${node['Relation Name']}` : ''}${node['Index Name'] ? ` using ${node['Index Name']}` : ''}`;
        if (node['Node Type'] === 'Seq Scan') faults.push(`${where}: ${text.slice(0, 120)}`);
        if (['Hash Join', 'Merge Join', 'Materialize'].includes(node['Node Type'])) faults.push(`${where}: ${text.slice(0, 120)}`);
        // The primary key (model, id) searched by its model alone: every row of that kind, read to find one.
        if (node['Index Name'] === 'oidc_payloads_pkey' && !/\bid = /.test(node['Index Cond'] ?? '')) faults.push(`${where} by ${node['Index Cond'] ?? 'nothing'}: ${text.slice(0, 120)}`);
      }
    }
    assert.deepEqual(faults, []);
  });

  it('with those settings on every connection, as a pooler in transaction mode can leave them, a partial unique index is still the arbiter of a designation made twice', async () => {
    // As a pooler that hands one server connection to every client leaves them: on every connection.
    const name = new URL(test.url!).pathname.slice(1);
    for (const [setting, value] of settings) await client.query(`alter database ${name} set ${setting} = ${value}`);
    const database = await openDatabase({ kind: 'postgres', url: test.url! }, { poolMax: 1, preparedStatements: false });
    try {
      const { rows } = await sql<{ plan_cache_mode: string }>`show plan_cache_mode`.execute(database.db);
      assert.deepEqual(rows, [{ plan_cache_mode: 'force_generic_plan' }]);
      await client.query(`insert into users (id, username, fhir_user, name) values ('rep', 'rep', 'RelatedPerson/rep', 'Rep')`);
      const designation = { userId: 'rep', patientId: 'patient-1', status: 'active', designatedBy: 'operator' } as const;
      // The partial unique index is the arbiter of the second designation, which is refused, not an error.
      assert.equal((await designateRepresentative(database.db, designation))?.status, 'active');
      assert.equal(await designateRepresentative(database.db, designation), undefined);
    } finally {
      await database.close();
      await client.query(`alter database ${name} reset all`);
    }
  });
});
