import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import * as client from 'openid-client';

import { clientKey, type ClientKey } from './helpers/assertions.js';
import { listeningApp } from './helpers/app.js';
import { registerClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';

// The server under test listens on plain http loopback; openid-client marks that option deprecated to make it stand out.
// eslint-disable-next-line @typescript-eslint/no-deprecated
const insecure = { execute: [client.allowInsecureRequests] };

describeEachDatabase('openid-client as a SMART Backend Services client', (ctx) => {
  let app: FastifyInstance;
  let issuer: string;
  let key: ClientKey;
  const rsSecret = randomBytes(32).toString('base64url');

  before(async () => {
    ({ app, issuer } = await listeningApp(ctx.current.database));
    key = await clientKey('ES384');
    await registerClient(app, { client_id: 'bulk-client', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [key.jwk] }, grant_types: ['client_credentials'], response_types: [], scope: 'system/*.rs' });
    await registerClient(app, { client_id: 'fhir-server', client_secret: rsSecret, token_endpoint_auth_method: 'client_secret_basic', grant_types: [], response_types: [], scope: 'introspect' });
  });
  after(() => app.close());

  it('discovers the server, authenticates with private_key_jwt, gets system tokens that introspect as issued', async () => {
    // SMART's assertion: typ JWT and aud the token endpoint (openid-client defaults to no typ and aud = issuer).
    const smartAssertion = { [client.modifyAssertion]: (header: Record<string, unknown>, payload: Record<string, unknown>) => {
      header.typ = 'JWT';
      payload.aud = `${issuer}/token`;
    } };
    const config = await client.discovery(new URL(issuer), 'bulk-client', undefined, client.PrivateKeyJwt({ key: key.privateKey, kid: key.kid }, smartAssertion), insecure);
    assert.equal(config.serverMetadata().token_endpoint, `${issuer}/token`);

    const first = await client.clientCredentialsGrant(config, { scope: 'system/Patient.rs system/Observation.rs' });
    assert.equal(first.token_type, 'bearer');
    assert.equal(first.scope, 'system/Patient.rs system/Observation.rs');
    assert.equal(first.expires_in, 300);
    const second = await client.clientCredentialsGrant(config, { scope: 'system/Encounter.rs' });
    assert.notEqual(second.access_token, first.access_token, 'each request a fresh assertion (new jti) and token');

    await assert.rejects(client.clientCredentialsGrant(config, { scope: 'system/Patient.cruds' }), (error: unknown) => {
      assert.ok(error instanceof client.ResponseBodyError);
      assert.equal(error.error, 'invalid_scope');
      assert.equal(error.error_description, 'system/Patient.cruds: not within the scopes this client is pre-authorized for');
      return true;
    });

    const rs = await client.discovery(new URL(issuer), 'fhir-server', rsSecret, undefined, insecure);
    const info = await client.tokenIntrospection(rs, first.access_token);
    assert.equal(info.active, true);
    assert.equal(info.client_id, 'bulk-client');
    assert.equal(info.scope, 'system/Patient.rs system/Observation.rs');
  });
});
