import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import * as client from 'openid-client';

import { clientKey, type ClientKey } from './helpers/assertions.js';
import { listeningApp, TEST_ADMIN_TOKEN } from './helpers/app.js';
import { Browser } from './helpers/browser.js';
import { createClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { consent, login, pickPatient, REDIRECT_URI } from './helpers/flow.js';

// The server under test listens on plain http loopback; openid-client marks that option deprecated to make it stand out.
// eslint-disable-next-line @typescript-eslint/no-deprecated
const insecure = { execute: [client.allowInsecureRequests] };

describeEachDatabase('openid-client as a SMART Backend Services client', (ctx) => {
  let app: FastifyInstance;
  let issuer: string;
  let key: ClientKey;
  let rsSecret: string;

  before(async () => {
    ({ app, issuer } = await listeningApp(ctx.current.database, { ADMIN_TOKEN: TEST_ADMIN_TOKEN }));
    key = await clientKey('ES384');
    await createClient(app, { client_id: 'bulk-client', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [key.jwk] }, grant_types: ['client_credentials'], scope: 'system/*.rs' });
    rsSecret = (await createClient(app, { client_id: 'fhir-server', token_endpoint_auth_method: 'client_secret_basic', grant_types: [], scope: 'introspect' })).client_secret!;
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

describeEachDatabase('openid-client as a SMART app (authorization code, PKCE, id_token)', (ctx) => {
  let app: FastifyInstance;
  let issuer: string;
  before(async () => {
    ({ app, issuer } = await listeningApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN }));
    await createClient(app, { client_id: 'oidc-app', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] });
  });
  after(() => app.close());

  it('validates the id_token (signature against our JWKS, iss, aud, exp, nonce) and reads fhirUser and the context', async () => {
    const config = await client.discovery(new URL(issuer), 'oidc-app', undefined, client.None(), insecure);
    client.enableNonRepudiationChecks(config);
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT_URI,
      scope: 'openid fhirUser launch/patient patient/Patient.rs',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
      aud: `${issuer}/fhir`,
    });
    const browser = new Browser(app, issuer);
    const flow = { browser, verifier, clientId: 'oidc-app', page: await browser.go('GET', `${url.pathname}${url.search}`) };
    await login(flow, 'clinician', 'clinician-demo');
    await pickPatient(flow, 'demo-amy-shaw');
    await consent(flow);
    assert.ok(flow.page.location);

    const tokens = await client.authorizationCodeGrant(config, new URL(flow.page.location), { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce });
    const claims = tokens.claims();
    assert.ok(claims);
    assert.equal(claims.iss, issuer);
    assert.equal(claims.aud, 'oidc-app');
    assert.equal(claims.sub, 'demo-clinician');
    assert.equal(claims.fhirUser, `${issuer}/fhir/Practitioner/demo-practitioner`);
    assert.equal(tokens.patient, 'demo-amy-shaw');
    assert.equal(tokens.scope, 'openid fhirUser launch/patient patient/Patient.rs');
  });
});
