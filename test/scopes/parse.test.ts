import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { formatScope, parseScope, parseScopes, ScopeSyntaxError, splitScopes } from '../../src/smart/scopes/scope.js';

const LAB = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';

function rejects(text: string, rule: string): void {
  assert.throws(
    () => parseScope(text),
    (error: unknown) => {
      assert.ok(error instanceof ScopeSyntaxError, String(error));
      assert.equal(error.message, `${text}: ${rule}`);
      assert.equal(error.scope, text);
      return true;
    },
  );
}

describe('scope parser', () => {
  it('reads v2 resource scopes', () => {
    assert.deepEqual(parseScope('patient/Observation.rs'), { kind: 'resource', context: 'patient', resourceType: 'Observation', permissions: 18, query: [], syntax: 'v2' });
    assert.deepEqual(parseScope('system/*.cruds'), { kind: 'resource', context: 'system', resourceType: '*', permissions: 31, query: [], syntax: 'v2' });
    assert.deepEqual(parseScope('user/Encounter.cu'), { kind: 'resource', context: 'user', resourceType: 'Encounter', permissions: 5, query: [], syntax: 'v2' });
  });

  it('reads v1 resource scopes as their v2 meaning, remembering the syntax', () => {
    assert.deepEqual(parseScope('patient/*.read'), { kind: 'resource', context: 'patient', resourceType: '*', permissions: 18, query: [], syntax: 'v1' });
    assert.deepEqual(parseScope('user/Observation.write'), { kind: 'resource', context: 'user', resourceType: 'Observation', permissions: 13, query: [], syntax: 'v1' });
    assert.deepEqual(parseScope('system/Patient.*'), { kind: 'resource', context: 'system', resourceType: 'Patient', permissions: 31, query: [], syntax: 'v1' });
  });

  it('keeps granular query values literally, decoded for comparison', () => {
    const scope = parseScope(`patient/Observation.rs?category=${LAB}`);
    assert.deepEqual(scope, { kind: 'resource', context: 'patient', resourceType: 'Observation', permissions: 18, query: [{ name: 'category', value: LAB, raw: `category=${LAB}` }], syntax: 'v2' });
    const encoded = parseScope('patient/Observation.rs?code=http%3A%2F%2Floinc.org%7C1234-5&status=final');
    assert.ok(encoded.kind === 'resource');
    assert.deepEqual(encoded.query.map((q) => [q.name, q.value]), [['code', 'http://loinc.org|1234-5'], ['status', 'final']]);
    assert.equal(formatScope(encoded), 'patient/Observation.rs?code=http%3A%2F%2Floinc.org%7C1234-5&status=final', 'formatted back byte for byte');
  });

  it('reads identity, launch and extension scopes', () => {
    for (const name of ['openid', 'fhirUser', 'profile', 'launch', 'offline_access', 'online_access', 'udap', 'introspect', 'admin', 'ehr-launch']) assert.deepEqual(parseScope(name), { kind: 'fixed', name });
    assert.deepEqual(parseScope('launch/patient'), { kind: 'launch-context', name: 'patient', resourceType: 'Patient', role: undefined });
    assert.deepEqual(parseScope('launch/encounter'), { kind: 'launch-context', name: 'encounter', resourceType: 'Encounter', role: undefined });
    assert.deepEqual(parseScope('launch/imagingstudy'), { kind: 'launch-context', name: 'imagingstudy', resourceType: 'ImagingStudy', role: undefined });
    assert.deepEqual(parseScope('launch/relatedperson?role=friend'), { kind: 'launch-context', name: 'relatedperson', resourceType: 'RelatedPerson', role: 'friend' });
    assert.equal(formatScope(parseScope('launch/list?role=https://example.org/med-list-at-home')), 'launch/list?role=https://example.org/med-list-at-home');
    assert.deepEqual(parseScope('https://ehr.example.org/scopes/notes'), { kind: 'extension', value: 'https://ehr.example.org/scopes/notes' });
    assert.deepEqual(parseScope('urn:example:scope'), { kind: 'extension', value: 'urn:example:scope' });
    assert.deepEqual(parseScope('__vendor_feature'), { kind: 'extension', value: '__vendor_feature' });
  });

  it('refuses permissions out of order, repeated or undefined', () => {
    rejects('patient/Observation.dus', 'permissions ".dus" must each appear once and in the order c, r, u, d, s');
    rejects('patient/Observation.sr', 'permissions ".sr" must each appear once and in the order c, r, u, d, s');
    rejects('patient/Observation.rr', 'permissions ".rr" must each appear once and in the order c, r, u, d, s');
    rejects('patient/Observation.rw', 'undefined permission "w" in ".rw": v2 permissions are c, r, u, d, s; v1 permissions are read, write, *');
    rejects('patient/Observation.Read', 'undefined permission "Rea" in ".Read": v2 permissions are c, r, u, d, s; v1 permissions are read, write, *');
    rejects('patient/Observation.', 'permissions are missing: expected one or more of c, r, u, d, s (in that order), or read, write, *');
  });

  it('refuses unknown contexts and resource types, with a hint for near misses', () => {
    rejects('practitioner/Observation.rs', 'unknown context "practitioner": expected patient, user or system');
    rejects('Patient/Observation.rs', 'unknown context "Patient": expected patient, user or system');
    rejects('patient/observation.rs', '"observation" is not a FHIR R4 resource type or * (did you mean Observation?)');
    rejects('patient/Observations.rs', '"Observations" is not a FHIR R4 resource type or * (did you mean Observation?)');
    rejects('patient/Foo.rs', '"Foo" is not a FHIR R4 resource type or *');
    rejects('patient/.rs', '"" is not a FHIR R4 resource type or *');
    rejects('launch/practitioners', 'launch context must be patient, encounter or another FHIR R4 resource type in lower case, e.g. launch/imagingstudy');
    rejects('launch/', 'launch context must be patient, encounter or another FHIR R4 resource type in lower case, e.g. launch/imagingstudy');
    rejects('launch/list?role=a&role=b', 'a launch context scope takes at most one parameter, ?role=<role>');
    rejects('launch/list?kind=x', 'a launch context scope takes at most one parameter, ?role=<role>');
    rejects('patient/Observation', 'expected <context>/<Type>.<permissions>, e.g. patient/Observation.rs');
  });

  it('refuses malformed queries and queries on v1 scopes', () => {
    rejects('patient/Observation.rs?', 'the query after ? is empty: expected param=value pairs joined by &');
    rejects('patient/Observation.rs?category', 'malformed query parameter "category": expected param=value pairs joined by &');
    rejects('patient/Observation.rs?category=', 'malformed query parameter "category=": expected param=value pairs joined by &');
    rejects('patient/Observation.rs?=x', 'malformed query parameter "=x": expected param=value pairs joined by &');
    rejects('patient/Observation.rs?a=1&&b=2', 'malformed query parameter "": expected param=value pairs joined by &');
    rejects('patient/Observation.rs?code=%E0%A4%A', 'malformed percent-encoding in query parameter "code=%E0%A4%A"');
    rejects('patient/Observation.rs?1bad=x', '"1bad" is not a FHIR search parameter name');
    rejects(`patient/Observation.read?category=${LAB}`, 'a query (?…) is only allowed on v2 scopes: write the permissions as letters, e.g. .rs');
  });

  it('refuses what is no SMART scope at all', () => {
    rejects('email', 'not a SMART scope: expected openid, fhirUser, profile, launch, offline_access, online_access, udap, introspect, admin, ehr-launch, launch/<context>, <context>/<Type>.<permissions> or an extension scope (an absolute URI or a name starting with __)');
    rejects('OPENID', 'not a SMART scope: expected openid, fhirUser, profile, launch, offline_access, online_access, udap, introspect, admin, ehr-launch, launch/<context>, <context>/<Type>.<permissions> or an extension scope (an absolute URI or a name starting with __)');
  });

  it('splits a scope parameter, dropping empty entries and duplicates, and collects every error', () => {
    assert.deepEqual(splitScopes(' openid  launch openid '), ['openid', 'launch']);
    const { scopes, errors } = parseScopes('openid patient/Observation.dus launch/patient user/Foo.rs');
    assert.deepEqual(scopes.map(formatScope), ['openid', 'launch/patient']);
    assert.deepEqual(errors.map((e) => e.scope), ['patient/Observation.dus', 'user/Foo.rs']);
  });
});
