import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { contains, toV2 } from '../../src/smart/scopes/algebra.js';
import { CATEGORIES } from '../../src/smart/scopes/categories.js';
import { formatScope, parseScope, ScopeSyntaxError } from '../../src/smart/scopes/scope.js';

/** Every example scope of SMART App Launch 2.2 (scopes-and-launch-context, app-launch, conformance pages). */
const SPEC_VALID = [
  // Quick Start
  'patient/*.rs', 'user/*.cruds', 'openid', 'fhirUser', 'launch', 'launch/patient', 'offline_access', 'online_access',
  // delegation, resource scopes, equivalence
  'system/*.cruds', 'patient/Observation.cu', 'patient/Observation.rs', 'patient/Condition.rs', 'patient/AllergyIntolerance.rs',
  'patient/Observation.read', 'patient/Immunization.read',
  'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory',
  'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs',
  // experimental search syntax: parsed, kept literally
  'patient/Observation.rs?code:in=http://valueset.example.org/ValueSet/diabetes-codes', 'patient/Observation.rs?patient.birthdate=1990',
  // patient, user and system tables
  'patient/Patient.r', 'patient/Observation.c', 'patient/*.cruds', 'user/Observation.rs', 'user/Appointment.cruds', 'user/Patient.rs',
  'system/Observation.rs', 'system/*.rs', 'system/Encounter.cud',
  // wildcard grant table
  'patient/AllergyIntolerance.cruds', 'patient/AllergyIntolerance.cud',
  // context
  'launch/encounter', 'launch/diagnosticreport', 'launch/relatedperson?role=friend', 'launch/relatedperson?role=neighbor', 'launch/imagingstudy',
  'launch/list?role=https://example.org/med-list-at-home', 'launch/list?role=https://example.org/med-list-at-hospital',
  // extensibility
  'http://example.com/scope-name', 'https://ehr.example.org/scopes/profilePhoto.manage', '__profilePhoto.manage',
  // app-launch and conformance pages
  'patient/MedicationRequest.rs', 'patient/Patient.rs', 'profile', 'user/*.rs',
  // v1
  'patient/*.read', 'user/*.*', 'patient/Observation.write', 'system/Patient.*',
];

/** ONC (g)(10) granular scopes as the Inferno US Core kit requests them (smart_scopes_constants.rb). */
const ONC_GRANULAR = [
  'patient/Condition.rs?category=http://terminology.hl7.org/CodeSystem/condition-category|encounter-diagnosis',
  'patient/Condition.rs?category=http://hl7.org/fhir/us/core/CodeSystem/condition-category|health-concern',
  'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory',
  'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|social-history',
  'patient/Condition.rs?category=http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item',
  'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs',
  'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|survey',
  'patient/Observation.rs?category=http://hl7.org/fhir/us/core/CodeSystem/us-core-category|sdoh',
];

const INVALID: [string, RegExp][] = [
  ['patient/Observation.dus', /must each appear once and in the order c, r, u, d, s/],
  ['patient/Observation.rw', /undefined permission "w"/],
  ['patient/Observation.readwrite', /undefined permission/],
  ['practitioner/*.rs', /unknown context "practitioner"/],
  ['patient/Observations.rs', /not a FHIR R4 resource type/],
  ['patient/Observation.rs?category', /malformed query parameter/],
  ['patient/Observation.read?category=x', /only allowed on v2 scopes/],
  ['launch/Patients', /launch context must be/],
  ['email', /not a SMART scope/],
];

describe('SMART 2.2 and ONC example scopes', () => {
  for (const text of [...SPEC_VALID, ...ONC_GRANULAR]) {
    it(`valid, and written back unchanged: ${text}`, () => {
      assert.equal(formatScope(parseScope(text)), text);
    });
  }

  for (const [text, rule] of INVALID) {
    it(`invalid: ${text}`, () => {
      assert.throws(() => parseScope(text), (e: unknown) => e instanceof ScopeSyntaxError && rule.test(e.message) && e.message.startsWith(`${text}: `));
    });
  }

  it('the consent page offers exactly the ONC granular scopes (and Clinical Test)', () => {
    const offered = CATEGORIES.map((c) => `patient/${c.resourceType}.rs?category=${c.value}`);
    for (const onc of ONC_GRANULAR) assert.ok(offered.includes(onc), onc);
    assert.ok(offered.includes('patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|procedure'));
  });

  it('spec equivalences: v1 read is v2 rs, write is cud, * is cruds; .rs is .r plus .s', () => {
    const same = (a: string, b: string) => contains(parseScope(a), parseScope(b)) && contains(parseScope(b), parseScope(a));
    assert.ok(same('patient/Observation.read', 'patient/Observation.rs'));
    assert.ok(same('patient/Observation.write', 'patient/Observation.cud'));
    assert.ok(same('patient/Observation.*', 'patient/Observation.cruds'));
    assert.equal(formatScope(toV2(parseScope('user/*.*'))), 'user/*.cruds');
    assert.ok(contains(parseScope('patient/*.rs'), parseScope('patient/Observation.r')));
    assert.ok(contains(parseScope('patient/Observation.rs'), parseScope(ONC_GRANULAR[2]!)));
    assert.ok(!contains(parseScope(ONC_GRANULAR[2]!), parseScope('patient/Observation.rs')));
    assert.ok(!contains(parseScope('patient/Observation.c'), parseScope('patient/Observation.r')), 'write access does not imply read access');
    assert.ok(!contains(parseScope('user/*.cruds'), parseScope('patient/Observation.r')), 'contexts do not contain each other');
  });
});
