import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { SignJWT } from 'jose';

import { testApp, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { JWT_BEARER } from './helpers/assertions.js';
import { describeEachDatabase } from './helpers/databases.js';
import { callback, consent, login, pickPatient, REDIRECT_URI, startAuthorization, tokenRequest } from './helpers/flow.js';
import { TestPki, type Party } from './helpers/udap-pki.js';

const REG = `${TEST_ISSUER}/reg`;
const TOKEN = `${TEST_ISSUER}/token`;
const TREAT = 'urn:oid:2.16.840.1.113883.5.8#TREAT';
const CONSENT_POLICY = 'urn:oid:2.16.840.1.113883.3.7204.1.1.1.1.2.1';

interface TokenBody {
  access_token: string;
  token_type: string;
  expires_in: number;
  scope: string;
  patient?: string;
  refresh_token?: string;
}
interface OAuthError {
  error: string;
  error_description: string;
  extensions?: unknown;
}

const b2b = (extra: Record<string, unknown> = {}) => ({ 'hl7-b2b': { version: '1', organization_id: 'https://acme.example/org', organization_name: 'Acme Health', purpose_of_use: [TREAT], ...extra } });

describeEachDatabase('UDAP client authentication, hl7-b2b and the authorization code flow', (ctx) => {
  let pki: TestPki;
  let app: FastifyInstance;
  let backend: Party;
  let backendId: string;
  before(async () => {
    pki = await TestPki.create([TEST_ISSUER, TEST_FHIR_BASE]);
    app = await testApp(ctx.current.database, {
      OUTBOUND_ALLOW_PRIVATE: 'true',
      REGISTRATION_PER_HOUR: '0',
      SEED_DEMO: 'true',
      UDAP_CONFIG: await pki.configFile({ purposesOfUse: [TREAT, 'urn:oid:2.16.840.1.113883.5.8#HPAYMT'] }),
    });
    backend = await pki.issue(['https://b2b.acme.example/app']);
    const res = await app.inject({ method: 'POST', url: '/reg', payload: { software_statement: await pki.softwareStatement(backend, REG, { scope: 'system/Patient.rs system/Observation.rs' }), udap: '1' } });
    assert.equal(res.statusCode, 201, res.body);
    backendId = res.json<{ client_id: string }>().client_id;
  });
  after(async () => {
    await app.close();
    await pki.close();
  });

  const clientCredentials = async (party: Party, clientId: string, claims: Record<string, unknown>, scope = 'system/Patient.rs') =>
    tokenRequest(app, { grant_type: 'client_credentials', scope, udap: '1', client_assertion_type: JWT_BEARER, client_assertion: await pki.authenticationToken(party, clientId, TOKEN, claims) });

  it('client_credentials with a valid hl7-b2b: a token that carries the extension, returned by introspection', async () => {
    const res = await clientCredentials(backend, backendId, { extensions: b2b({ subject_name: 'Dr. Jane Doe', subject_id: 'urn:oid:2.16.840.1.113883.4.6#1234567890' }) });
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json<TokenBody>();
    assert.equal(body.token_type, 'Bearer');
    assert.equal(body.scope, 'system/Patient.rs');
    assert.ok(body.expires_in <= 3600);

    const introspected = await app.inject({
      method: 'POST',
      url: '/introspect',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: new URLSearchParams({ token: body.access_token, client_assertion_type: JWT_BEARER, client_assertion: await pki.authenticationToken(backend, backendId, TOKEN) }).toString(),
    });
    assert.equal(introspected.statusCode, 200, introspected.body);
    const info = introspected.json<{ active: boolean; client_id: string; extensions: unknown }>();
    assert.equal(info.active, true);
    assert.equal(info.client_id, backendId);
    assert.deepEqual(info.extensions, b2b({ subject_name: 'Dr. Jane Doe', subject_id: 'urn:oid:2.16.840.1.113883.4.6#1234567890' }));
  });

  const refused: [string, Record<string, unknown>, RegExp][] = [
    ['no extensions', {}, /hl7-b2b: the extensions claim of the client assertion must carry the hl7-b2b object/],
    ['a version other than 1', { extensions: b2b({ version: '2' }) }, /hl7-b2b: version must be "1"/],
    ['no organization_id', { extensions: b2b({ organization_id: undefined }) }, /hl7-b2b: organization_id is required/],
    ['a purpose_of_use the community does not allow', { extensions: b2b({ purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#MARKT'] }) }, /purpose_of_use urn:oid:2\.16\.840\.1\.113883\.5\.8#MARKT is not one this community allows/],
    ['a subject_id without subject_name', { extensions: b2b({ subject_id: 'urn:oid:2.16.840.1.113883.4.6#1234567890' }) }, /subject_id is given for a person acting, who must then be named in subject_name/],
    ['a consent_reference without consent_policy', { extensions: b2b({ consent_reference: ['https://fhir.acme.example/Consent/1'] }) }, /consent_reference is given only with the consent_policy/],
    [
      'a consent_reference that is no Consent or DocumentReference URL',
      { extensions: b2b({ consent_policy: [CONSENT_POLICY], consent_reference: ['https://fhir.acme.example/consents/1'] }) },
      /hl7-b2b: consent_reference must be a non-empty array of absolute URLs of FHIR Consent or DocumentReference resources/,
    ],
  ];
  for (const [what, claims, description] of refused) {
    it(`client_credentials with ${what}: invalid_grant`, async () => {
      const res = await clientCredentials(backend, backendId, claims);
      assert.equal(res.statusCode, 400, res.body);
      const body = res.json<OAuthError>();
      assert.equal(body.error, 'invalid_grant');
      assert.match(body.error_description, description);
      assert.equal(body.extensions, undefined);
    });
  }

  it('a consent policy the community requires: without it invalid_grant with the consent_required extension; with it a token', async () => {
    const strict = await testApp(ctx.current.database, { OUTBOUND_ALLOW_PRIVATE: 'true', REGISTRATION_PER_HOUR: '0', UDAP_CONFIG: await pki.configFile({ consentPolicies: [CONSENT_POLICY] }) });
    try {
      const party = await pki.issue(['https://consent.acme.example/app']);
      const reg = await strict.inject({ method: 'POST', url: '/reg', payload: { software_statement: await pki.softwareStatement(party, REG), udap: '1' } });
      const id = reg.json<{ client_id: string }>().client_id;
      const request = async (extensions: unknown) =>
        strict.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: new URLSearchParams({ grant_type: 'client_credentials', scope: 'system/Patient.rs', udap: '1', client_assertion_type: JWT_BEARER, client_assertion: await pki.authenticationToken(party, id, TOKEN, { extensions }) }).toString() });
      const without = await request(b2b());
      assert.equal(without.statusCode, 400, without.body);
      assert.equal(without.json<OAuthError>().error, 'invalid_grant');
      assert.deepEqual(without.json<OAuthError>().extensions, { 'hl7-b2b': { consent_required: [CONSENT_POLICY] } });
      const withIt = await request(b2b({ consent_policy: [CONSENT_POLICY], consent_reference: ['https://fhir.acme.example/Consent/1'] }));
      assert.equal(withIt.statusCode, 200, withIt.body);
    } finally {
      await strict.close();
    }
  });

  it('an assertion signed by a certificate that does not name the registered iss: invalid_client', async () => {
    const other = await pki.issue(['https://someone-else.example/app']);
    const res = await clientCredentials(other, backendId, { extensions: b2b() });
    assert.equal(res.statusCode, 401, res.body);
    assert.equal(res.json<OAuthError>().error, 'invalid_client');
    assert.match(res.json<OAuthError>().error_description, /the certificate in x5c does not name https:\/\/b2b\.acme\.example\/app/);
  });

  it('a certificate revoked after registration can no longer authenticate: invalid_client', async () => {
    const party = await pki.issue(['https://soon-revoked.acme.example/app']);
    const reg = await app.inject({ method: 'POST', url: '/reg', payload: { software_statement: await pki.softwareStatement(party, REG), udap: '1' } });
    const id = reg.json<{ client_id: string }>().client_id;
    assert.equal((await clientCredentials(party, id, { extensions: b2b() })).statusCode, 200);
    pki.revoke(party);
    const res = await clientCredentials(party, id, { extensions: b2b() });
    assert.equal(res.statusCode, 401, res.body);
    assert.match(res.json<OAuthError>().error_description, /has been revoked/);
  });

  it('an assertion without x5c (signed by the right key all the same): invalid_client', async () => {
    const now = Math.floor(Date.now() / 1000);
    const assertion = await new SignJWT({ iss: backendId, sub: backendId, aud: TOKEN, iat: now, exp: now + 60, jti: randomUUID(), extensions: b2b() })
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT' })
      .sign(backend.privateKey);
    const res = await tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: JWT_BEARER, client_assertion: assertion });
    assert.equal(res.statusCode, 401, res.body);
    assert.equal(res.json<OAuthError>().error, 'invalid_client');
    assert.match(res.json<OAuthError>().error_description, /x5c header must be a non-empty array/);
  });

  it('an assertion living longer than 5 minutes after iat: invalid_client', async () => {
    const now = Math.floor(Date.now() / 1000);
    const res = await clientCredentials(backend, backendId, { extensions: b2b(), iat: now - 200, exp: now + 200 });
    assert.equal(res.statusCode, 401, res.body);
    assert.match(res.json<OAuthError>().error_description, /exp must be at most 300 s \(5 minutes\) after iat/);
  });

  it('an authorization code flow for a UDAP-registered app, which authenticates with its certificate at the token endpoint', async () => {
    const party = await pki.issue(['https://user.acme.example/app']);
    const reg = await app.inject({
      method: 'POST',
      url: '/reg',
      payload: {
        software_statement: await pki.softwareStatement(party, REG, {
          client_name: 'Acme User App',
          grant_types: ['authorization_code', 'refresh_token'],
          response_types: ['code'],
          redirect_uris: [REDIRECT_URI],
          logo_uri: 'https://user.acme.example/logo.png',
          scope: 'openid fhirUser launch/patient patient/Patient.rs offline_access',
        }),
        udap: '1',
      },
    });
    assert.equal(reg.statusCode, 201, reg.body);
    const clientId = reg.json<{ client_id: string }>().client_id;

    const flow = await startAuthorization(app, { client_id: clientId, scope: 'openid launch/patient patient/Patient.rs', aud: TEST_FHIR_BASE });
    await login(flow, 'clinician', 'clinician-demo');
    await pickPatient(flow, 'demo-henry-nguyen');
    await consent(flow);
    const { code } = callback(flow);
    const res = await tokenRequest(app, { grant_type: 'authorization_code', code: code!, redirect_uri: REDIRECT_URI, code_verifier: flow.verifier, udap: '1', client_assertion_type: JWT_BEARER, client_assertion: await pki.authenticationToken(party, clientId, TOKEN) });
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json<TokenBody>();
    assert.equal(body.patient, 'demo-henry-nguyen');
    assert.equal(body.scope, 'openid launch/patient patient/Patient.rs');
    assert.ok(body.expires_in <= 3600);
  });

  it('CRLs are fetched once per use when they say no-store, and kept as long as max-age allows', async () => {
    const fetches = () => [...pki.crlFetches.values()].reduce((a, b) => a + b, 0);
    const request = () => clientCredentials(backend, backendId, { extensions: b2b() });
    let before = fetches();
    assert.equal((await request()).statusCode, 200);
    // The chain's two CRLs (the intermediate's for the client, the root's for the intermediate).
    assert.equal(fetches() - before, 2);
    pki.crlMaxAge = 300;
    try {
      assert.equal((await request()).statusCode, 200);
      before = fetches();
      for (let i = 0; i < 3; i++) assert.equal((await request()).statusCode, 200);
      assert.equal(fetches() - before, 0, 'kept for max-age');
    } finally {
      pki.crlMaxAge = undefined;
    }
  });
});
