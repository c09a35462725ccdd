import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { accessTokenContext, grantContextOf, tokenResponseContext, type Decision } from '../../src/smart/token-context.js';

const decision: Decision = { fhirBase: 'https://fhir.example/r4', launch: undefined, launchId: undefined, patient: 'amy', encounter: undefined, userFhirResource: 'Practitioner/p1', grantedScopes: ['openid', 'fhirUser', 'patient/*.rs'], defaultStyleUrl: 'https://auth.example/smart-style.json' };

describe('token context: what an authorization carries into its tokens', () => {
  it('defaults: a banner when there is a patient, our style sheet, fhirUser as an absolute URL when granted', () => {
    const context = grantContextOf(decision);
    assert.deepEqual(tokenResponseContext(context), { patient: 'amy', need_patient_banner: true, smart_style_url: 'https://auth.example/smart-style.json' });
    assert.equal(context.fhirUser, 'https://fhir.example/r4/Practitioner/p1');
    assert.equal(grantContextOf({ ...decision, grantedScopes: ['openid'] }).fhirUser, undefined);
    assert.equal(grantContextOf({ ...decision, patient: undefined }).need_patient_banner, undefined, 'no patient, no banner member');
  });

  it("the EHR's launch context wins over defaults, and travels as given", () => {
    const fhirContext = [{ reference: 'DiagnosticReport/1' }];
    const context = grantContextOf({ ...decision, launch: { need_patient_banner: false, smart_style_url: 'https://ehr.example/style.json', intent: 'reconcile', tenant: 't1', fhirContext }, encounter: 'e1' });
    assert.deepEqual(tokenResponseContext(context), { patient: 'amy', encounter: 'e1', fhirContext, need_patient_banner: false, smart_style_url: 'https://ehr.example/style.json', intent: 'reconcile', tenant: 't1' });
  });

  it('access tokens carry fhirUser only when their own scope holds it (a refresh may narrow it away)', () => {
    const context = grantContextOf(decision);
    assert.equal(accessTokenContext(context, ['openid', 'fhirUser']).fhirUser, 'https://fhir.example/r4/Practitioner/p1');
    assert.equal(accessTokenContext(context, ['openid']).fhirUser, undefined);
  });
});
