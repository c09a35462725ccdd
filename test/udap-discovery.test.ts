import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { compactVerify, decodeProtectedHeader } from 'jose';

import { ConfigError } from '../src/config/config.js';
import { testApp, testConfig, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { describeEachDatabase } from './helpers/databases.js';
import { TestPki } from './helpers/udap-pki.js';

interface UdapMetadata {
  udap_versions_supported: string[];
  udap_profiles_supported: string[];
  udap_authorization_extensions_supported: string[];
  udap_authorization_extensions_required: string[];
  udap_certifications_supported: string[];
  udap_certifications_required?: string[];
  token_endpoint_auth_methods_supported: string[];
  token_endpoint_auth_signing_alg_values_supported: string[];
  registration_endpoint_jwt_signing_alg_values_supported: string[];
  grant_types_supported: string[];
  authorization_endpoint: string;
  token_endpoint: string;
  registration_endpoint: string;
  signed_metadata: string;
}

describeEachDatabase('UDAP discovery and signed metadata', (ctx) => {
  let pki: TestPki;
  let app: FastifyInstance;
  before(async () => {
    pki = await TestPki.create([TEST_ISSUER, TEST_FHIR_BASE]);
    app = await testApp(ctx.current.database, { UDAP_CONFIG: await pki.configFile({ certificationsSupported: ['https://example.org/cert/basic'] }) });
  });
  after(async () => {
    await app.close();
    await pki.close();
  });

  for (const [path, base] of [['/.well-known/udap', TEST_ISSUER], ['/fhir/.well-known/udap', TEST_FHIR_BASE]] as const) {
    it(`${path}: the metadata, and signed_metadata that verifies against the server's certificate chain`, async () => {
      const res = await app.inject({ method: 'GET', url: path });
      assert.equal(res.statusCode, 200);
      assert.equal(res.headers['content-type'], 'application/json; charset=utf-8');
      const doc = res.json<UdapMetadata>();
      assert.deepEqual(doc.udap_versions_supported, ['1']);
      assert.deepEqual(doc.udap_profiles_supported, ['udap_dcr', 'udap_authn', 'udap_authz']);
      assert.deepEqual(doc.udap_authorization_extensions_supported, ['hl7-b2b']);
      assert.deepEqual(doc.udap_authorization_extensions_required, ['hl7-b2b']);
      assert.deepEqual(doc.udap_certifications_supported, ['https://example.org/cert/basic']);
      assert.deepEqual(doc.udap_certifications_required, []);
      assert.deepEqual(doc.token_endpoint_auth_methods_supported, ['private_key_jwt']);
      assert.ok(doc.token_endpoint_auth_signing_alg_values_supported.includes('RS256'));
      assert.ok(doc.registration_endpoint_jwt_signing_alg_values_supported.includes('RS256'));
      assert.deepEqual(doc.grant_types_supported, ['authorization_code', 'refresh_token', 'client_credentials']);
      assert.equal(doc.registration_endpoint, `${TEST_ISSUER}/reg`);

      const header = decodeProtectedHeader(doc.signed_metadata);
      assert.equal(header.alg, 'RS256');
      const chain = (header.x5c ?? []).map((c) => new X509Certificate(Buffer.from(c, 'base64')));
      assert.equal(chain.length, 2);
      // The chain leads to the community's anchor, and the leaf names this base URL.
      assert.ok(chain[0]!.verify(chain[1]!.publicKey));
      assert.ok(chain[1]!.verify(new X509Certificate(Buffer.from(pki.root.cert.rawData)).publicKey));
      assert.ok(chain[0]!.subjectAltName?.split(', ').includes(`URI:${base}`));
      const { payload } = await compactVerify(doc.signed_metadata, chain[0]!.publicKey);
      const claims = JSON.parse(new TextDecoder().decode(payload)) as Record<string, unknown>;
      assert.equal(claims.iss, base);
      assert.equal(claims.sub, base);
      assert.equal(claims.token_endpoint, doc.token_endpoint);
      assert.equal(claims.authorization_endpoint, doc.authorization_endpoint);
      assert.equal(claims.registration_endpoint, doc.registration_endpoint);
      assert.equal(typeof claims.jti, 'string');
      const lifetime = (claims.exp as number) - (claims.iat as number);
      assert.ok(lifetime > 0 && lifetime <= 365 * 86_400, `lifetime ${lifetime} s is at most a year`);
    });
  }

  it('?community= names a community: its metadata; an unknown one: 204', async () => {
    const known = await app.inject({ method: 'GET', url: `/.well-known/udap?community=${encodeURIComponent(pki.community)}` });
    assert.equal(known.statusCode, 200);
    const unknown = await app.inject({ method: 'GET', url: '/.well-known/udap?community=urn:oid:1.2.3.4' });
    assert.equal(unknown.statusCode, 204);
    assert.equal(unknown.body, '');
  });

  it('without UDAP_CONFIG there is no UDAP: 404', async () => {
    const plain = await testApp(ctx.current.database);
    try {
      assert.equal((await plain.inject({ method: 'GET', url: '/.well-known/udap' })).statusCode, 404);
      assert.equal((await plain.inject({ method: 'GET', url: '/fhir/.well-known/udap' })).statusCode, 404);
    } finally {
      await plain.close();
    }
  });

  it('a bad UDAP_CONFIG stops the start with a message naming the file and the fault', async () => {
    const problems = (env: Record<string, string>): string[] => {
      try {
        testConfig(env);
      } catch (error) {
        assert.ok(error instanceof ConfigError);
        return [...error.problems];
      }
      return assert.fail('expected a ConfigError');
    };
    const missing = problems({ UDAP_CONFIG: `${pki.dir}/nope.json` });
    assert.match(missing[0]!, /^UDAP_CONFIG \(.*nope\.json\): cannot be read: ENOENT$/);
    const wrongKey = await pki.configFile({ privateKey: 'anchor.pem' });
    assert.match(problems({ UDAP_CONFIG: wrongKey })[0]!, /communities\[0\]\.privateKey: anchor\.pem holds no PEM private key/);
    const noAnchor = await pki.configFile({ trustAnchors: ['missing.pem'] });
    assert.match(problems({ UDAP_CONFIG: noAnchor })[0]!, /communities\[0\]\.trustAnchors\[0\]: missing\.pem cannot be read: ENOENT/);
    const unknownSetting = await pki.configFile({ colour: 'blue' });
    assert.match(problems({ UDAP_CONFIG: unknownSetting })[0]!, /communities\[0\]\.colour: is not a known setting/);
    const badRequired = await pki.configFile({ certificationsRequired: ['https://example.org/x'] });
    assert.match(problems({ UDAP_CONFIG: badRequired })[0]!, /certificationsRequired: https:\/\/example\.org\/x must also be in certificationsSupported/);
  });
});
