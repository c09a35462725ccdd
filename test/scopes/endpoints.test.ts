import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE, TEST_ISSUER } from '../helpers/app.js';
import { basicAuth, createClient, form, pkce, type TestClient } from '../helpers/clients.js';
import { describeEachDatabase } from '../helpers/databases.js';

const LAB = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
const REDIRECT = 'https://app.example/callback';

describeEachDatabase('scopes at the authorization endpoint', (ctx) => {
  let app: FastifyInstance;
  let client: TestClient;
  before(async () => {
    app = await testApp(ctx.current.database, { ADMIN_TOKEN: TEST_ADMIN_TOKEN });
    client = await createClient(app, { redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] });
  });
  after(() => app.close());

  const authorize = (params: Record<string, string>) =>
    app.inject({
      method: 'GET',
      url: `/auth?${form({ response_type: 'code', client_id: client.client_id, redirect_uri: REDIRECT, state: 'st-1', aud: TEST_FHIR_BASE, code_challenge: pkce().challenge, code_challenge_method: 'S256', ...params })}`,
    });
  const redirectParams = (location: string | undefined) => {
    if (!location?.startsWith(`${REDIRECT}?`)) assert.fail(`expected a redirect to the app, got ${String(location)}`);
    return Object.fromEntries(new URL(location).searchParams);
  };

  for (const [scope, invalid, description] of <[string, string, string][]>[
    ['openid patient/Observation.dus', 'patient/Observation.dus', 'patient/Observation.dus: permissions ".dus" must each appear once and in the order c, r, u, d, s'],
    ['launch/patient practitioner/Observation.rs', 'practitioner/Observation.rs', 'practitioner/Observation.rs: unknown context "practitioner": expected patient, user or system'],
    ['patient/Observations.rs', 'patient/Observations.rs', 'patient/Observations.rs: "Observations" is not a FHIR R4 resource type or * (did you mean Observation?)'],
    ['patient/Observation.rs?category', 'patient/Observation.rs?category', 'patient/Observation.rs?category: malformed query parameter "category": expected param=value pairs joined by &'],
    [
      'patient/Observation.rw openid user/Foo.read',
      'patient/Observation.rw user/Foo.read',
      'patient/Observation.rw: undefined permission "w" in ".rw": v2 permissions are c, r, u, d, s; v1 permissions are read, write, *; user/Foo.read: "Foo" is not a FHIR R4 resource type or *',
    ],
  ]) {
    it(`refuses ${scope} with invalid_scope naming the invalid scopes, before any page`, async () => {
      const res = await authorize({ scope });
      assert.equal(res.statusCode, 303);
      assert.deepEqual(redirectParams(res.headers.location), { error: 'invalid_scope', error_description: description, scope: invalid, state: 'st-1', iss: TEST_ISSUER });
    });
  }

  it('accepts v1, v2, wildcard, granular and mixed scopes and goes on to the interaction', async () => {
    for (const scope of ['openid fhirUser launch/patient patient/*.read offline_access', `launch/patient patient/Observation.rs?category=${LAB} patient/Patient.r`, 'launch user/*.cruds patient/Condition.read', 'openid profile']) {
      const res = await authorize({ scope });
      assert.equal(res.statusCode, 303, scope);
      assert.match(String(res.headers.location), /^\/interaction\/[A-Za-z0-9_-]+$/, scope);
    }
  });

  it('requires aud, and only one of our FHIR base URLs (case of scheme and host and a trailing slash do not matter)', async () => {
    const missing = await authorize({ scope: 'openid', aud: '' });
    assert.deepEqual(redirectParams(missing.headers.location), { error: 'invalid_request', error_description: 'aud is required: the base URL of the FHIR server the app wants to access', state: 'st-1', iss: TEST_ISSUER });
    const foreign = await authorize({ scope: 'openid', aud: 'https://evil.example/fhir' });
    assert.deepEqual(redirectParams(foreign.headers.location), { error: 'invalid_request', error_description: 'aud https://evil.example/fhir is not a FHIR server this server issues tokens for', state: 'st-1', iss: TEST_ISSUER });
    const variant = await authorize({ scope: 'openid', aud: 'HTTP://LOCALHOST:3000/fhir/' });
    assert.match(String(variant.headers.location), /^\/interaction\//);
  });
});

describeEachDatabase('scopes at the token endpoint (backend services)', (ctx) => {
  let app: FastifyInstance;
  let backend: { client_id: string; secret: string };
  let resourceServer: { client_id: string; secret: string };
  before(async () => {
    app = await testApp(ctx.current.database, { ADMIN_TOKEN: TEST_ADMIN_TOKEN });
    const created = await createClient(app, {
      client_id: 'bulk-export',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'],
      scope: `system/Patient.rs system/Observation.rs system/Encounter.read system/Condition.rs?category=http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item`,
    });
    backend = { client_id: created.client_id, secret: created.client_secret! };
    const fhirServer = await createClient(app, { client_id: 'fhir-server', token_endpoint_auth_method: 'client_secret_basic', grant_types: [], scope: 'introspect' });
    resourceServer = { client_id: fhirServer.client_id, secret: fhirServer.client_secret! };
  });
  after(() => app.close());

  const token = (scope: string | undefined) =>
    app.inject({
      method: 'POST',
      url: '/token',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(backend.client_id, backend.secret) },
      payload: form({ grant_type: 'client_credentials', ...(scope === undefined ? {} : { scope }) }),
    });
  const introspect = (value: string) =>
    app.inject({
      method: 'POST',
      url: '/introspect',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(resourceServer.client_id, resourceServer.secret) },
      payload: form({ token: value }),
    });

  for (const scope of ['system/Patient.rs', 'system/Patient.read system/Encounter.read', `system/Observation.rs?category=${LAB}`, 'system/Observation.r system/Condition.rs?category=http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item']) {
    it(`grants ${scope} literally, and introspection reports the same scope`, async () => {
      const res = await token(scope);
      assert.equal(res.statusCode, 200, res.body);
      const body = res.json<Record<string, unknown>>();
      assert.deepEqual(Object.keys(body).sort(), ['access_token', 'expires_in', 'scope', 'token_type']);
      assert.equal(body.scope, scope);
      assert.equal(body.token_type, 'Bearer');
      assert.equal(body.expires_in, 300);
      const info = (await introspect(body.access_token as string)).json<Record<string, unknown>>();
      assert.equal(info.active, true);
      assert.equal(info.scope, scope);
      assert.equal(info.aud, TEST_FHIR_BASE);
    });
  }

  for (const [scope, description] of <[string, string][]>[
    ['system/Patient.rs system/*.rs', 'system/*.rs: not within the scopes this client is pre-authorized for'],
    ['system/Encounter.cruds', 'system/Encounter.cruds: not within the scopes this client is pre-authorized for'],
    [`system/Condition.rs?category=${LAB}`, `system/Condition.rs?category=${LAB}: not within the scopes this client is pre-authorized for`],
    ['patient/Patient.rs', 'patient/Patient.rs: backend services are granted system/ scopes (and this server\'s own: introspect, admin, ehr-launch) only'],
    ['system/Patient.dus', 'system/Patient.dus: permissions ".dus" must each appear once and in the order c, r, u, d, s'],
  ]) {
    it(`refuses ${scope} with invalid_scope naming it, and issues no token`, async () => {
      const res = await token(scope);
      assert.equal(res.statusCode, 400);
      assert.deepEqual(res.json(), { error: 'invalid_scope', error_description: description, scope: description.slice(0, description.indexOf(': ')) });
    });
  }

  it('requires a scope', async () => {
    const res = await token(undefined);
    assert.equal(res.statusCode, 400);
    assert.deepEqual(res.json(), { error: 'invalid_scope', error_description: 'scope: is required: request the system/ scopes this client is pre-authorized for', scope: 'scope' });
  });
});
