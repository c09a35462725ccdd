import 'reflect-metadata';

import assert from 'node:assert/strict';
import { X509Certificate, type webcrypto } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import * as x509 from '@peculiar/x509';

import { checkChain, crlUrlsOf, parseX5c, revocationOf, type ChainCertificate, type CrlFetch } from '../../src/smart/udap/certificates.js';
import { TestPki } from '../helpers/udap-pki.js';

const RSA = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 };

describe('UDAP certificate chains (pure)', () => {
  let pki: TestPki;
  let anchor: X509Certificate;
  before(async () => {
    pki = await TestPki.create(['https://server.example']);
    anchor = new X509Certificate(Buffer.from(pki.root.cert.rawData));
  });
  after(() => pki.close());

  const chainOf = (x5c: string[]): ChainCertificate[] => {
    const chain = parseX5c(x5c);
    if (typeof chain === 'string') return assert.fail(chain);
    return chain;
  };
  const crl = async (ca: typeof pki.root, options: { signer?: webcrypto.CryptoKey; nextUpdate?: Date; revoked?: string[] } = {}): Promise<CrlFetch> => {
    const generated = await x509.X509CrlGenerator.create({
      issuer: ca.cert.subject,
      thisUpdate: new Date(Date.now() - 86_400_000),
      nextUpdate: options.nextUpdate ?? new Date(Date.now() + 86_400_000),
      entries: (options.revoked ?? []).map((serialNumber) => ({ serialNumber, revocationDate: new Date() })),
      signingAlgorithm: RSA,
      signingKey: options.signer ?? ca.keys.privateKey,
    });
    return { der: Buffer.from(generated.rawData) };
  };

  it('a chain through the intermediate to the anchor holds; the path names both CRLs', async () => {
    const party = await pki.issue(['https://a.example/app']);
    const result = checkChain(chainOf(party.x5c), [anchor], new Date());
    assert.ok(result.ok);
    assert.deepEqual(result.leaf.sanUris, ['https://a.example/app']);
    assert.deepEqual(crlUrlsOf(result.path), [pki.intermediate.crlUrl, pki.root.crlUrl]);
    const crls = new Map([[pki.intermediate.crlUrl, await crl(pki.intermediate)], [pki.root.crlUrl, await crl(pki.root)]]);
    assert.equal(revocationOf(result.path, crls, new Date()), undefined);
  });

  it('a leaf not for digital signatures, or without its intermediate, is refused', async () => {
    const encipher = await pki.issue(['https://b.example/app'], { keyUsage: x509.KeyUsageFlags.keyEncipherment });
    assert.deepEqual(checkChain(chainOf(encipher.x5c), [anchor], new Date()), { ok: false, kind: 'invalid', message: 'the signing certificate is not for digital signatures (KeyUsage)' });
    const party = await pki.issue(['https://c.example/app']);
    const alone = checkChain(chainOf(party.x5c.slice(0, 1)), [anchor], new Date());
    assert.equal(alone.ok ? 'ok' : alone.kind, 'untrusted');
  });

  it('a CRL signed by another key, out of date, or missing leaves revocation unknown; a listed serial is revoked', async () => {
    const party = await pki.issue(['https://d.example/app']);
    const result = checkChain(chainOf(party.x5c), [anchor], new Date());
    assert.ok(result.ok);
    const rootCrl = await crl(pki.root);
    const withIntermediate = (fetched: CrlFetch) => new Map([[pki.intermediate.crlUrl, fetched], [pki.root.crlUrl, rootCrl]]);
    const forged = revocationOf(result.path, withIntermediate(await crl(pki.intermediate, { signer: pki.rogueRoot.keys.privateKey })), new Date());
    assert.match(forged?.message ?? '', /is not signed by the issuer of the certificate/);
    assert.equal(forged?.kind, 'invalid');
    const stale = revocationOf(result.path, withIntermediate(await crl(pki.intermediate, { nextUpdate: new Date(Date.now() - 60_000) })), new Date());
    assert.match(stale?.message ?? '', /is out of date/);
    const missing = revocationOf(result.path, new Map([[pki.root.crlUrl, rootCrl]]), new Date());
    assert.match(missing?.message ?? '', /was not fetched/);
    const revoked = revocationOf(result.path, withIntermediate(await crl(pki.intermediate, { revoked: [party.cert.serialNumber] })), new Date());
    assert.equal(revoked?.kind, 'revoked');
  });

  it('x5c that is not base64 DER is named', () => {
    assert.equal(parseX5c('MII'), 'the x5c header must be a non-empty array of base64 DER certificates');
    assert.equal(parseX5c(['bm90IGEgY2VydA==']), 'x5c[0] is not a DER certificate in base64');
  });
});
