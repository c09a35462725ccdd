import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { SignJWT } from 'jose';

import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { describeEachDatabase } from './helpers/databases.js';
import { TestPki, type Party } from './helpers/udap-pki.js';

const REG = `${TEST_ISSUER}/reg`;
const ENV = { OUTBOUND_ALLOW_PRIVATE: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN, REGISTRATION_PER_HOUR: '0' };

interface Registration {
  client_id: string;
  software_statement: string;
  client_name: string;
  grant_types: string[];
  scope: string;
  token_endpoint_auth_method: string;
  contacts: string[];
  udap_iss?: unknown;
}
interface OAuthError {
  error: string;
  error_description: string;
}

describeEachDatabase('UDAP trusted dynamic registration', (ctx) => {
  let pki: TestPki;
  let app: FastifyInstance;
  let client: Party;
  before(async () => {
    pki = await TestPki.create([TEST_ISSUER, TEST_FHIR_BASE]);
    client = await pki.issue(['https://b2b.acme.example/app']);
    app = await testApp(ctx.current.database, { ...ENV, UDAP_CONFIG: await pki.configFile() });
  });
  after(async () => {
    await app.close();
    await pki.close();
  });

  const register = (payload: Record<string, unknown>) => app.inject({ method: 'POST', url: '/reg', payload });
  const registerStatement = async (party: Party, claims: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) =>
    register({ software_statement: await pki.softwareStatement(party, REG, claims), udap: '1', ...extra });
  const clientRecord = (id: string) => app.inject({ method: 'GET', url: `/admin/api/clients/${id}`, headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });

  it('registers a client whose certificate chains to the anchor: 201, client_id, the statement echoed, scopes the community allows', async () => {
    const party = await pki.issue(['https://new.acme.example/app']);
    const statement = await pki.softwareStatement(party, REG, { scope: 'system/Patient.rs system/Observation.read system/Patient.cud' });
    const res = await register({ software_statement: statement, udap: '1' });
    assert.equal(res.statusCode, 201, res.body);
    assert.equal(res.headers['cache-control'], 'no-store');
    const body = res.json<Registration>();
    assert.match(body.client_id, /^\S+$/);
    assert.equal(body.software_statement, statement);
    assert.equal(body.client_name, 'Acme B2B App');
    assert.deepEqual(body.grant_types, ['client_credentials']);
    assert.equal(body.token_endpoint_auth_method, 'private_key_jwt');
    // Writing is not what the community allows by default: it is left out.
    assert.equal(body.scope, 'system/Patient.rs system/Observation.read');
    assert.equal(body.udap_iss, undefined, 'internal properties stay inside');
    const stored = await clientRecord(body.client_id);
    assert.equal(stored.statusCode, 200);
    assert.equal(stored.json<{ status: string }>().status, 'active');
  });

  it('the same iss again updates its registration (200, same client_id); empty grant_types cancels it; a new one then gets a new client_id', async () => {
    const party = await pki.issue(['https://update.acme.example/app']);
    const first = await registerStatement(party);
    assert.equal(first.statusCode, 201, first.body);
    const id = first.json<Registration>().client_id;

    const updated = await registerStatement(party, { client_name: 'Acme B2B App, renamed' });
    assert.equal(updated.statusCode, 200, updated.body);
    assert.equal(updated.json<Registration>().client_id, id);
    assert.equal(updated.json<Registration>().client_name, 'Acme B2B App, renamed');
    assert.equal((await clientRecord(id)).json<{ client_name: string }>().client_name, 'Acme B2B App, renamed');

    const cancelled = await registerStatement(party, { grant_types: [] });
    assert.equal(cancelled.statusCode, 200, cancelled.body);
    assert.equal(cancelled.json<Registration>().client_id, id);
    assert.deepEqual(cancelled.json<Registration>().grant_types, []);
    assert.equal((await clientRecord(id)).statusCode, 404);

    const again = await registerStatement(party);
    assert.equal(again.statusCode, 201);
    assert.notEqual(again.json<Registration>().client_id, id);
  });

  it('two first registrations of one iss at once make one client: one 201, one 200, the same client_id', async () => {
    const party = await pki.issue(['https://twice.acme.example/app']);
    const [a, b] = await Promise.all([registerStatement(party), registerStatement(party)]);
    assert.deepEqual([a.statusCode, b.statusCode].sort(), [200, 201], `${a.body} ${b.body}`);
    assert.equal(a.json<Registration>().client_id, b.json<Registration>().client_id);
  });

  const refusals: [string, () => Promise<Record<string, unknown>>, string, RegExp][] = [
    ['a certificate of an untrusted anchor', async () => ({ software_statement: await pki.softwareStatement(await pki.issue(['https://rogue.example/app'], { ca: pki.rogueRoot }), REG), udap: '1' }), 'unapproved_software_statement', /does not lead to a trust anchor/],
    ['an expired certificate', async () => ({ software_statement: await pki.softwareStatement(await pki.issue(['https://old.acme.example/app'], { notBefore: new Date(Date.now() - 10 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) }), REG), udap: '1' }), 'invalid_software_statement', /expired at/],
    [
      'a revoked certificate',
      async () => {
        const revoked = await pki.issue(['https://revoked.acme.example/app']);
        pki.revoke(revoked);
        return { software_statement: await pki.softwareStatement(revoked, REG), udap: '1' };
      },
      'unapproved_software_statement',
      /has been revoked \(CRL http:\/\/127\.0\.0\.1:\d+\/crl\/intermediate\.crl\)/,
    ],
    ['iss not a SAN URI of the certificate', async () => ({ software_statement: await pki.softwareStatement(client, REG, { iss: 'https://other.example/app', sub: 'https://other.example/app' }), udap: '1' }), 'invalid_software_statement', /iss https:\/\/other\.example\/app is not a URI in the Subject Alternative Name/],
    ['exp more than 5 minutes after iat', async () => ({ software_statement: await pki.softwareStatement(client, REG, { exp: Math.floor(Date.now() / 1000) + 600 }), udap: '1' }), 'invalid_software_statement', /exp must be at most 300 s \(5 minutes\) after iat/],
    ['aud not the registration endpoint', async () => ({ software_statement: await pki.softwareStatement(client, `${TEST_ISSUER}/register`), udap: '1' }), 'invalid_software_statement', /aud must be the registration endpoint, http:\/\/localhost:3000\/reg/],
    ['no udap: "1"', async () => ({ software_statement: await pki.softwareStatement(client, REG) }), 'invalid_client_metadata', /udap must be "1"/],
    ['a statement signed by another key than the certificate', async () => ({ software_statement: await new SignJWT({ iss: client.san }).setProtectedHeader({ alg: 'RS256', x5c: client.x5c }).sign((await pki.issue(['https://x.example'])).privateKey), udap: '1' }), 'invalid_software_statement', /signature does not verify/],
    ['a statement without x5c', async () => ({ software_statement: await new SignJWT({ iss: client.san }).setProtectedHeader({ alg: 'RS256' }).sign(client.privateKey), udap: '1' }), 'invalid_software_statement', /x5c header must be a non-empty array/],
    ['client_credentials and authorization_code together', async () => ({ software_statement: await pki.softwareStatement(client, REG, { grant_types: ['client_credentials', 'authorization_code'] }), udap: '1' }), 'invalid_client_metadata', /either authorization_code or client_credentials, not both/],
    ['no mailto: contact', async () => ({ software_statement: await pki.softwareStatement(client, REG, { contacts: ['https://acme.example'] }), udap: '1' }), 'invalid_client_metadata', /contacts must hold at least one mailto: address/],
    ['only scopes the community does not allow', async () => ({ software_statement: await pki.softwareStatement(client, REG, { scope: 'system/Patient.cud' }), udap: '1' }), 'invalid_client_metadata', /none of system\/Patient\.cud is allowed in this trust community/],
  ];
  for (const [what, payload, error, description] of refusals) {
    it(`refuses ${what}: 400 ${error}`, async () => {
      const res = await register(await payload());
      assert.equal(res.statusCode, 400, res.body);
      const body = res.json<OAuthError>();
      assert.equal(body.error, error);
      assert.match(body.error_description, description);
    });
  }

  it('refuses a replayed jti: invalid_software_statement', async () => {
    const party = await pki.issue(['https://replay.acme.example/app']);
    const statement = await pki.softwareStatement(party, REG, { jti: randomUUID() });
    assert.equal((await register({ software_statement: statement, udap: '1' })).statusCode, 201);
    const replayed = await register({ software_statement: statement, udap: '1' });
    assert.equal(replayed.statusCode, 400);
    assert.deepEqual(replayed.json<OAuthError>(), { error: 'invalid_software_statement', error_description: 'jti has been used already: every software statement needs a new one' });
  });

  it('a registration without software_statement still goes to RFC 7591 registration', async () => {
    const res = await register({ client_name: 'Plain app', redirect_uris: ['https://plain.example/cb'], token_endpoint_auth_method: 'none' });
    assert.equal(res.statusCode, 201, res.body);
    const body = res.json<{ client_id: string; client_name: string; registration_access_token: string }>();
    assert.equal(body.client_name, 'Plain app');
    assert.equal(typeof body.registration_access_token, 'string');
    // Only a verified software statement makes a UDAP client: a plain registration cannot claim to be one.
    const claiming = await register({ client_name: 'Impostor', redirect_uris: ['https://plain.example/cb'], token_endpoint_auth_method: 'none', udap_iss: 'https://b2b.acme.example/app', udap_community: pki.community });
    assert.equal(claiming.statusCode, 400);
    assert.deepEqual(claiming.json<OAuthError>(), { error: 'invalid_client_metadata', error_description: 'udap_iss is not client metadata a client can set' });
  });

  it('with REGISTRATION=off, only UDAP registrations are accepted; with REGISTRATION_STATUS=pending they wait for an operator', async () => {
    const closed = await testApp(ctx.current.database, { ...ENV, REGISTRATION: 'off', REGISTRATION_STATUS: 'pending', UDAP_CONFIG: await pki.configFile() });
    try {
      const plain = await closed.inject({ method: 'POST', url: '/reg', payload: { client_name: 'Plain app', redirect_uris: ['https://plain.example/cb'] } });
      assert.equal(plain.statusCode, 400);
      assert.equal(plain.json<OAuthError>().error, 'invalid_request');
      const party = await pki.issue(['https://pending.acme.example/app']);
      const res = await closed.inject({ method: 'POST', url: '/reg', payload: { software_statement: await pki.softwareStatement(party, REG), udap: '1' } });
      assert.equal(res.statusCode, 201, res.body);
      const stored = await closed.inject({ method: 'GET', url: `/admin/api/clients/${res.json<Registration>().client_id}`, headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
      assert.equal(stored.json<{ status: string }>().status, 'pending');
    } finally {
      await closed.close();
    }
  });

  it('a community that requires a certification refuses a registration without it, and accepts one with it', async () => {
    const certificationUri = 'https://example.org/udap/basic-app-certification';
    const strict = await testApp(ctx.current.database, { ...ENV, UDAP_CONFIG: await pki.configFile({ certificationsSupported: [certificationUri], certificationsRequired: [certificationUri] }) });
    try {
      const party = await pki.issue(['https://certified.acme.example/app']);
      const without = await strict.inject({ method: 'POST', url: '/reg', payload: { software_statement: await pki.softwareStatement(party, REG), udap: '1' } });
      assert.equal(without.statusCode, 400);
      assert.equal(without.json<OAuthError>().error, 'unapproved_software_statement');
      assert.match(without.json<OAuthError>().error_description, /requires the certification https:\/\/example\.org\/udap\/basic-app-certification/);

      const certifier = await pki.issue(['https://certifier.example']);
      const now = Math.floor(Date.now() / 1000);
      const certification = await new SignJWT({ iss: certifier.san, sub: party.san, iat: now, exp: now + 86_400, jti: randomUUID(), certification_name: 'Basic App', certification_uris: [certificationUri] })
        .setProtectedHeader({ alg: 'RS256', x5c: certifier.x5c })
        .sign(certifier.privateKey);
      const withIt = await strict.inject({ method: 'POST', url: '/reg', payload: { software_statement: await pki.softwareStatement(party, REG), udap: '1', certifications: [certification] } });
      assert.equal(withIt.statusCode, 201, withIt.body);
    } finally {
      await strict.close();
    }
  });
});
