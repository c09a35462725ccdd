import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { testApp, TEST_ADMIN_TOKEN } from './helpers/app.js';
import { createClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization } from './helpers/flow.js';

/**
 * The admin scope granted on a person's behalf: an app an operator registered for `admin` (a dashboard, say)
 * administers the server only for a person who may administer it. A patient who signs in to that app and
 * consents must not get a token that creates administrators.
 */
describeEachDatabase('the admin scope by delegation', (ctx) => {
  let app: FastifyInstance;
  let clientId: string;
  const admin = (method: 'GET' | 'POST' | 'PATCH', url: string, token: string, payload?: unknown) =>
    app.inject({ method, url: `/admin/api${url}`, headers: { authorization: `Bearer ${token}` }, ...(payload === undefined ? {} : { payload: payload as string }) });

  before(async () => {
    app = await testApp(ctx.current.database, { ADMIN_TOKEN: TEST_ADMIN_TOKEN, SEED_DEMO: 'true' });
    clientId = (await createClient(app, { client_name: 'Ops dashboard', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], scope: 'openid fhirUser admin' })).client_id;
    assert.equal((await admin('POST', '/users', TEST_ADMIN_TOKEN, { id: 'ops', username: 'ops', password: 'ops-password-1', fhirUser: 'Practitioner/ops', name: 'Ops', roles: ['admin'] })).statusCode, 201);
  });
  after(() => app.close());

  async function tokenFor(username: string, password: string): Promise<string> {
    const flow = await startAuthorization(app, { client_id: clientId, scope: 'openid fhirUser admin' });
    await login(flow, username, password);
    await consent(flow);
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json<{ access_token: string; scope: string }>();
    assert.match(body.scope, /\badmin\b/);
    return body.access_token;
  }

  it('a patient’s token refuses: 403 insufficient_scope, and no administrator is created', async () => {
    const token = await tokenFor('patient', 'patient-demo');
    const create = await admin('POST', '/users', token, { username: 'evil', password: 'evil-password-1', fhirUser: 'Practitioner/x', name: 'Evil', roles: ['admin'] });
    assert.equal(create.statusCode, 403, create.body);
    assert.equal(create.json<{ error: string }>().error, 'insufficient_scope');
    assert.equal((await admin('GET', '/users?q=evil', TEST_ADMIN_TOKEN)).json<{ items: unknown[] }>().items.length, 0);
  });

  it('an administrator’s token works, until the person loses the admin role', async () => {
    const token = await tokenFor('ops', 'ops-password-1');
    assert.equal((await admin('GET', '/users', token)).statusCode, 200);
    assert.equal((await admin('PATCH', '/users/ops', TEST_ADMIN_TOKEN, { roles: ['clinician'] })).statusCode, 200);
    assert.equal((await admin('GET', '/users', token)).statusCode, 403);
  });
});
