import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, it } from 'node:test';

import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { SignJWT } from 'jose';

import { ConfigError } from '../src/config/config.js';
import { TEFCA_BASIC_APP_CERTIFICATION } from '../src/config/udap-config.js';
import { upsertPatient } from '../src/directory/patients.js';
import { testApp, testConfig, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { clientKey, JWT_BEARER, JwksServer, type ClientKey } from './helpers/assertions.js';
import { describeEachDatabase } from './helpers/databases.js';
import { tokenRequest } from './helpers/flow.js';
import { TestPki, type Party } from './helpers/udap-pki.js';

const REG = `${TEST_ISSUER}/reg`;
const TOKEN = `${TEST_ISSUER}/token`;
const XP = 'urn:oid:2.16.840.1.113883.3.7204.1.5.2.1#';
const T_IAS = `${XP}T-IAS`;
const T_TREAT = `${XP}T-TREAT`;
const CSP = 'https://csp.example';
const ROGUE_CSP = 'https://rogue-csp.example';
const IAL2_POLICY = 'urn:oid:2.16.840.1.113883.3.7204.1.1.1.1.2.1';
const INVALID_GRANT = 'grant request is invalid';

interface OAuthError {
  error: string;
  error_description: string;
}
interface TokenBody {
  access_token: string;
  token_type: string;
  scope: string;
  patient?: string;
}

const patientInformation = (family: string, given: string, birthDate?: string) => ({
  resourceType: 'Patient',
  name: [{ family, given: [given] }],
  ...(birthDate ? { birthDate } : {}),
  telecom: [{ system: 'email', value: 'someone@example.org' }],
});
const ONESELF = { resourceType: 'RelatedPerson', relationship: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-RoleCode', code: 'ONESELF' }] }] };

describeEachDatabase('UDAP: TEFCA Individual Access Services (tefca_ias)', (ctx) => {
  let pki: TestPki;
  let app: FastifyInstance;
  let jwks: JwksServer;
  let cspKey: ClientKey;
  let certifier: Party;
  let iasApp: Party;
  let iasId: string;
  let treatApp: Party;
  let treatId: string;

  before(async () => {
    pki = await TestPki.create([TEST_ISSUER, TEST_FHIR_BASE]);
    jwks = await JwksServer.start();
    cspKey = await clientKey('RS256', 'csp-key-1');
    jwks.keys = [cspKey.jwk];
    jwks.behaviour = { headers: { 'content-type': 'application/json', 'cache-control': 'no-store' } };
    app = await testApp(ctx.current.database, {
      OUTBOUND_ALLOW_PRIVATE: 'true',
      REGISTRATION_PER_HOUR: '0',
      UDAP_CONFIG: await pki.configFile({ tefca: true, credentialServiceProviders: [{ issuer: CSP, jwksUri: jwks.url }] }),
    });
    const db = ctx.current.database.db;
    await upsertPatient(db, { resourceType: 'Patient', id: 'ias-zoe', name: [{ use: 'official', family: 'Nguyễn', given: ['Zoë', 'Anh'] }], birthDate: '1990-04-12' });
    await upsertPatient(db, { resourceType: 'Patient', id: 'ias-zoe-other', name: [{ family: 'Nguyen', given: ['Thi'] }], birthDate: '1990-04-12' });
    await upsertPatient(db, { resourceType: 'Patient', id: 'ias-twin-1', name: [{ family: 'Smith', given: ['Alex'] }], birthDate: '2001-02-03' });
    await upsertPatient(db, { resourceType: 'Patient', id: 'ias-twin-2', name: [{ family: 'SMITH', given: ['Alex', 'B'] }], birthDate: '2001-02-03' });
    certifier = await pki.issue(['https://certifier.tefca.example']);
    iasApp = await pki.issue(['https://ias-provider.example/app']);
    treatApp = await pki.issue(['https://treating.example/app']);
    iasId = await register(app, iasApp, T_IAS, 'patient/Patient.rs patient/Observation.rs');
    treatId = await register(app, treatApp, T_TREAT, 'system/Patient.rs');
  });
  after(async () => {
    await app.close();
    await jwks.close();
    await pki.close();
  });

  const register = async (on: FastifyInstance, party: Party, purpose: string, scope: string): Promise<string> => {
    const certification = await pki.certification(certifier, party, [TEFCA_BASIC_APP_CERTIFICATION], { exchange_purposes: [purpose] });
    const res = await on.inject({ method: 'POST', url: '/reg', payload: { software_statement: await pki.softwareStatement(party, REG, { scope }), udap: '1', certifications: [certification] } });
    assert.equal(res.statusCode, 201, res.body);
    return res.json<{ client_id: string }>().client_id;
  };

  /** An id_token of the CSP (or as `options` say) for the person named. */
  const idToken = async (options: { iss?: string; key?: ClientKey; exp?: number; claims?: Record<string, unknown> } = {}) => {
    const now = Math.floor(Date.now() / 1000);
    const key = options.key ?? cspKey;
    return new SignJWT({ iss: options.iss ?? CSP, sub: 'csp-user-42', aud: 'ias-provider-client', iat: now - 60, exp: options.exp ?? now + 600, family_name: 'Nguyen', given_name: 'Zoe', birthdate: '1990-04-12', ...options.claims })
      .setProtectedHeader({ alg: 'RS256', kid: key.kid })
      .sign(key.privateKey);
  };

  const tefcaIas = async (overrides: Record<string, unknown> = {}) => ({
    version: '1',
    id_token: await idToken(),
    user_information: ONESELF,
    patient_information: patientInformation('NGUYEN', 'zoe', '1990-04-12'),
    consent_policy: [IAL2_POLICY],
    ...overrides,
  });

  const iasRequest = async (on: FastifyInstance, party: Party, clientId: string, ias: unknown, options: { scope?: string; purpose?: string } = {}) =>
    tokenRequest(on, {
      grant_type: 'client_credentials',
      scope: options.scope ?? 'patient/Patient.rs',
      udap: '1',
      client_assertion_type: JWT_BEARER,
      client_assertion: await pki.authenticationToken(party, clientId, TOKEN, {
        extensions: { 'hl7-b2b': { version: '1', organization_id: 'https://ias-provider.example/org', purpose_of_use: [options.purpose ?? T_IAS] }, ...(ias === undefined ? {} : { tefca_ias: ias }) },
      }),
    });

  const refusal = (res: LightMyRequestResponse, error: string, description: string) => {
    assert.equal(res.statusCode, 400, res.body);
    assert.deepEqual(res.json<OAuthError>(), { error, error_description: description });
  };

  it('discovery lists tefca_ias among the authorization extensions of a TEFCA community', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/fhir/.well-known/udap' })).json<{ udap_authorization_extensions_supported: string[]; udap_authorization_extensions_required: string[] }>();
    assert.deepEqual(doc.udap_authorization_extensions_supported, ['hl7-b2b', 'tefca_ias']);
    assert.deepEqual(doc.udap_authorization_extensions_required, ['hl7-b2b']);
  });

  it("one patient matches (case and accents aside): a token for that patient, patient/ scopes only, the extension on the token through introspection, the match audited", async () => {
    const ias = await tefcaIas();
    const res = await iasRequest(app, iasApp, iasId, ias);
    assert.equal(res.statusCode, 200, res.body);
    const body = res.json<TokenBody>();
    assert.equal(body.token_type, 'Bearer');
    assert.equal(body.scope, 'patient/Patient.rs');
    assert.equal(body.patient, 'ias-zoe');

    const introspected = await app.inject({
      method: 'POST',
      url: '/introspect',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: new URLSearchParams({ token: body.access_token, client_assertion_type: JWT_BEARER, client_assertion: await pki.authenticationToken(iasApp, iasId, TOKEN) }).toString(),
    });
    assert.equal(introspected.statusCode, 200, introspected.body);
    const info = introspected.json<{ active: boolean; client_id: string; scope: string; patient: string; extensions: Record<string, unknown> }>();
    assert.equal(info.active, true);
    assert.equal(info.client_id, iasId);
    assert.equal(info.scope, 'patient/Patient.rs');
    assert.equal(info.patient, 'ias-zoe');
    // The id_token (the person's credential at the CSP) is checked, not kept.
    assert.deepEqual(info.extensions, {
      'hl7-b2b': { version: '1', organization_id: 'https://ias-provider.example/org', purpose_of_use: [T_IAS] },
      tefca_ias: { version: '1', user_information: ias.user_information, patient_information: ias.patient_information, consent_policy: [IAL2_POLICY] },
    });

    const event = await ctx.current.database.db
      .selectFrom('audit_events')
      .select(['type', 'outcome', 'patient_id', 'client_id', 'details'])
      .where('client_id', '=', iasId)
      .where('type', '=', 'token.issued')
      .orderBy('seq', 'desc')
      .executeTakeFirstOrThrow();
    assert.equal(event.patient_id, 'ias-zoe');
    assert.deepEqual(event.details, { grant_type: 'client_credentials', tefca_ias: { csp: CSP, match: 'one' } });
    assert.doesNotMatch(JSON.stringify(event), /eyJ/, 'no JWT in the audit trail');
  });

  it('no patient matches: invalid_grant, the decision audited', async () => {
    const ias = await tefcaIas({ id_token: await idToken({ claims: { birthdate: '1991-04-12' } }), patient_information: patientInformation('Nguyen', 'Zoe', '1991-04-12') });
    const res = await iasRequest(app, iasApp, iasId, ias);
    refusal(res, 'invalid_grant', `${INVALID_GRANT}: tefca_ias: no patient of this server matches patient_information (family name, given name and birthDate)`);
    const event = await ctx.current.database.db.selectFrom('audit_events').select(['type', 'outcome', 'details']).where('client_id', '=', iasId).orderBy('seq', 'desc').executeTakeFirstOrThrow();
    assert.equal(event.type, 'token.failed');
    assert.equal(event.outcome, 'failure');
    assert.deepEqual((event.details as { tefca_ias: unknown }).tefca_ias, { csp: CSP, match: 'none' });
  });

  it('two patients match: invalid_grant', async () => {
    const ias = await tefcaIas({ id_token: await idToken({ claims: { family_name: 'Smith', given_name: 'Alex', birthdate: '2001-02-03' } }), patient_information: patientInformation('smith', 'alex', '2001-02-03') });
    refusal(await iasRequest(app, iasApp, iasId, ias), 'invalid_grant', `${INVALID_GRANT}: tefca_ias: more than one patient of this server matches patient_information (family name, given name and birthDate): the patient cannot be told apart`);
  });

  it('an id_token not signed by the CSP: invalid_grant', async () => {
    const impostor = await clientKey('RS256', cspKey.kid);
    refusal(await iasRequest(app, iasApp, iasId, await tefcaIas({ id_token: await idToken({ key: impostor }) })), 'invalid_grant', `${INVALID_GRANT}: tefca_ias: the id_token's signature does not verify with the keys of ${CSP} (${jwks.url})`);
  });

  it('an id_token of a CSP the community does not trust: invalid_grant', async () => {
    refusal(await iasRequest(app, iasApp, iasId, await tefcaIas({ id_token: await idToken({ iss: ROGUE_CSP }) })), 'invalid_grant', `${INVALID_GRANT}: tefca_ias: the id_token's issuer ${ROGUE_CSP} is not a credential service provider this server trusts in ${pki.community}`);
  });

  it('an expired id_token: invalid_grant', async () => {
    const exp = Math.floor(Date.now() / 1000) - 120;
    refusal(await iasRequest(app, iasApp, iasId, await tefcaIas({ id_token: await idToken({ exp }) })), 'invalid_grant', `${INVALID_GRANT}: tefca_ias: the id_token expired at ${new Date(exp * 1000).toISOString()}`);
  });

  it('an id_token that proofed someone else, when the user says they are the patient: invalid_grant', async () => {
    const ias = await tefcaIas({ id_token: await idToken({ claims: { family_name: 'Doe' } }) });
    refusal(await iasRequest(app, iasApp, iasId, ias), 'invalid_grant', `${INVALID_GRANT}: tefca_ias: the id_token's family_name is not the patient's in patient_information, although user_information says the user is the patient (ONESELF)`);
  });

  const malformed: [string, () => Promise<unknown>, string][] = [
    ['no birthDate', () => tefcaIas({ patient_information: patientInformation('Nguyen', 'Zoe') }), 'patient_information.birthDate is required'],
    ['a birth year only', () => tefcaIas({ patient_information: patientInformation('Nguyen', 'Zoe', '1990') }), 'patient_information.birthDate must be a full date (YYYY-MM-DD)'],
    ['a name without a given name', () => tefcaIas({ patient_information: { resourceType: 'Patient', name: [{ family: 'Nguyen' }], birthDate: '1990-04-12' } }), 'patient_information.name[0].given is required'],
    ['no id_token', async () => ({ ...(await tefcaIas()), id_token: undefined }), 'id_token is required'],
    ['no user_information', async () => ({ ...(await tefcaIas()), user_information: undefined }), 'user_information is required'],
    ['a version other than 1', () => tefcaIas({ version: '2' }), 'version must be "1"'],
  ];
  for (const [what, build, description] of malformed) {
    it(`tefca_ias with ${what}: invalid_grant naming the member`, async () => {
      refusal(await iasRequest(app, iasApp, iasId, await build()), 'invalid_grant', `${INVALID_GRANT}: tefca_ias: ${description}`);
    });
  }

  it('an IAS client without tefca_ias: invalid_grant', async () => {
    refusal(
      await iasRequest(app, iasApp, iasId, undefined),
      'invalid_grant',
      `${INVALID_GRANT}: tefca_ias: the extensions claim of the client assertion must carry the tefca_ias object for Individual Access Services (with the CSP's id_token and the patient's demographics)`,
    );
  });

  it('an IAS client asking for a system/ scope: invalid_scope', async () => {
    const res = await iasRequest(app, iasApp, iasId, await tefcaIas(), { scope: 'patient/Patient.rs system/Patient.rs' });
    assert.equal(res.statusCode, 400, res.body);
    assert.equal(res.json<OAuthError>().error, 'invalid_scope');
    assert.match(res.json<OAuthError>().error_description, /system\/Patient\.rs: an Individual Access Services request \(tefca_ias\) is granted patient\/ scopes only/);
  });

  it('tefca_ias from a client registered for another exchange purpose: invalid_grant', async () => {
    const res = await iasRequest(app, treatApp, treatId, await tefcaIas(), { scope: 'system/Patient.rs', purpose: T_TREAT });
    refusal(res, 'invalid_grant', `${INVALID_GRANT}: tefca_ias: this extension is accepted only from a client registered for the Individual Access Services exchange purpose (T-IAS); this client registered for ${T_TREAT}`);
  });

  it('tefca_ias outside a TEFCA community: invalid_grant', async () => {
    const plain = await testApp(ctx.current.database, { OUTBOUND_ALLOW_PRIVATE: 'true', REGISTRATION_PER_HOUR: '0', UDAP_CONFIG: await pki.configFile() });
    try {
      const party = await pki.issue(['https://not-tefca.example/app']);
      const reg = await plain.inject({ method: 'POST', url: '/reg', payload: { software_statement: await pki.softwareStatement(party, REG), udap: '1' } });
      assert.equal(reg.statusCode, 201, reg.body);
      const res = await iasRequest(plain, party, reg.json<{ client_id: string }>().client_id, await tefcaIas(), { scope: 'system/Patient.rs', purpose: 'urn:oid:2.16.840.1.113883.5.8#TREAT' });
      refusal(res, 'invalid_grant', `${INVALID_GRANT}: tefca_ias: this extension is accepted only in a TEFCA trust community; ${pki.community} is not one`);
    } finally {
      await plain.close();
    }
  });

  it('credentialServiceProviders: only with tefca, each an http(s) issuer and JWKS URL', async () => {
    const problems = async (extra: Record<string, unknown>): Promise<string[]> => {
      try {
        testConfig({ UDAP_CONFIG: await pki.configFile(extra) });
      } catch (error) {
        assert.ok(error instanceof ConfigError);
        return error.problems.map((p) => p.replace(/^UDAP_CONFIG \([^)]*\) /, ''));
      }
      return [];
    };
    assert.deepEqual(await problems({ credentialServiceProviders: [{ issuer: CSP, jwksUri: `${CSP}/jwks` }] }), ['communities[0].credentialServiceProviders: is for TEFCA Individual Access Services: set tefca to true as well']);
    assert.deepEqual(await problems({ tefca: true, credentialServiceProviders: [{ issuer: 'csp', jwksUri: `${CSP}/jwks` }] }), ['communities[0].credentialServiceProviders[0].issuer: must be an http(s) URL']);
    assert.deepEqual(await problems({ tefca: true, credentialServiceProviders: [{ issuer: CSP }] }), ['communities[0].credentialServiceProviders[0].jwksUri: is required']);
    assert.deepEqual(await problems({ tefca: true, credentialServiceProviders: [{ issuer: CSP, jwksUri: `${CSP}/jwks`, kid: randomUUID() }] }), ['communities[0].credentialServiceProviders[0].kid: is not a known setting (issuer, jwksUri)']);
    assert.deepEqual(await problems({ tefca: true, credentialServiceProviders: [{ issuer: CSP, jwksUri: `${CSP}/jwks` }] }), []);
  });
});
