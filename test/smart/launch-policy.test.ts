import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { consentWithPicker, LAUNCH_REFUSALS, launchParamRefusal, mayChoosePatient, nextStep, type LaunchFacts, type LaunchState } from '../../src/smart/launch-policy.js';
import { formatScope, parseScopes } from '../../src/smart/scopes/scope.js';

const scopes = (text: string) => parseScopes(text).scopes;
const clinician = { id: 'u-clin', patients: undefined };
const patientUser = { id: 'u-amy', patients: ['amy'] };
const caregiver = { id: 'u-care', patients: ['amy', 'ben'] };
const base: LaunchState = { signIn: false, user: clinician, launch: { kind: 'none' }, grantable: scopes('openid patient/*.rs launch/patient'), patient: undefined, encounter: undefined, encounters: undefined, preApproved: false };
const step = (changes: Partial<LaunchState>) => nextStep({ ...base, ...changes });

describe('launch policy: the next step of an authorization', () => {
  it('signs in first, and refuses a session whose user is gone', () => {
    assert.deepEqual(step({ signIn: true }), { kind: 'sign-in' });
    assert.deepEqual(step({ user: undefined }), { kind: 'refuse', refusal: LAUNCH_REFUSALS.userGone });
  });

  it('takes an EHR launch before anything else, and refuses one that is gone or not for this user or patient', () => {
    assert.deepEqual(step({ launch: { kind: 'requested' } }), { kind: 'take-launch' });
    assert.deepEqual(step({ launch: { kind: 'gone' } }), { kind: 'refuse', refusal: LAUNCH_REFUSALS.launchGone });
    assert.deepEqual(step({ launch: { kind: 'taken', launch: { user: 'someone-else' } } }), { kind: 'refuse', refusal: LAUNCH_REFUSALS.otherUser });
    assert.deepEqual(step({ user: patientUser, launch: { kind: 'taken', launch: { patient: 'ben' } }, patient: 'ben' }), { kind: 'refuse', refusal: LAUNCH_REFUSALS.foreignPatient });
    assert.equal(step({ launch: { kind: 'taken', launch: { patient: 'ben', user: 'u-clin' } }, patient: 'ben' }).kind, 'consent', 'a clinician may act for any patient');
  });

  it('asks for a patient only when a scope needs one and none is in context', () => {
    assert.deepEqual(step({}), { kind: 'pick-patient', among: 'directory' });
    assert.deepEqual(step({ user: caregiver }), { kind: 'pick-patient', among: ['amy', 'ben'] });
    assert.deepEqual(step({ user: patientUser }), { kind: 'set-patient', patient: 'amy' }, 'one record: no question');
    assert.deepEqual(step({ user: { id: 'u-none', patients: [] } }), { kind: 'refuse', refusal: LAUNCH_REFUSALS.noPatientRecord });
    assert.equal(step({ grantable: scopes('openid user/*.rs') }).kind, 'consent', 'user/ scopes need no patient');
  });

  it('asks for an encounter when launch/encounter is requested, after looking them up; none to choose is none', () => {
    const withEncounter = { grantable: scopes('launch/patient launch/encounter patient/*.rs'), patient: 'amy' };
    assert.deepEqual(step(withEncounter), { kind: 'look-up-encounters' });
    assert.deepEqual(step({ ...withEncounter, encounters: ['e1'] }), { kind: 'pick-encounter' });
    assert.deepEqual(step({ ...withEncounter, encounters: [] }), { kind: 'set-no-encounter' });
    assert.equal(step({ ...withEncounter, encounter: null }).kind, 'consent');
    assert.equal(step({ ...withEncounter, encounter: 'e1' }).kind, 'consent');
  });

  it('offers consent, or finishes without it for a pre-approved client; patient/ scopes need a patient', () => {
    const consent = step({ patient: 'amy' });
    assert.ok(consent.kind === 'consent');
    assert.deepEqual(consent.offered.map(formatScope), ['openid', 'patient/*.rs', 'launch/patient']);
    const finished = step({ patient: 'amy', preApproved: true });
    assert.ok(finished.kind === 'finish');
    assert.deepEqual(finished.granted.map(formatScope), ['openid', 'patient/*.rs', 'launch/patient']);
    const noPatient = nextStep({ ...base, grantable: scopes('openid patient/*.rs'), user: clinician, patient: undefined, preApproved: true });
    assert.equal(noPatient.kind, 'pick-patient');
  });

  it('asks for consent on the picker where nothing comes between the choice and the consent page', () => {
    const offered = consentWithPicker(base);
    assert.deepEqual(offered?.map(formatScope), ['openid', 'patient/*.rs', 'launch/patient'], 'what the consent page would offer with the patient chosen');
    assert.deepEqual(consentWithPicker({ ...base, user: caregiver })?.map(formatScope), ['openid', 'patient/*.rs', 'launch/patient']);
    assert.equal(consentWithPicker({ ...base, grantable: scopes('launch/patient launch/encounter patient/*.rs') }), undefined, 'an encounter to ask about comes between');
    assert.equal(consentWithPicker({ ...base, preApproved: true }), undefined, 'no consent page: the picker answers alone');
    assert.equal(consentWithPicker({ ...base, patient: 'amy' }), undefined, 'no picker: the patient is in context');
    assert.equal(consentWithPicker({ ...base, user: patientUser }), undefined, 'one record: no picker');
    assert.equal(consentWithPicker({ ...base, signIn: true }), undefined);
    assert.equal(consentWithPicker({ ...base, grantable: scopes('openid user/*.rs') }), undefined, 'no patient needed: no picker');
  });

  it('lets a user choose their own patients, or any in the directory for a clinician', () => {
    assert.equal(mayChoosePatient(caregiver, 'ben', false), true);
    assert.equal(mayChoosePatient(caregiver, 'carl', true), false);
    assert.equal(mayChoosePatient(clinician, 'carl', true), true);
    assert.equal(mayChoosePatient(clinician, 'nobody', false), false);
  });
});

describe('launch policy: the launch parameter', () => {
  const now = new Date('2026-12-01T12:00:00Z');
  const launch: LaunchFacts = { client_id: 'app', fhir_base: 'https://fhir.example/r4', expiresAt: new Date('2026-12-01T12:05:00Z'), consumedAt: null };
  const request = { scopes: ['launch', 'patient/*.rs'], clientId: 'app', fhirBase: 'https://fhir.example/r4', now };
  it('accepts a fresh launch for this client and FHIR server, asked for with the launch scope', () => {
    assert.equal(launchParamRefusal(launch, request), undefined);
    assert.equal(launchParamRefusal({ ...launch, client_id: undefined, fhir_base: undefined }, { ...request, clientId: 'any', fhirBase: undefined }), undefined);
  });
  it('refuses each defect with its own message', () => {
    assert.equal(launchParamRefusal(launch, { ...request, scopes: ['patient/*.rs'] }), LAUNCH_REFUSALS.noLaunchScope);
    assert.equal(launchParamRefusal(undefined, request), LAUNCH_REFUSALS.unknownLaunch);
    assert.equal(launchParamRefusal({ ...launch, expiresAt: now }, request), LAUNCH_REFUSALS.unknownLaunch);
    assert.equal(launchParamRefusal({ ...launch, consumedAt: now }, request), LAUNCH_REFUSALS.usedLaunch);
    assert.equal(launchParamRefusal(launch, { ...request, clientId: 'other' }), LAUNCH_REFUSALS.otherClient);
    assert.equal(launchParamRefusal(launch, { ...request, fhirBase: 'https://elsewhere.example/fhir' }), LAUNCH_REFUSALS.otherFhirServer);
  });
});
