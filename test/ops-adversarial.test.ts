import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import pg from 'pg';

import { accessOfOpaqueToken } from '../src/grants/token-access.js';
import { testApp, TEST_ADMIN_TOKEN, TEST_ISSUER } from './helpers/app.js';
import { Browser, formAction, inputValue } from './helpers/browser.js';
import { createClient, form } from './helpers/clients.js';
import { createTestDatabase, type TestDatabase } from './helpers/databases.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization, tokenRequest } from './helpers/flow.js';

type Body = Record<string, unknown>;

/** Waits until `count` other backends of the database wait for a lock. */
async function waitForLockWaiters(client: pg.Client, count: number): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const { rows } = await client.query<{ n: string }>("select count(*) as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'");
    if (Number(rows[0]!.n) >= count) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.fail(`${count} backends never waited for a lock`);
}

// Interleaving two requests needs row locks held across them: Postgres only.
describe('a grant revoked while a refresh is in flight [postgres]', { skip: !process.env.TEST_DATABASE_URL }, () => {
  let database: TestDatabase;
  let app: FastifyInstance;
  before(async () => {
    // On Postgres itself: behind CI's pooler in transaction mode the revocation's statements queue in the pooler
    // rather than on the row lock, and the two requests cannot be interleaved as the test needs.
    database = await createTestDatabase('postgres', { adminUrl: process.env.TEST_DATABASE_DIRECT_URL ?? process.env.TEST_DATABASE_URL });
    app = await testApp(database.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN });
    await createClient(app, { client_id: 'race-app', client_name: 'Race App', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] });
  });
  after(async () => {
    await app.close();
    await database.drop();
  });

  it('leaves no access token the refresh wrote: the gateway refuses it as introspection does', async () => {
    const flow = await startAuthorization(app, { client_id: 'race-app', scope: 'user/Observation.rs offline_access' });
    await login(flow, 'clinician', 'clinician-demo');
    await consent(flow);
    const tokens = (await exchange(app, flow)).json<Body>();
    const grantId = (await app.runtime.database.db.selectFrom('grant_contexts').select('grant_id').executeTakeFirstOrThrow()).grant_id;

    // The clinician on the connected-apps page, ready to revoke.
    const browser = new Browser(app, TEST_ISSUER);
    const signIn = await browser.go('GET', '/account/apps');
    const page = await browser.go('POST', formAction(signIn.res.body, '/login'), { csrf: inputValue(signIn.res.body, 'csrf'), username: 'clinician', password: 'clinician-demo' });
    assert.match(page.res.body, /Race App/);

    // Hold the grant's context row so that the refresh's write (which touches it) waits after oidc-provider has
    // found the grant alive, and the revocation starts its deletes meanwhile.
    const side = new pg.Client({ connectionString: database.url });
    await side.connect();
    try {
      await side.query('begin');
      await side.query('select 1 from grant_contexts where grant_id = $1 for update', [grantId]);
      const refreshing = tokenRequest(app, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token as string, client_id: 'race-app' });
      await waitForLockWaiters(side, 1);
      const revoking = browser.send('POST', formAction(page.res.body, '/revoke'), { csrf: inputValue(page.res.body, 'csrf'), client_id: 'race-app' });
      await waitForLockWaiters(side, 2);
      await side.query('commit');
      const refreshed = await refreshing;
      assert.equal((await revoking).statusCode, 303);
      if (refreshed.statusCode !== 200) return; // refused: nothing outlives the revocation
      const fresh = refreshed.json<Body>().access_token as string;
      const introspection = await app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ token: fresh, client_id: 'race-app' }) });
      assert.deepEqual(introspection.json(), { active: false }, 'oidc-provider: the grant is gone');
      assert.equal(await accessOfOpaqueToken(app.runtime.database.db, app.runtime.box, fresh), undefined, 'the gateway: a token whose grant was revoked reaches nothing');
    } finally {
      await side.end();
    }
  });
});
