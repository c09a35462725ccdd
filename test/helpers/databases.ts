import { randomBytes } from 'node:crypto';
import { after, before, describe } from 'node:test';

import pg from 'pg';

import { openDatabase, openMemoryDatabase, type Database, type DatabaseKind } from '../../src/db/database.js';
import { migrateToLatest } from '../../src/db/migrate.js';

/**
 * Every database test runs on the embedded PGlite and, when TEST_DATABASE_URL names a Postgres server
 * (CI sets it), on a real Postgres too: a throw-away database per test file, dropped afterwards.
 * TEST_DATABASES=postgres (or pglite) runs one kind only.
 */
export function databaseKinds(): DatabaseKind[] {
  const all: DatabaseKind[] = process.env.TEST_DATABASE_URL ? ['pglite', 'postgres'] : ['pglite'];
  const only = process.env.TEST_DATABASES?.split(',').map((kind) => kind.trim()).filter(Boolean);
  if (!only?.length) return all;
  const unknown = only.filter((kind) => kind !== 'pglite' && kind !== 'postgres');
  if (unknown.length) throw new Error(`TEST_DATABASES: unknown kind ${unknown.join(', ')} (pglite, postgres)`);
  if (only.includes('postgres') && !process.env.TEST_DATABASE_URL) throw new Error('TEST_DATABASES names postgres but TEST_DATABASE_URL is not set');
  return all.filter((kind) => only.includes(kind));
}

export interface TestDatabase {
  readonly kind: DatabaseKind;
  readonly database: Database;
  /** Connection URL of the throw-away Postgres database (undefined on PGlite). */
  readonly url: string | undefined;
  drop(): Promise<void>;
}

/** Whether the test databases' Postgres connections prepare the fixed statements, as the server would: unless DATABASE_PREPARED_STATEMENTS=false (CI's pass through PgBouncer). */
export const PREPARED_STATEMENTS = process.env.DATABASE_PREPARED_STATEMENTS !== 'false';

/**
 * `adminUrl`: the Postgres server to create the database on, TEST_DATABASE_URL by default (CI's names the
 * pooler; a test that needs sessions of its own on Postgres itself passes TEST_DATABASE_DIRECT_URL).
 */
export async function createTestDatabase(kind: DatabaseKind, { migrate = true, adminUrl = process.env.TEST_DATABASE_URL } = {}): Promise<TestDatabase> {
  if (kind === 'pglite') {
    const database = await openMemoryDatabase();
    if (migrate) await migrateToLatest(database.db);
    return { kind, database, url: undefined, drop: () => database.close() };
  }
  if (!adminUrl) throw new Error('TEST_DATABASE_URL is not set');
  const name = `smart_auth_test_${randomBytes(6).toString('hex')}`;
  await adminQuery(adminUrl, `create database ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const database = await openDatabase({ kind: 'postgres', url: url.href }, { poolMax: 5, preparedStatements: PREPARED_STATEMENTS });
  if (migrate) await migrateToLatest(database.db);
  return {
    kind,
    database,
    url: url.href,
    async drop() {
      await database.close();
      await adminQuery(adminUrl, `drop database if exists ${name} with (force)`);
    },
  };
}

/** One statement on its own connection (create or drop a database). */
export async function adminQuery(url: string, text: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

export interface DatabaseContext {
  /** The database of the running suite; available inside tests and hooks. */
  readonly current: TestDatabase;
}

/**
 * Declares the suite once per database kind, with a fresh database created before and dropped after it.
 */
export function describeEachDatabase(title: string, body: (ctx: DatabaseContext, kind: DatabaseKind) => void, options: { migrate?: boolean } = {}): void {
  for (const kind of databaseKinds()) {
    describe(`${title} [${kind}]`, () => {
      let current: TestDatabase | undefined;
      const ctx: DatabaseContext = {
        get current() {
          if (!current) throw new Error('database not ready');
          return current;
        },
      };
      before(async () => {
        current = await createTestDatabase(kind, options);
      });
      after(async () => {
        await current?.drop();
      });
      body(ctx, kind);
    });
  }
}
