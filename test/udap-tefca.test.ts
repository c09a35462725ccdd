import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { TEFCA_BASIC_APP_CERTIFICATION } from '../src/config/udap-config.js';
import { testApp, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { JWT_BEARER } from './helpers/assertions.js';
import { describeEachDatabase } from './helpers/databases.js';
import { tokenRequest } from './helpers/flow.js';
import { TestPki, type Party } from './helpers/udap-pki.js';

const REG = `${TEST_ISSUER}/reg`;
const TOKEN = `${TEST_ISSUER}/token`;
const XP = 'urn:oid:2.16.840.1.113883.3.7204.1.5.2.1#';
const T_TREAT = `${XP}T-TREAT`;
const T_PYMNT = `${XP}T-PYMNT`;

interface OAuthError {
  error: string;
  error_description: string;
}

describeEachDatabase('UDAP: the TEFCA profile', (ctx) => {
  let pki: TestPki;
  let app: FastifyInstance;
  let certifier: Party;
  let app1: Party;
  before(async () => {
    pki = await TestPki.create([TEST_ISSUER, TEST_FHIR_BASE]);
    certifier = await pki.issue(['https://certifier.tefca.example']);
    app1 = await pki.issue(['https://qhin-app.example/app']);
    app = await testApp(ctx.current.database, { OUTBOUND_ALLOW_PRIVATE: 'true', REGISTRATION_PER_HOUR: '0', UDAP_CONFIG: await pki.configFile({ tefca: true }) });
  });
  after(async () => {
    await app.close();
    await pki.close();
  });

  const register = async (party: Party, certifications: string[]) =>
    app.inject({ method: 'POST', url: '/reg', payload: { software_statement: await pki.softwareStatement(party, REG), udap: '1', certifications } });
  const basicCertification = (party: Party, purposes: string[]) => pki.certification(certifier, party, [TEFCA_BASIC_APP_CERTIFICATION], { exchange_purposes: purposes });
  const b2bToken = async (party: Party, clientId: string, purposes: string[]) =>
    tokenRequest(app, {
      grant_type: 'client_credentials',
      scope: 'system/Patient.rs',
      udap: '1',
      client_assertion_type: JWT_BEARER,
      client_assertion: await pki.authenticationToken(party, clientId, TOKEN, { extensions: { 'hl7-b2b': { version: '1', organization_id: 'https://qhin-app.example/org', purpose_of_use: purposes } } }),
    });

  it('discovery requires the Basic App Certification', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/fhir/.well-known/udap' })).json<{ udap_certifications_supported: string[]; udap_certifications_required: string[] }>();
    assert.deepEqual(doc.udap_certifications_supported, [TEFCA_BASIC_APP_CERTIFICATION]);
    assert.deepEqual(doc.udap_certifications_required, [TEFCA_BASIC_APP_CERTIFICATION]);
  });

  it('a registration without the certification, or whose certification names two exchange purposes: unapproved_software_statement', async () => {
    const none = await register(app1, []);
    assert.equal(none.statusCode, 400);
    assert.equal(none.json<OAuthError>().error, 'unapproved_software_statement');
    const two = await register(app1, [await basicCertification(app1, [T_TREAT, T_PYMNT])]);
    assert.equal(two.statusCode, 400);
    assert.deepEqual(two.json<OAuthError>(), { error: 'unapproved_software_statement', error_description: `the ${TEFCA_BASIC_APP_CERTIFICATION} certification must name exactly one exchange purpose in exchange_purposes: register once per exchange purpose` });
  });

  it('one client per exchange purpose; hl7-b2b must carry exactly that purpose; tokens live at most an hour', async () => {
    const treat = await register(app1, [await basicCertification(app1, [T_TREAT])]);
    assert.equal(treat.statusCode, 201, treat.body);
    const payment = await register(app1, [await basicCertification(app1, [T_PYMNT])]);
    assert.equal(payment.statusCode, 201, payment.body);
    const treatId = treat.json<{ client_id: string }>().client_id;
    assert.notEqual(payment.json<{ client_id: string }>().client_id, treatId);
    const again = await register(app1, [await basicCertification(app1, [T_TREAT])]);
    assert.equal(again.statusCode, 200);
    assert.equal(again.json<{ client_id: string }>().client_id, treatId);

    const ok = await b2bToken(app1, treatId, [T_TREAT]);
    assert.equal(ok.statusCode, 200, ok.body);
    assert.ok(ok.json<{ expires_in: number }>().expires_in <= 3600);
    const two = await b2bToken(app1, treatId, [T_TREAT, T_PYMNT]);
    assert.equal(two.statusCode, 400);
    assert.match(two.json<OAuthError>().error_description, /purpose_of_use must hold exactly one code in this community; it holds 2/);
    const other = await b2bToken(app1, treatId, [T_PYMNT]);
    assert.equal(other.statusCode, 400);
    assert.equal(other.json<OAuthError>().error, 'invalid_grant');
    assert.match(other.json<OAuthError>().error_description, /purpose_of_use must be urn:oid:2\.16\.840\.1\.113883\.3\.7204\.1\.5\.2\.1#T-TREAT, the exchange purpose this client registered for/);
  });
});
