import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';

import { createLaunch } from '../src/launch/context.js';
import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE } from './helpers/app.js';
import { basicAuth, createClient, form } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { callback, consent, exchange, login, REDIRECT_URI, startAuthorization, tokenRequest } from './helpers/flow.js';

/**
 * A copy of the database yields no usable bearer value: codes, access and refresh tokens, client-credentials
 * tokens, registration access tokens, session ids and launch ids are stored only as keyed hashes.
 */
type Body = Record<string, unknown>;

describeEachDatabase('bearer values at rest', (ctx) => {
  let app: FastifyInstance;
  let secret: string;
  before(async () => {
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', REGISTRATION: 'open', ADMIN_TOKEN: TEST_ADMIN_TOKEN });
    await createClient(app, { client_id: 'app', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] });
    secret = (await createClient(app, { client_id: 'backend', grant_types: ['client_credentials'], scope: 'system/Patient.rs introspect' })).client_secret!;
  });
  after(() => app.close());

  /** Every row of every table, as text. */
  async function dump(): Promise<string> {
    const tables = ['oidc_payloads', 'launches', 'grant_contexts', 'audit_events', 'clients', 'server_state'];
    const parts = await Promise.all(tables.map(async (t) => JSON.stringify((await sql`select * from ${sql.table(t)}`.execute(app.runtime.database.db)).rows)));
    return parts.join('\n');
  }

  it('no value a client or browser holds is in the database', async () => {
    const { launch } = await createLaunch(app.runtime.database.db, app.runtime.box, { client_id: 'app', fhir_base: TEST_FHIR_BASE, patient: 'demo-amy-shaw' });
    const flow = await startAuthorization(app, { client_id: 'app', scope: 'launch openid fhirUser patient/Patient.rs offline_access', launch });
    await login(flow, 'clinician', 'clinician-demo');
    await consent(flow);
    const { code } = callback(flow);
    const tokens = (await exchange(app, flow)).json<Body>();
    const refreshed = (await tokenRequest(app, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token as string, client_id: 'app' })).json<Body>();
    const backend = (await tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, { authorization: basicAuth('backend', secret) })).json<Body>();
    const registered = (await app.inject({ method: 'POST', url: '/reg', payload: { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none' } })).json<Body>();
    const session = flow.browser.cookieNames().includes('smart_session');
    assert.ok(session, 'the browser holds a session');

    const held = { launch, code: code!, access: tokens.access_token, refresh: tokens.refresh_token, refreshedAccess: refreshed.access_token, rotated: refreshed.refresh_token, backend: backend.access_token, registration: registered.registration_access_token };
    const text = await dump();
    for (const [name, value] of Object.entries(held)) {
      assert.equal(typeof value, 'string', name);
      assert.ok(!text.includes(value as string), `${name} is not stored`);
    }
    const sessions = await app.runtime.database.db.selectFrom('oidc_payloads').select(['id', 'payload']).where('model', '=', 'Session').execute();
    assert.ok(sessions.length > 0);
    for (const row of sessions) assert.equal(row.payload.jti, undefined, 'a session row does not hold its id');

    // And everything still works from the hashes.
    const introspect = async (token: string) =>
      (await app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('backend', secret) }, payload: form({ token }) })).json<Body>().active;
    assert.equal(await introspect(refreshed.access_token as string), true);
    assert.equal(await introspect(backend.access_token as string), true);
  });

  it('rows written in clear before this release are hashed at the next start, and keep working', async () => {
    const { db } = app.runtime.database;
    const backend = (await tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, { authorization: basicAuth('backend', secret) })).json<Body>();
    const value = backend.access_token as string;
    const { launch } = await createLaunch(db, app.runtime.box, { patient: 'demo-amy-shaw' });
    // As the previous release stored them: the value as the key, and in the payload.
    await db.updateTable('oidc_payloads').set({ id: value, payload: sql`payload || jsonb_build_object('jti', ${value}::text)` }).where('model', '=', 'ClientCredentials').where('id', '=', app.runtime.box.bearerId(value)).execute();
    await db.updateTable('launches').set({ id: launch }).where('id', '=', app.runtime.box.bearerId(launch)).execute();
    await db.insertInto('server_state').values({ key: 'bearer_ids_in_clear', value: 'true' }).execute();
    assert.ok((await dump()).includes(value));

    await app.close();
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', REGISTRATION: 'open' });
    const text = await dump();
    assert.ok(!text.includes(value) && !text.includes(launch), 'converted at start-up');
    assert.ok(!text.includes('bearer_ids_in_clear'), 'and the mark is cleared');
    const introspected = await app.inject({ method: 'POST', url: '/introspect', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth('backend', secret) }, payload: form({ token: value }) });
    assert.equal(introspected.json<Body>().active, true, 'the converted token still works');
  });
});
