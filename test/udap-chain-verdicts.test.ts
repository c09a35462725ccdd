import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { parseX5c, type ChainCertificate } from '../src/smart/udap/certificates.js';
import { ChainVerdicts, MAX_VERDICT_MS } from '../src/udap/chain-verdicts.js';
import { testApp, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { JWT_BEARER } from './helpers/assertions.js';
import { describeEachDatabase } from './helpers/databases.js';
import { tokenRequest } from './helpers/flow.js';
import { TestPki, type Party } from './helpers/udap-pki.js';

const REG = `${TEST_ISSUER}/reg`;
const TOKEN = `${TEST_ISSUER}/token`;
const b2b = { 'hl7-b2b': { version: '1', organization_id: 'https://acme.example/org', purpose_of_use: ['urn:oid:2.16.840.1.113883.5.8#TREAT'] } };

interface OAuthError {
  error: string;
  error_description: string;
}

describe('ChainVerdicts: good chains kept per community, bounded in number and time', () => {
  let pki: TestPki;
  let leaf: ChainCertificate;
  let x5c: string[];
  before(async () => {
    pki = await TestPki.create([TEST_ISSUER]);
    x5c = (await pki.issue(['https://one.example/app'])).x5c;
    leaf = (parseX5c(x5c) as ChainCertificate[])[0]!;
  });
  after(() => pki.close());

  it('a verdict stands from when it was reached until its end, capped at five minutes, and only for its community', () => {
    const verdicts = new ChainVerdicts();
    const key = ChainVerdicts.keyOf(x5c)!;
    verdicts.set(key, 'urn:a', leaf, 1_000, 1_000 + 10 * MAX_VERDICT_MS);
    assert.equal(verdicts.get(key, 'urn:a', 1_000 + MAX_VERDICT_MS - 1), leaf);
    assert.equal(verdicts.get(key, 'urn:a', 1_000 + MAX_VERDICT_MS), undefined, 'capped');
    verdicts.set(key, 'urn:a', leaf, 1_000, 5_000);
    assert.equal(verdicts.get(key, 'urn:b', 2_000), undefined, 'another community');
    assert.equal(verdicts.get(key, 'urn:a', 999), undefined, 'before it was reached');
    assert.equal(verdicts.get(key, 'urn:a', 5_000), undefined, 'at its end');
    verdicts.set(key, 'urn:a', leaf, 1_000, 1_000);
    assert.equal(verdicts.size, 0, 'a verdict that ends at once is not kept');
  });

  it('the key is the chain: another chain, or a malformed x5c, does not share it', async () => {
    const other = (await pki.issue(['https://two.example/app'])).x5c;
    assert.notEqual(ChainVerdicts.keyOf(other), ChainVerdicts.keyOf(x5c));
    assert.equal(ChainVerdicts.keyOf(x5c), ChainVerdicts.keyOf([...x5c]));
    assert.equal(ChainVerdicts.keyOf([]), undefined);
    assert.equal(ChainVerdicts.keyOf([1]), undefined);
    assert.equal(ChainVerdicts.keyOf(new Array(11).fill(x5c[0])), undefined);
  });

  it('the least recently used verdict goes first when full', () => {
    const verdicts = new ChainVerdicts(2);
    for (const key of ['a', 'b']) verdicts.set(key, 'urn:c', leaf, 0, 60_000);
    assert.equal(verdicts.get('a', 'urn:c', 1), leaf);
    verdicts.set('c', 'urn:c', leaf, 0, 60_000);
    assert.equal(verdicts.size, 2);
    assert.equal(verdicts.get('b', 'urn:c', 1), undefined);
    assert.equal(verdicts.get('a', 'urn:c', 1), leaf);
    assert.equal(verdicts.get('c', 'urn:c', 1), leaf);
  });
});

describeEachDatabase('UDAP token requests reuse a chain verdict no longer than its certificates and CRLs allow', (ctx) => {
  let pki: TestPki;
  before(async () => {
    pki = await TestPki.create([TEST_ISSUER, TEST_FHIR_BASE]);
  });
  after(() => pki.close());

  /** A server of its own for each test: its CRL cache starts empty. */
  const withServer = async (crlMaxAge: number, test: (app: FastifyInstance) => Promise<void>) => {
    pki.crlMaxAge = crlMaxAge;
    const app = await testApp(ctx.current.database, { OUTBOUND_ALLOW_PRIVATE: 'true', REGISTRATION_PER_HOUR: '0', UDAP_CONFIG: await pki.configFile() });
    try {
      await test(app);
    } finally {
      pki.crlMaxAge = undefined;
      await app.close();
    }
  };
  const register = async (app: FastifyInstance, party: Party): Promise<string> => {
    const res = await app.inject({ method: 'POST', url: '/reg', payload: { software_statement: await pki.softwareStatement(party, REG), udap: '1' } });
    assert.equal(res.statusCode, 201, res.body);
    return res.json<{ client_id: string }>().client_id;
  };
  const clientCredentials = async (app: FastifyInstance, party: Party, clientId: string) =>
    tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs', udap: '1', client_assertion_type: JWT_BEARER, client_assertion: await pki.authenticationToken(party, clientId, TOKEN, { extensions: b2b }) });

  it('a certificate that expires after its chain was found good is refused at the first use after it expires', async () => {
    await withServer(300, async (app) => {
      // X.509 validity has whole seconds.
      const notAfter = new Date(Math.floor(Date.now() / 1000) * 1000 + 4_000);
      const party = await pki.issue(['https://short-lived.acme.example/app'], { notAfter });
      const id = await register(app, party);
      assert.equal((await clientCredentials(app, party, id)).statusCode, 200);
      await sleep(notAfter.getTime() - Date.now() + 1_100);
      const res = await clientCredentials(app, party, id);
      assert.equal(res.statusCode, 401, res.body);
      assert.equal(res.json<OAuthError>().error, 'invalid_client');
      assert.match(res.json<OAuthError>().error_description, /the client assertion's certificate: CN=https:\/\/short-lived\.acme\.example\/app expired at /);
    });
  });

  it('a certificate revoked after its chain was found good is refused once the CRL cache fetches the CRL again', async () => {
    await withServer(2, async (app) => {
      const party = await pki.issue(['https://revoked-later.acme.example/app']);
      const id = await register(app, party);
      assert.equal((await clientCredentials(app, party, id)).statusCode, 200);
      pki.revoke(party);
      // The CRL cache still holds the list without it, and so does the verdict: as before the verdict cache.
      assert.equal((await clientCredentials(app, party, id)).statusCode, 200);
      await sleep(2_100);
      const res = await clientCredentials(app, party, id);
      assert.equal(res.statusCode, 401, res.body);
      assert.match(res.json<OAuthError>().error_description, /CN=https:\/\/revoked-later\.acme\.example\/app has been revoked/);
    });
  });
});
