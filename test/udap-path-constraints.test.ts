import 'reflect-metadata';

import assert from 'node:assert/strict';
import { KeyObject, randomUUID, type webcrypto } from 'node:crypto';
import { after, before, it } from 'node:test';

import { AsnConvert } from '@peculiar/asn1-schema';
import { GeneralName, GeneralSubtree, GeneralSubtrees, NameConstraints } from '@peculiar/asn1-x509';
import * as x509 from '@peculiar/x509';
import type { FastifyInstance } from 'fastify';
import { SignJWT } from 'jose';

import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { JWT_BEARER } from './helpers/assertions.js';
import { describeEachDatabase } from './helpers/databases.js';
import { tokenRequest } from './helpers/flow.js';
import { TestPki, type Party } from './helpers/udap-pki.js';

/**
 * RFC 5280 §6.1 on UDAP chains: a CA's pathLenConstraint and name constraints, and critical extensions this
 * server does not know. Without them, a member holding a CA limited to its own names mints a certificate
 * naming another member's app, takes over that app's registration and gets tokens as that client.
 */
const REG = `${TEST_ISSUER}/reg`;
const TOKEN = `${TEST_ISSUER}/token`;
const RSA = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 };
const TREAT = 'urn:oid:2.16.840.1.113883.5.8#TREAT';
const VICTIM = 'https://victim.example/app';

interface Issued {
  readonly cert: x509.X509Certificate;
  readonly key: webcrypto.CryptoKey;
}

let serial = 0x5000;
async function issue(subject: string, issuer: Issued, options: { sans?: string[]; ca?: boolean; pathLen?: number; extensions?: x509.Extension[] } = {}): Promise<Issued> {
  const keys = await crypto.subtle.generateKey(RSA, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: (serial++).toString(16),
    subject,
    issuer: issuer.cert.subject,
    notBefore: new Date(Date.now() - 86_400_000),
    notAfter: new Date(Date.now() + 30 * 86_400_000),
    signingAlgorithm: RSA,
    publicKey: keys.publicKey,
    signingKey: issuer.key,
    extensions: [
      new x509.BasicConstraintsExtension(options.ca ?? false, options.pathLen, true),
      new x509.KeyUsagesExtension(options.ca ? x509.KeyUsageFlags.keyCertSign : x509.KeyUsageFlags.digitalSignature, true),
      ...(options.sans ? [new x509.SubjectAlternativeNameExtension(options.sans.map((value) => ({ type: 'url' as const, value })))] : []),
      ...(options.extensions ?? []),
    ],
  });
  return { cert, key: keys.privateKey };
}

/** A critical NameConstraints extension permitting URIs whose host is under `domain`. */
function permitUrisUnder(domain: string): x509.Extension {
  const constraints = new NameConstraints({ permittedSubtrees: new GeneralSubtrees([new GeneralSubtree({ base: new GeneralName({ uniformResourceIdentifier: `.${domain}` }) })]) });
  return new x509.Extension('2.5.29.30', true, AsnConvert.serialize(constraints));
}

const der = (cert: x509.X509Certificate) => Buffer.from(cert.rawData).toString('base64');

describeEachDatabase('UDAP chains: pathLenConstraint, name constraints, critical extensions', (ctx) => {
  let pki: TestPki;
  let app: FastifyInstance;
  let victimId: string;
  before(async () => {
    pki = await TestPki.create([TEST_ISSUER, TEST_FHIR_BASE]);
    app = await testApp(ctx.current.database, { OUTBOUND_ALLOW_PRIVATE: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN, REGISTRATION_PER_HOUR: '0', UDAP_CONFIG: await pki.configFile({ purposesOfUse: [TREAT] }) });
    const victim: Party = await pki.issue([VICTIM]);
    const res = await app.inject({ method: 'POST', url: '/reg', payload: { software_statement: await pki.softwareStatement(victim, REG), udap: '1' } });
    assert.equal(res.statusCode, 201, res.body);
    victimId = res.json<{ client_id: string }>().client_id;
  });
  after(async () => {
    await app.close();
    await pki.close();
  });

  const root = (): Issued => ({ cert: pki.root.cert, key: pki.root.keys.privateKey });
  const intermediate = (): Issued => ({ cert: pki.intermediate.cert, key: pki.intermediate.keys.privateKey });

  async function register(chain: x509.X509Certificate[], key: webcrypto.CryptoKey, iss = VICTIM) {
    const now = Math.floor(Date.now() / 1000);
    const statement = await new SignJWT({ iss, sub: iss, aud: REG, iat: now, exp: now + 300, jti: randomUUID(), client_name: 'Someone else', contacts: ['mailto:ops@acme.example'], grant_types: ['client_credentials'], token_endpoint_auth_method: 'private_key_jwt', scope: 'system/Patient.rs' })
      .setProtectedHeader({ alg: 'RS256', x5c: chain.map(der) })
      .sign(KeyObject.from(key));
    return app.inject({ method: 'POST', url: '/reg', payload: { software_statement: statement, udap: '1' } });
  }

  async function tokenAsVictim(chain: x509.X509Certificate[], key: webcrypto.CryptoKey) {
    const now = Math.floor(Date.now() / 1000);
    const assertion = await new SignJWT({ iss: victimId, sub: victimId, aud: TOKEN, iat: now, exp: now + 300, jti: randomUUID(), extensions: { 'hl7-b2b': { version: '1', organization_id: 'https://acme.example/org', purpose_of_use: [TREAT] } } })
      .setProtectedHeader({ alg: 'RS256', x5c: chain.map(der), typ: 'JWT' })
      .sign(KeyObject.from(key));
    return tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs', udap: '1', client_assertion_type: JWT_BEARER, client_assertion: assertion });
  }

  it('a CA limited to acme.example certifies its own apps, and cannot certify another member’s app: neither its registration nor a token', async () => {
    const acmeCa = await issue('CN=Acme CA', root(), { ca: true, pathLen: 0, extensions: [permitUrisUnder('acme.example')] });
    const own = await issue('CN=Acme app', acmeCa, { sans: ['https://app.acme.example/b2b'] });
    const ownRes = await register([own.cert, acmeCa.cert], own.key, 'https://app.acme.example/b2b');
    assert.equal(ownRes.statusCode, 201, ownRes.body);

    const forged = await issue('CN=victim', acmeCa, { sans: [VICTIM] });
    const res = await register([forged.cert, acmeCa.cert], forged.key);
    assert.equal(res.statusCode, 400, res.body);
    assert.deepEqual(res.json(), { error: 'invalid_software_statement', error_description: `software_statement: ${VICTIM} in CN=victim is outside the names CN=Acme CA may certify (name constraints)` });
    const token = await tokenAsVictim([forged.cert, acmeCa.cert], forged.key);
    assert.equal(token.statusCode, 401, token.body);
    assert.equal(token.json<{ error: string }>().error, 'invalid_client');
  });

  it('a CA below an intermediate whose pathLenConstraint is 0 cannot certify anything', async () => {
    const subCa = await issue('CN=Org sub-CA', intermediate(), { ca: true });
    const forged = await issue('CN=victim', subCa, { sans: [VICTIM] });
    const res = await register([forged.cert, subCa.cert, pki.intermediate.cert], forged.key);
    assert.equal(res.statusCode, 400, res.body);
    assert.match(res.json<{ error_description: string }>().error_description, /CN=Test UDAP Intermediate allows 0 intermediate CA\(s\) below it \(pathLenConstraint\); this path has 1/);
    assert.equal((await tokenAsVictim([forged.cert, subCa.cert, pki.intermediate.cert], forged.key)).statusCode, 401);
  });

  it('a certificate with a critical extension this server does not recognise is refused', async () => {
    const odd = await issue('CN=odd', intermediate(), { sans: ['https://odd.example/app'], extensions: [new x509.Extension('1.2.3.4.5.6.7', true, new Uint8Array([5, 0]))] });
    const res = await register([odd.cert, pki.intermediate.cert], odd.key, 'https://odd.example/app');
    assert.equal(res.statusCode, 400, res.body);
    assert.match(res.json<{ error_description: string }>().error_description, /CN=odd has a critical extension this server does not recognise \(1\.2\.3\.4\.5\.6\.7\)/);
  });

  it('the victim’s registration is unchanged', async () => {
    const stored = await app.inject({ method: 'GET', url: `/admin/api/clients/${victimId}`, headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
    assert.equal(stored.json<{ client_name: string }>().client_name, 'Acme B2B App');
  });
});
