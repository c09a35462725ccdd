import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { testApp, TEST_ISSUER } from './helpers/app.js';
import { describeEachDatabase } from './helpers/databases.js';
import { login, REDIRECT_URI, startAuthorization, title } from './helpers/flow.js';

type Body = Record<string, string | undefined> & Record<string, unknown>;
const ADMIN_TOKEN = 'registration-admin-token-0123456789abcdef';
const METADATA = { client_name: 'Registered App', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], scope: 'openid fhirUser launch/patient patient/*.rs offline_access' };

async function withApp(ctx: { current: { database: Parameters<typeof testApp>[0] } }, env: Record<string, string>, fn: (app: FastifyInstance) => Promise<void>): Promise<void> {
  // These tests register many clients from one address; the limit has its own test.
  const app = await testApp(ctx.current.database, { ADMIN_TOKEN, SEED_DEMO: 'true', REGISTRATION_PER_HOUR: '0', ...env });
  try {
    await fn(app);
  } finally {
    await app.close();
  }
}

describeEachDatabase('dynamic client registration (RFC 7591, RFC 7592)', (ctx) => {
  it('open: anyone registers a SMART app, reads, updates and deletes it with its registration access token', async () => {
    await withApp(ctx, { REGISTRATION: 'open', REGISTRATION_STATUS: 'active' }, async (app) => {
      const res = await app.inject({ method: 'POST', url: '/reg', payload: METADATA });
      assert.equal(res.statusCode, 201, res.body);
      const client = res.json<Body>();
      assert.equal(client.scope, METADATA.scope, 'SMART scopes come back in scope');
      assert.equal(client.allowed_scope, undefined);
      assert.ok(client.registration_access_token);
      assert.equal(client.registration_client_uri, `${TEST_ISSUER}/reg/${String(client.client_id)}`);
      const stored = await app.runtime.database.db.selectFrom('clients').select(['status', 'metadata']).where('client_id', '=', String(client.client_id)).executeTakeFirstOrThrow();
      assert.equal(stored.status, 'active');
      assert.equal(stored.metadata.scope, METADATA.scope, 'stored in RFC 7591 names');

      const rat = { authorization: `Bearer ${client.registration_access_token}` };
      const read = await app.inject({ method: 'GET', url: `/reg/${String(client.client_id)}`, headers: rat });
      assert.equal(read.statusCode, 200);
      assert.equal(read.json<Body>().scope, METADATA.scope);
      const newRat = { authorization: `Bearer ${(read.json<Body>().registration_access_token ?? client.registration_access_token)}` };
      const updated = await app.inject({ method: 'PUT', url: `/reg/${String(client.client_id)}`, headers: newRat, payload: { ...METADATA, client_id: client.client_id, client_name: 'Renamed App' } });
      assert.equal(updated.statusCode, 200, updated.body);
      assert.equal(updated.json<Body>().client_name, 'Renamed App');

      const flow = await startAuthorization(app, { client_id: String(client.client_id), scope: 'launch/patient patient/Patient.rs' });
      await login(flow, 'patient', 'patient-demo');
      assert.match(title(flow.page), /^Allow Renamed App/);

      const finalRat = { authorization: `Bearer ${String(updated.json<Body>().registration_access_token)}` };
      assert.equal((await app.inject({ method: 'DELETE', url: `/reg/${String(client.client_id)}`, headers: finalRat })).statusCode, 204);
      const audit = await app.runtime.database.db.selectFrom('audit_events').select('type').where('client_id', '=', String(client.client_id)).execute();
      assert.ok(audit.some((e) => e.type === 'client.registered'));
    });
  });

  it('refuses invalid SMART scopes and self-granted pre-approval', async () => {
    await withApp(ctx, { REGISTRATION: 'open' }, async (app) => {
      const badScope = await app.inject({ method: 'POST', url: '/reg', payload: { ...METADATA, scope: 'patient/Observation.dus' } });
      assert.equal(badScope.statusCode, 400);
      assert.deepEqual(badScope.json(), { error: 'invalid_client_metadata', error_description: 'scope: patient/Observation.dus: permissions ".dus" must each appear once and in the order c, r, u, d, s' });
      const preApproved = await app.inject({ method: 'POST', url: '/reg', payload: { ...METADATA, consent: 'pre-approved' } });
      assert.equal(preApproved.statusCode, 400);
      assert.deepEqual(preApproved.json(), { error: 'invalid_client_metadata', error_description: 'consent can only be set by an operator' });
      for (const [name, value] of [['consent', 'required'], ['allowed_scope', 'system/*.cruds'], ['registered_jwks_uri', 'https://keys.example/jwks']] as const) {
        const internal = await app.inject({ method: 'POST', url: '/reg', payload: { ...METADATA, [name]: value } });
        assert.equal(internal.statusCode, 400, name);
        assert.equal(internal.json<Body>().error, 'invalid_client_metadata', name);
      }
    });
  });

  it('a registration is held to the same sizes as an operator\'s: name, URIs, contacts, scope', async () => {
    await withApp(ctx, { REGISTRATION: 'open' }, async (app) => {
      const long = (n: number) => 'x'.repeat(n);
      for (const [metadata, error, description] of [
        [{ client_name: long(201) }, 'invalid_client_metadata', 'client_name is longer than 200 characters'],
        [{ logo_uri: `https://app.example/${long(2030)}` }, 'invalid_client_metadata', 'logo_uri is longer than 2048 characters'],
        [{ redirect_uris: Array.from({ length: 51 }, (_, i) => `https://app.example/cb/${i}`) }, 'invalid_redirect_uri', 'redirect_uris: at most 50'],
        [{ redirect_uris: [`https://app.example/${long(2030)}`] }, 'invalid_redirect_uri', 'redirect_uris: each at most 2048 characters'],
        [{ contacts: Array.from({ length: 21 }, (_, i) => `c${i}@app.example`) }, 'invalid_client_metadata', 'contacts: at most 20'],
        [{ contacts: [`${long(320)}@app.example`] }, 'invalid_client_metadata', 'contacts: each at most 320 characters'],
        [{ scope: Array.from({ length: 1200 }, (_, i) => `patient/T${i}.rs`).join(' ') }, 'invalid_client_metadata', 'scope is longer than 16384 characters'],
      ] as const) {
        const res = await app.inject({ method: 'POST', url: '/reg', payload: { ...METADATA, ...metadata } });
        assert.deepEqual([res.statusCode, res.json()], [400, { error, error_description: description }], description);
      }
      // At the limits: accepted. A name of 200 characters counted as code points (an emoji is one).
      const fits = await app.inject({ method: 'POST', url: '/reg', payload: { ...METADATA, client_name: '\u{1F3E5}'.repeat(200), contacts: Array.from({ length: 20 }, (_, i) => `c${i}@app.example`) } });
      assert.equal(fits.statusCode, 201, fits.body);
    });
  });

  it('one set of client rules on every path: /reg, PUT /reg/:id and the admin API refuse the same metadata', async () => {
    const cases: { metadata: Record<string, unknown>; error: string; description: string }[] = [
      { metadata: { grant_types: ['client_credentials'], token_endpoint_auth_method: 'none', response_types: [], redirect_uris: [] }, error: 'invalid_client_metadata', description: 'token_endpoint_auth_method: none cannot be used with client_credentials; backend services authenticate with private_key_jwt' },
      { metadata: { redirect_uris: ['http://evil.example/steal'] }, error: 'invalid_redirect_uri', description: 'redirect_uris: http://evil.example/steal must use https (http only on localhost)' },
      { metadata: { redirect_uris: ['javascript:alert(1)'] }, error: 'invalid_redirect_uri', description: 'redirect_uris: javascript:alert(1) must not use the javascript scheme' },
      { metadata: { redirect_uris: ['myapp:/cb'] }, error: 'invalid_redirect_uri', description: 'redirect_uris: myapp:/cb must use https, http on localhost, or a private-use scheme in reverse-domain form (com.example.app:/callback)' },
      { metadata: { redirect_uris: [`${REDIRECT_URI}#frag`] }, error: 'invalid_redirect_uri', description: `redirect_uris: ${REDIRECT_URI}#frag must not have a fragment` },
      { metadata: { grant_types: ['client_credentials'], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'private_key_jwt', jwks_uri: 'http://keys.example/jwks.json' }, error: 'invalid_client_metadata', description: 'jwks_uri must be an absolute https URL' },
      { metadata: { launch_uri: 'javascript:alert(1)' }, error: 'invalid_client_metadata', description: 'launch_uri must be an absolute http(s) URL' },
      { metadata: { sector_identifier_uri: 'https://127.0.0.1/sector.json' }, error: 'invalid_client_metadata', description: 'sector_identifier_uri is not supported: this server issues public subject identifiers only' },
    ];
    await withApp(ctx, { REGISTRATION: 'open', REGISTRATION_STATUS: 'active' }, async (app) => {
      const client = (await app.inject({ method: 'POST', url: '/reg', payload: METADATA })).json<Body>();
      let rat = String(client.registration_access_token);
      for (const { metadata, error, description } of cases) {
        const created = await app.inject({ method: 'POST', url: '/reg', payload: { ...METADATA, ...metadata } });
        assert.deepEqual([created.statusCode, created.json()], [400, { error, error_description: description }], `POST /reg ${JSON.stringify(metadata)}`);
        const updated = await app.inject({ method: 'PUT', url: `/reg/${String(client.client_id)}`, headers: { authorization: `Bearer ${rat}` }, payload: { ...METADATA, ...metadata, client_id: client.client_id } });
        assert.deepEqual([updated.statusCode, updated.json()], [400, { error, error_description: description }], `PUT /reg/:id ${JSON.stringify(metadata)}`);
        if ('sector_identifier_uri' in metadata) continue; // not a property of the admin API at all
        const adminable: Record<string, unknown> = { ...METADATA, ...metadata };
        delete adminable.response_types;
        const admin = await app.inject({ method: 'POST', url: '/admin/api/clients', headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, payload: adminable });
        assert.deepEqual([admin.statusCode, admin.json()], [400, { error: 'invalid_request', error_description: description }], `admin ${JSON.stringify(metadata)}`);
        rat = (await app.inject({ method: 'GET', url: `/reg/${String(client.client_id)}`, headers: { authorization: `Bearer ${rat}` } })).json<Body>().registration_access_token ?? rat;
      }
      const stored = await app.runtime.database.db.selectFrom('clients').select('metadata').where('client_id', '=', String(client.client_id)).executeTakeFirstOrThrow();
      assert.equal(stored.metadata.client_name, METADATA.client_name, 'no refused update was stored');
    });
  });

  it('an approved client that widens its registration goes back for approval; narrowing stays active (RFC 7592 self-update)', async () => {
    const BACKEND = { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', response_types: [], redirect_uris: [], scope: 'system/Patient.rs' };
    await withApp(ctx, { REGISTRATION: 'token', REGISTRATION_STATUS: 'pending' }, async (app) => {
      const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
      const iat = (await app.inject({ method: 'POST', url: '/admin/api/registration-tokens', headers: admin, payload: { expires_in: 600 } })).json<Body>();
      const created = await app.inject({ method: 'POST', url: '/reg', headers: { authorization: `Bearer ${String(iat.token)}` }, payload: BACKEND });
      assert.equal(created.statusCode, 201, created.body);
      const client = created.json<Body>();
      const id = String(client.client_id);
      const status = async () => (await app.runtime.database.db.selectFrom('clients').select('status').where('client_id', '=', id).executeTakeFirstOrThrow()).status;
      assert.equal(await status(), 'pending');
      const reviewed = (await app.inject({ method: 'GET', url: `/admin/api/clients/${id}`, headers: admin })).json<Body>().updated_at;
      assert.equal((await app.inject({ method: 'POST', url: `/admin/api/clients/${id}/approve`, headers: admin, payload: { reviewed_updated_at: reviewed } })).statusCode, 200);
      const basic = { authorization: `Basic ${Buffer.from(`${id}:${String(client.client_secret)}`).toString('base64')}` };
      const cc = (scope: string) => app.inject({ method: 'POST', url: '/token', headers: { ...basic, 'content-type': 'application/x-www-form-urlencoded' }, payload: `grant_type=client_credentials&scope=${encodeURIComponent(scope)}` });
      assert.equal((await cc('system/Patient.rs')).statusCode, 200);

      // The issue's attack: no credential, client_credentials, every system scope.
      let rat = String(client.registration_access_token);
      const put = (metadata: Record<string, unknown>) => app.inject({ method: 'PUT', url: `/reg/${id}`, headers: { authorization: `Bearer ${rat}` }, payload: { ...metadata, client_id: id, client_secret: client.client_secret } });
      const attack = await put({ token_endpoint_auth_method: 'none', grant_types: ['client_credentials'], scope: 'system/*.cruds' });
      assert.deepEqual(attack.json(), { error: 'invalid_client_metadata', error_description: 'token_endpoint_auth_method: none cannot be used with client_credentials; backend services authenticate with private_key_jwt' });
      const noCredential = await app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: `grant_type=client_credentials&client_id=${id}&scope=system%2F*.cruds` });
      assert.equal(noCredential.statusCode, 401, 'no token without a credential');

      // Narrowing (fewer scopes) keeps it active.
      const narrowed = await put({ ...BACKEND, scope: 'system/Patient.r' });
      assert.equal(narrowed.statusCode, 200, narrowed.body);
      rat = String(narrowed.json<Body>().registration_access_token);
      assert.equal(await status(), 'active');
      assert.equal((await cc('system/Patient.r')).statusCode, 200);

      // Widening (every system scope) needs the operator again: until then the client can do nothing.
      const widened = await put({ ...BACKEND, scope: 'system/*.cruds' });
      assert.equal(widened.statusCode, 200, widened.body);
      assert.equal(widened.json<Body>().scope, 'system/*.cruds');
      assert.equal(await status(), 'pending');
      assert.equal((await cc('system/*.cruds')).statusCode, 401, 'a pending client cannot get tokens');
      const audit = await app.runtime.database.db.selectFrom('audit_events').select(['type', 'details']).where('client_id', '=', id).where('type', '=', 'client.updated').orderBy('seq').execute();
      assert.deepEqual(audit.filter((e) => e.details.by).map((e) => [e.details.widened, e.details.status]), [[[], 'active'], [['scope'], 'pending']]);
    });
  });

  it('no client gives itself admin, EHR-launch or introspection rights, nor system/ scopes without an operator', async () => {
    const BACKEND = { grant_types: ['client_credentials'], token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [] }, response_types: [], redirect_uris: [] };
    const refused = (scope: string) => ({ error: 'invalid_client_metadata', error_description: `scope ${scope}: only an operator can register a client for this (admin API, or REGISTRATION_STATUS=pending for approval)` });
    const clients = async () => Number((await ctx.current.database.db.selectFrom('clients').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow()).n);
    await withApp(ctx, { REGISTRATION: 'open', REGISTRATION_STATUS: 'active' }, async (app) => {
      const before = await clients();
      for (const scope of ['admin', 'ehr-launch', 'introspect', 'system/*.rs', 'system/Patient.read']) {
        const res = await app.inject({ method: 'POST', url: '/reg', payload: { ...BACKEND, scope } });
        assert.equal(res.statusCode, 400, scope);
        assert.deepEqual(res.json(), refused(scope));
      }
      const mixed = await app.inject({ method: 'POST', url: '/reg', payload: { ...METADATA, scope: `${METADATA.scope} admin` } });
      assert.deepEqual(mixed.json(), refused('admin'));
      // Nor by updating a registration it already has.
      const client = (await app.inject({ method: 'POST', url: '/reg', payload: METADATA })).json<Body>();
      const update = await app.inject({ method: 'PUT', url: `/reg/${String(client.client_id)}`, headers: { authorization: `Bearer ${String(client.registration_access_token)}` }, payload: { ...METADATA, client_id: client.client_id, scope: 'openid introspect' } });
      assert.deepEqual(update.json(), refused('introspect'));
      assert.equal(await clients(), before + 1, 'only the plain app was stored');
    });
    await withApp(ctx, { REGISTRATION: 'open', REGISTRATION_STATUS: 'pending' }, async (app) => {
      assert.equal((await app.inject({ method: 'POST', url: '/reg', payload: { ...BACKEND, scope: 'system/*.rs' } })).statusCode, 201, 'an operator approves it before it can be used');
      assert.deepEqual((await app.inject({ method: 'POST', url: '/reg', payload: { ...BACKEND, scope: 'admin' } })).json(), refused('admin'));
    });
    await withApp(ctx, { REGISTRATION: 'token' }, async (app) => {
      const iat = (await app.inject({ method: 'POST', url: '/admin/api/registration-tokens', headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, payload: { expires_in: 600 } })).json<Body>();
      const res = await app.inject({ method: 'POST', url: '/reg', headers: { authorization: `Bearer ${String(iat.token)}` }, payload: { ...BACKEND, scope: 'system/*.rs' } });
      assert.equal(res.statusCode, 201, 'the operator vouched for it with the initial access token');
    });
  });

  it('pending: a registered client can do nothing until an operator approves it', async () => {
    await withApp(ctx, { REGISTRATION: 'open', REGISTRATION_STATUS: 'pending' }, async (app) => {
      const client = (await app.inject({ method: 'POST', url: '/reg', payload: METADATA })).json<Body>();
      const blocked = await startAuthorization(app, { client_id: String(client.client_id), scope: 'openid' });
      assert.equal(blocked.page.res.statusCode, 400);
      assert.match(blocked.page.res.body, /invalid_client/);
      const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
      const reviewed = (await app.inject({ method: 'GET', url: `/admin/api/clients/${String(client.client_id)}`, headers: admin })).json<Body>().updated_at;
      const approved = await app.inject({ method: 'POST', url: `/admin/api/clients/${String(client.client_id)}/approve`, headers: admin, payload: { reviewed_updated_at: reviewed } });
      assert.equal(approved.statusCode, 200, approved.body);
      const flow = await startAuthorization(app, { client_id: String(client.client_id), scope: 'openid' });
      assert.equal(title(flow.page), 'Sign in');
    });
  });

  it('sector_identifier_uri is refused before oidc-provider could fetch it: no request reaches an internal address (SSRF)', async () => {
    let requests = 0;
    const internal = createServer((_req, res) => {
      requests++;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify([REDIRECT_URI]));
    });
    await new Promise<void>((resolve) => internal.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(internal.address() as AddressInfo).port}/sector.json`;
      await withApp(ctx, { REGISTRATION: 'open', REGISTRATION_STATUS: 'active' }, async (app) => {
        for (const sector of [url, url.replace('http:', 'https:'), 'https://[::1]/sector.json']) {
          const res = await app.inject({ method: 'POST', url: '/reg', payload: { ...METADATA, sector_identifier_uri: sector, subject_type: 'pairwise' } });
          assert.deepEqual([res.statusCode, res.json()], [400, { error: 'invalid_client_metadata', error_description: 'sector_identifier_uri is not supported: this server issues public subject identifiers only' }]);
        }
      });
      assert.equal(requests, 0, 'nothing was fetched');
    } finally {
      internal.close();
    }
  });

  it('a flood of registrations from one address is refused with 429 past its allowance, across processes', async () => {
    const env = { REGISTRATION: 'open', REGISTRATION_PER_HOUR: '3' };
    const first = await testApp(ctx.current.database, { ADMIN_TOKEN, SEED_DEMO: 'true', ...env });
    const second = await testApp(ctx.current.database, { ADMIN_TOKEN, SEED_DEMO: 'true', ...env });
    try {
      const register = (app: FastifyInstance, remoteAddress = '203.0.113.7', payload: unknown = METADATA) => app.inject({ method: 'POST', url: '/reg', remoteAddress, payload: payload as Record<string, unknown> });
      assert.equal((await register(first)).statusCode, 201);
      assert.equal((await register(second, '203.0.113.7', { redirect_uris: 'not a list' })).statusCode, 400, 'a refused registration counts too');
      assert.equal((await register(first)).statusCode, 201);
      const refused = await register(second);
      assert.equal(refused.statusCode, 429, 'the allowance (a burst of 3) is shared by both processes');
      assert.equal(refused.json<Body>().error, 'too_many_requests');
      assert.ok(Number(refused.headers['retry-after']) > 1000, 'one registration every 20 minutes after the burst');
      assert.equal((await register(first, '198.51.100.9')).statusCode, 201, 'another address has its own allowance');
    } finally {
      await first.close();
      await second.close();
    }
  });

  it('token: registration needs an initial access token from the admin API', async () => {
    await withApp(ctx, { REGISTRATION: 'token' }, async (app) => {
      const anonymous = await app.inject({ method: 'POST', url: '/reg', payload: METADATA });
      assert.equal(anonymous.statusCode, 401);
      assert.equal(anonymous.json<Body>().error, 'invalid_token');
      const iat = await app.inject({ method: 'POST', url: '/admin/api/registration-tokens', headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, payload: { expires_in: 600 } });
      assert.equal(iat.statusCode, 201);
      const res = await app.inject({ method: 'POST', url: '/reg', headers: { authorization: `Bearer ${String(iat.json<Body>().token)}` }, payload: METADATA });
      assert.equal(res.statusCode, 201, res.body);
    });
  });

  it('off: no registration endpoint at all', async () => {
    await withApp(ctx, { REGISTRATION: 'off' }, async (app) => {
      assert.equal((await app.inject({ method: 'POST', url: '/reg', payload: METADATA })).statusCode, 404);
      assert.equal((await app.inject({ method: 'GET', url: '/.well-known/smart-configuration' })).json<Body>().registration_endpoint, undefined, 'not advertised');
      const iat = await app.inject({ method: 'POST', url: '/admin/api/registration-tokens', headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, payload: {} });
      assert.equal(iat.statusCode, 409);
      const flow = await startAuthorization(app, { client_id: 'nope', scope: 'openid' });
      assert.equal(flow.page.res.statusCode, 400);
    });
  });
});
