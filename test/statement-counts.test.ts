import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import { PGlite } from '@electric-sql/pglite';
import type { FastifyInstance } from 'fastify';
import { Kysely, PostgresDialect, sql, type LogEvent } from 'kysely';
import { PGliteDialect } from 'kysely-pglite-dialect';
import pg from 'pg';

import type { Database } from '../src/db/database.js';
import { migrateToLatest } from '../src/db/migrate.js';
import type { DB } from '../src/db/schema.js';
import { GroupedWrites } from '../src/oidc/adapters/grouped-writes.js';
import { GroupedConsumes, PayloadAdapter } from '../src/oidc/adapters/payload.js';
import { SecretBox } from '../src/security/secret-box.js';
import { clientAssertion, clientKey, JWT_BEARER } from './helpers/assertions.js';
import { testApp, TEST_ISSUER } from './helpers/app.js';
import { basicAuth, form, registerClient } from './helpers/clients.js';
import { createTestDatabase, databaseKinds, type TestDatabase } from './helpers/databases.js';
import { consent, exchange, login, pickPatient, REDIRECT_URI, startAuthorization, title, tokenRequest } from './helpers/flow.js';

/**
 * How many SQL statements and transactions each hot operation costs, counted on the database connection
 * (every statement kysely sends, `begin`/`commit` included), after the audit has been written. The counts
 * are the contract of the performance work (issue 15): a change that adds a statement to one of these paths
 * fails here and must say why. Lower them here when a change removes one.
 */

interface Counts {
  statements: number;
  transactions: number;
}

class StatementCounter {
  #statements = 0;
  #transactions = 0;

  readonly log = (event: LogEvent): void => {
    if (event.level !== 'query') return;
    const text = event.query.sql.trim().toLowerCase();
    if (text === 'begin' || text.startsWith('start transaction') || text.startsWith('begin ')) this.#transactions++;
    else if (text !== 'commit' && text !== 'rollback') this.#statements++;
    if (process.env.SHOW_SQL) process.stderr.write(`SQL ${event.query.sql.replace(/\s+/g, ' ').slice(0, 60)} ${JSON.stringify(event.query.parameters).slice(0, 200)}\n`);
  };

  reset(): void {
    this.#statements = 0;
    this.#transactions = 0;
  }

  get counts(): Counts {
    return { statements: this.#statements, transactions: this.#transactions };
  }
}

/** A database whose every statement the counter sees: the same SQL and schema the server runs on. */
async function countedDatabase(kind: 'pglite' | 'postgres', counter: StatementCounter): Promise<{ database: Database; drop: () => Promise<void> }> {
  if (kind === 'pglite') {
    const pglite = new PGlite();
    const db = new Kysely<DB>({ dialect: new PGliteDialect(pglite), log: counter.log });
    await migrateToLatest(db);
    return { database: { db, kind, poolStats: () => undefined, close: () => db.destroy() }, drop: () => db.destroy() };
  }
  const test: TestDatabase = await createTestDatabase('postgres');
  await test.database.close();
  const pool = new pg.Pool({ connectionString: test.url, max: 5 });
  // pg-pool ends its idle connections without waiting for them to close: the drop that follows (with force) may
  // end one first, and the pool reports that as an 'error' event, uncaught without a listener (the server's
  // pools have one; src/db/pool.ts).
  pool.on('error', () => undefined);
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }), log: counter.log });
  return {
    database: { db, kind, poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }), close: () => db.destroy() },
    async drop() {
      await db.destroy();
      await test.drop();
    },
  };
}

const SECRET = randomBytes(32).toString('base64url');
const SCOPE = 'system/Patient.rs';
const TOKEN_URL = `${TEST_ISSUER}/token`;

for (const kind of databaseKinds()) {
  describe(`SQL statements per operation [${kind}]`, () => {
    const counter = new StatementCounter();
    let app: FastifyInstance;
    let drop: () => Promise<void>;
    const rs384 = clientKey('RS384');

    before(async () => {
      const counted = await countedDatabase(kind, counter);
      drop = counted.drop;
      // CLIENT_CACHE_SECONDS as deployed (a client read once per 30 s), warmed below before counting.
      app = await testApp(counted.database, { SEED_DEMO: 'true', CLIENT_CACHE_SECONDS: '30' });
      await registerClient(app, { client_id: 'backend', grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'client_secret_basic', client_secret: SECRET, scope: SCOPE });
      await registerClient(app, { client_id: 'asymmetric', grant_types: ['client_credentials'], response_types: [], token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [(await rs384).jwk] }, scope: SCOPE });
      await registerClient(app, { client_id: 'app', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'], scope: 'openid fhirUser launch/patient patient/*.rs offline_access' });
    });
    after(async () => {
      await app.close();
      await drop();
    });

    /** The statements and transactions of one operation, its audit included; the operation's result returned. */
    async function count<T>(operation: () => Promise<T>): Promise<{ result: T; counts: Counts }> {
      await app.runtime.audit.flush();
      counter.reset();
      const result = await operation();
      await app.runtime.audit.flush();
      return { result, counts: counter.counts };
    }
    const basic = () => tokenRequest(app, { grant_type: 'client_credentials', scope: SCOPE }, { authorization: basicAuth('backend', SECRET) });
    const signed = async () => tokenRequest(app, { grant_type: 'client_credentials', scope: SCOPE, client_assertion_type: JWT_BEARER, client_assertion: await clientAssertion(await rs384, { clientId: 'asymmetric', audience: TOKEN_URL }) });

    it('the counter sees each statement and each transaction', async () => {
      const { counts } = await count(() => app.runtime.database.db.transaction().execute(async (trx) => {
        await sql`select 1`.execute(trx);
        await sql`select 2`.execute(trx);
      }));
      assert.deepEqual(counts, { statements: 2, transactions: 1 });
    });

    it('client_credentials with a client secret', async () => {
      assert.equal((await basic()).statusCode, 200); // warms the client cache
      const { result, counts } = await count(basic);
      assert.equal(result.statusCode, 200);
      assert.deepEqual(counts, { statements: 1, transactions: 0 }, 'the token and its audit event, one statement');
    });

    it('client_credentials with a private_key_jwt assertion (RS384)', async () => {
      assert.equal((await signed()).statusCode, 200);
      const { result, counts } = await count(signed);
      assert.equal(result.statusCode, 200);
      assert.deepEqual(counts, { statements: 2, transactions: 0 }, 'the assertion replay record; the token with its audit event');
    });

    it('introspection of an active token', async () => {
      const token = (await basic()).json<{ access_token: string }>().access_token;
      const introspect = () => app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('backend', SECRET) }, payload: form({ token }) });
      const { result, counts } = await count(introspect);
      assert.equal(result.json<{ active: boolean }>().active, true);
      assert.deepEqual(counts, { statements: 2, transactions: 0 }, 'one shared lookup for the three token kinds, the audit event');
      const again = await count(introspect);
      assert.equal(again.result.json<{ active: boolean }>().active, true);
      assert.deepEqual(again.counts, { statements: 1, transactions: 0 }, 'the same introspection again within the audit window: the lookup; the event is counted in its window');
    });

    // PGlite runs each statement on this thread: no request moves on while one is in flight, so none can join it.
    it('ten client_credentials requests at once share their token writes (group commit)', { skip: kind === 'pglite' ? 'PGlite runs statements one at a time on this thread' : false }, async () => {
      assert.equal((await basic()).statusCode, 200);
      const { result, counts } = await count(() => Promise.all(Array.from({ length: 10 }, basic)));
      assert.deepEqual(result.map((r) => r.statusCode), Array(10).fill(200));
      // One statement per token and one per audit row would be 20; they go together, and in batches.
      assert.ok(counts.statements <= 4, `${counts.statements} statements for 10 tokens and their audit events`);
    });

    it('ten introspections of one token at once: their lookups shared, their audit in the minute\'s row', { skip: kind === 'pglite' ? 'PGlite runs statements one at a time on this thread' : false }, async () => {
      const token = (await basic()).json<{ access_token: string }>().access_token;
      const introspect = () => app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('backend', SECRET) }, payload: form({ token }) });
      const rows = async () => Number((await app.runtime.database.db.selectFrom('audit_events').select((eb) => eb.fn.countAll().as('n')).where('type', '=', 'token.introspected').executeTakeFirstOrThrow()).n);
      assert.equal((await introspect()).json<{ active: boolean }>().active, true, 'one first, which opens the minute\'s window (or joins it)');
      await app.runtime.audit.flush();
      const before = await rows();
      const { result, counts } = await count(() => Promise.all(Array.from({ length: 10 }, introspect)));
      assert.deepEqual(result.map((r) => r.json<{ active: boolean }>().active), Array(10).fill(true));
      // One lookup for the ten (or two, as they arrive), no audit row: they are counted in the window the first
      // introspection opened (AuditLog.recordRepeating), written as one row when it ends. Twenty before.
      assert.ok(counts.statements <= 2, `${counts.statements} statements for 10 introspections`);
      assert.equal((await rows()) - before, 0, 'all ten counted in the window, none written yet');
    });

    it('saves made together go together: ten in one tick are one statement', async () => {
      const writes = new GroupedWrites(app.runtime.database.db);
      const box = new SecretBox(randomBytes(32));
      const adapter = new PayloadAdapter(app.runtime.database.db, box, 'AccessToken', undefined, writes);
      const { counts } = await count(() => Promise.all(Array.from({ length: 10 }, (_, i) => adapter.upsert(`grouped-${i}`, { n: i }, 60))));
      assert.deepEqual(counts, { statements: 1, transactions: 0 }, 'the ten together');
    });

    it('authorization code exchange, then refresh', async () => {
      const flow = await startAuthorization(app, { client_id: 'app', scope: 'openid fhirUser launch/patient patient/*.rs offline_access' });
      await login(flow, 'patient', 'patient-demo');
      await consent(flow);
      const { result: exchanged, counts: exchangeCounts } = await count(() => exchange(app, flow));
      assert.equal(exchanged.statusCode, 200, exchanged.body);
      // Before: 3, the consumption a statement of its own between the two.
      assert.deepEqual(exchangeCounts, { statements: 2, transactions: 0 }, 'code exchange: the code with its grant, launch context and user; its consumption, the two tokens and the context touched with the audit event');
      const refresh = exchanged.json<{ refresh_token: string }>().refresh_token;
      const { result: refreshed, counts: refreshCounts } = await count(() => tokenRequest(app, { grant_type: 'refresh_token', refresh_token: refresh, client_id: 'app' }));
      assert.equal(refreshed.statusCode, 200, refreshed.body);
      assert.deepEqual(refreshCounts, { statements: 2, transactions: 0 }, 'refresh: the refresh token with its grant, launch context and user; its consumption, the two tokens and the grant and its context renewed with the audit event');
    });

    it('ten consumptions of one code in one tick: one statement, exactly one of them flips it', async () => {
      const box = new SecretBox(randomBytes(32));
      const consumes = new GroupedConsumes(app.runtime.database.db);
      const adapter = new PayloadAdapter(app.runtime.database.db, box, 'AccessToken', undefined, new GroupedWrites(app.runtime.database.db), consumes);
      await adapter.upsert('one-code', { n: 1 }, 60);
      await adapter.upsert('other-code', { n: 2 }, 60);
      const ids = (id: string) => [box.bearerId(id)];
      const { result, counts } = await count(() => Promise.all([...Array.from({ length: 9 }, () => consumes.consume('AccessToken', ids('one-code'))), consumes.consume('AccessToken', ids('other-code')), consumes.consume('AccessToken', ids('no-such-code'))]));
      assert.deepEqual(result, [true, false, false, false, false, false, false, false, false, true, false]);
      assert.deepEqual(counts, { statements: 1, transactions: 0 });
      assert.deepEqual(await consumes.consume('AccessToken', ids('one-code')), false, 'and used it stays');
    });

    // Requests that arrive while a statement of their kind is in flight join the next one (src/db/batched.ts).
    it('ten refreshes at once share their lookups, consumptions, token writes, grant renewals and audit events', { skip: kind === 'pglite' ? 'PGlite runs statements one at a time on this thread' : false }, async () => {
      const refreshTokens: string[] = [];
      for (let i = 0; i < 10; i++) {
        const flow = await startAuthorization(app, { client_id: 'app', scope: 'openid fhirUser launch/patient patient/*.rs offline_access' });
        await login(flow, 'patient', 'patient-demo');
        await consent(flow);
        refreshTokens.push((await exchange(app, flow)).json<{ refresh_token: string }>().refresh_token);
      }
      const { result, counts } = await count(() => Promise.all(refreshTokens.map((token) => tokenRequest(app, { grant_type: 'refresh_token', refresh_token: token, client_id: 'app' }))));
      assert.deepEqual(result.map((r) => r.statusCode), Array(10).fill(200));
      // Alone each is 2 statements (above): 20 for ten; together, the lookups, then the consumptions, tokens, grant
      // renewals and audit events, each one statement or a few as the requests arrive.
      assert.ok(counts.statements <= 7, `${counts.statements} statements for 10 refreshes`);
    });

    it('a launch by a signed-in user: the authorization with its consent, then the code exchange', async () => {
      const scope = 'openid fhirUser launch/patient patient/*.rs';
      const first = await startAuthorization(app, { client_id: 'app', scope });
      await login(first, 'patient', 'patient-demo');
      await consent(first);
      assert.equal((await exchange(app, first)).statusCode, 200);
      const before = first.browser.requests;
      const { result, counts } = await count(async () => {
        const again = await startAuthorization(app, { client_id: 'app', scope }, { browser: first.browser });
        if (title(again.page) !== `redirect ${again.page.location}`) await consent(again);
        return { flow: again, token: await exchange(app, again) };
      });
      assert.equal(result.token.statusCode, 200, result.token.body);
      assert.equal(first.browser.requests - before, 4, 'GET /auth, the consent page, POST consent, the resume that redirects to the app');
      // Per request: /auth 2 (the session with its grant for the app; the interaction and the session saved
      // together at its end; the user from the cache), the consent page 2 (the interaction with its session,
      // the user's patients with the names the page shows; the patient chosen for the user goes in the form,
      // sealed, not into the interaction), POST consent 2 (the interaction with its
      // session; the grant, its launch context and the decision with the audit event), the resume 2 (the session
      // with the interaction its cookie names, taken, and that interaction's grant; the code and the session under
      // its new id saved, the old one removed, at its end); the code exchange 2 (the code with its grant, context
      // and user; its consumption, the access token and the context's use with the audit event). Before (issue
      // 15's table): 45 statements and 7 requests.
      assert.deepEqual(counts, { statements: 10, transactions: 0 });
    });

    it('a launch by a clinician in a new browser: sign-in, the picker that asks for consent, the code exchange', async () => {
      const scope = 'openid fhirUser launch/patient patient/*.rs';
      const { result, counts } = await count(async () => {
        const flow = await startAuthorization(app, { client_id: 'app', scope });
        await login(flow, 'clinician', 'clinician-demo');
        await pickPatient(flow, 'demo-amy-shaw');
        await consent(flow);
        return { flow, token: await exchange(app, flow) };
      });
      assert.equal(result.token.statusCode, 200, result.token.body);
      assert.equal(result.flow.browser.requests, 5, 'GET /auth, the sign-in page, POST sign-in answered with the picker that asks for consent, POST consent, the resume');
      // /auth 1 (the interaction); the sign-in page 1 (the interaction); POST sign-in 7 (the interaction; the user
      // by name beside the attempt counted on the source address; the attempt counted on the account; after the
      // password, the account's count cleared, the source's given back and the last sign-in written together; the
      // sign-in saved in the interaction with the login.success event; the directory's patients for the picker,
      // which is its answer); POST consent 3, the resume 2 and the exchange 2, as in the clinician's signed-in
      // launch below, the sign-in going to oidc-provider with the consent. Before: 19 and 7 requests (the sign-in
      // resumed on its own: the interaction taken, the new interaction and the session saved; the picker a page of
      // its own, reading the new interaction); before that, 25.
      assert.deepEqual(counts, { statements: 16, transactions: 0 });
    });

    it("a clinician's launch: the patient picker asks for consent on the same page", async () => {
      const scope = 'openid fhirUser launch/patient patient/*.rs';
      const first = await startAuthorization(app, { client_id: 'app', scope });
      await login(first, 'clinician', 'clinician-demo');
      await pickPatient(first, 'demo-amy-shaw');
      await consent(first);
      assert.equal((await exchange(app, first)).statusCode, 200);
      const before = first.browser.requests;
      const { result, counts } = await count(async () => {
        const again = await startAuthorization(app, { client_id: 'app', scope }, { browser: first.browser });
        assert.match(title(again.page), /^Allow .* the record of the patient you choose/);
        await pickPatient(again, 'demo-amy-shaw');
        await consent(again);
        return { flow: again, token: await exchange(app, again) };
      });
      assert.equal(result.token.statusCode, 200, result.token.body);
      assert.equal((JSON.parse(result.token.body) as { patient?: string }).patient, 'demo-amy-shaw');
      assert.equal(first.browser.requests - before, 4, 'GET /auth, the picker with the consent choices, POST consent with the patient, the resume');
      // The patient's launch above with the picker in place of the consent page: the picker's page reads the
      // interaction and lists the directory's patients (2); POST consent reads the interaction, then the chosen
      // patient (that it is in the directory), then writes the grant, its launch context and the decision with the
      // audit event (3). Before, the picker's answer was a request of its own that showed the consent page: 13
      // statements and 5 browser requests; before that, a redirect to that page: 17 and 6.
      assert.deepEqual(counts, { statements: 11, transactions: 0 });
    });
  });
}
