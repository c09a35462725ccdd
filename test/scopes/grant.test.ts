import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { applyConsent, ConsentError, consentOptions } from '../../src/smart/scopes/consent.js';
import { grantableScopes, grantBackendScopes, parseRegisteredScopes, requirePatientContext, ScopeGrantError, scopeString } from '../../src/smart/scopes/grant.js';
import { permits } from '../../src/smart/scopes/permits.js';
import { parseScopes, type Scope } from '../../src/smart/scopes/scope.js';

const LAB = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
const VITALS = 'http://terminology.hl7.org/CodeSystem/observation-category|vital-signs';

const scopes = (text: string): Scope[] => {
  const { scopes: parsed, errors } = parseScopes(text);
  assert.deepEqual(errors, []);
  return parsed;
};
const grant = (requested: string, registered?: string) => {
  const result = grantableScopes(scopes(requested), parseRegisteredScopes(registered));
  return { scope: scopeString(result.granted), refused: result.refused };
};

describe('grantable scopes (interactive)', () => {
  it('grants what was asked, literally, to a client registered for nothing in particular', () => {
    const requested = `openid fhirUser launch/patient patient/Patient.read patient/Observation.rs?category=${LAB} offline_access`;
    assert.deepEqual(grant(requested), { scope: requested, refused: [] });
  });

  it('narrows to what the client is registered for, in the syntax of the request', () => {
    assert.deepEqual(grant('launch/patient patient/*.read', 'launch/patient patient/Observation.rs patient/Patient.r'), {
      scope: 'launch/patient patient/Observation.read patient/Patient.r',
      refused: [],
    });
    assert.deepEqual(grant('patient/Observation.cruds', 'patient/Observation.rs'), { scope: 'patient/Observation.rs', refused: [] });
    assert.deepEqual(grant('patient/Observation.rs', `patient/Observation.rs?category=${LAB}`), { scope: `patient/Observation.rs?category=${LAB}`, refused: [] });
  });

  it('refuses, with the reason, what it cannot grant at all', () => {
    assert.deepEqual(grant('openid offline_access system/*.rs __x https://x.example/s', 'openid patient/*.rs'), {
      scope: 'openid',
      refused: [
        { scope: 'offline_access', reason: 'the client is not registered for it' },
        { scope: 'system/*.rs', reason: 'system/ scopes are granted only to backend services (client_credentials)' },
        { scope: '__x', reason: 'extension scopes are granted only to clients registered for them' },
        { scope: 'https://x.example/s', reason: 'extension scopes are granted only to clients registered for them' },
      ],
    });
    assert.deepEqual(grant('user/Observation.rs', 'patient/*.rs'), { scope: '', refused: [{ scope: 'user/Observation.rs', reason: 'the client is not registered for any part of it' }] });
    assert.deepEqual(grant('__x', '__x').scope, '__x');
  });

  it('says each thing once: duplicates, contained scopes and split permissions merge; online_access yields to offline_access', () => {
    assert.equal(grant('patient/Observation.r patient/Observation.s patient/Condition.rs').scope, 'patient/Observation.rs patient/Condition.rs');
    assert.equal(grant(`patient/Observation.r patient/*.rs patient/Patient.r patient/Observation.rs?category=${LAB}`).scope, 'patient/*.rs');
    assert.equal(grant('online_access offline_access').scope, 'offline_access');
    assert.equal(grant('patient/Observation.read patient/Observation.write').scope, 'patient/Observation.*');
  });

  it('grants introspect only to clients registered for it', () => {
    assert.deepEqual(grant('openid introspect'), { scope: 'openid', refused: [{ scope: 'introspect', reason: 'the client is not registered for it' }] });
    assert.equal(grant('openid introspect', 'openid introspect').scope, 'openid introspect');
  });

  it('drops patient/ scopes when no patient is in context', () => {
    const { granted, refused } = requirePatientContext(scopes('openid patient/*.rs user/Patient.rs'), false);
    assert.equal(scopeString(granted), 'openid user/Patient.rs');
    assert.deepEqual(refused, [{ scope: 'patient/*.rs', reason: 'no patient in context' }]);
    assert.equal(scopeString(requirePatientContext(scopes('patient/*.rs'), true).granted), 'patient/*.rs');
  });
});

describe('backend services scopes', () => {
  const registered = parseRegisteredScopes(`system/Patient.rs system/Observation.rs system/Encounter.read`);

  it('grants v1, v2 and granular system scopes within the pre-authorized set', () => {
    assert.equal(scopeString(grantBackendScopes(scopes('system/Patient.rs'), registered)), 'system/Patient.rs');
    assert.equal(scopeString(grantBackendScopes(scopes('system/Patient.read system/Encounter.rs'), registered)), 'system/Patient.read system/Encounter.rs');
    assert.equal(scopeString(grantBackendScopes(scopes(`system/Observation.rs?category=${LAB}`), registered)), `system/Observation.rs?category=${LAB}`);
  });

  it('refuses the whole request, naming the scope, beyond the pre-authorized set or outside system/', () => {
    const refusal = (text: string, ...reg: [typeof registered] | []) => {
      try {
        grantBackendScopes(scopes(text), reg.length ? reg[0] : registered);
      } catch (error) {
        assert.ok(error instanceof ScopeGrantError);
        return error.message;
      }
      return 'granted';
    };
    assert.equal(refusal('system/Patient.rs system/*.rs'), 'system/*.rs: not within the scopes this client is pre-authorized for');
    assert.equal(refusal('system/Patient.cruds'), 'system/Patient.cruds: not within the scopes this client is pre-authorized for');
    assert.equal(refusal('patient/Patient.rs'), 'patient/Patient.rs: backend services are granted system/ scopes (and this server\'s own: introspect, admin, ehr-launch) only');
    assert.equal(refusal('openid'), 'openid: backend services are granted system/ scopes (and this server\'s own: introspect, admin, ehr-launch) only');
    assert.equal(refusal('introspect'), 'introspect: not within the scopes this client is pre-authorized for');
    assert.equal(scopeString(grantBackendScopes(scopes('introspect system/Patient.rs'), parseRegisteredScopes('introspect system/*.rs'))), 'introspect system/Patient.rs');
    assert.equal(refusal(''), 'scope: is required: request the system/ scopes this client is pre-authorized for');
    assert.equal(refusal('system/Patient.rs', undefined), 'system/Patient.rs: not within the scopes this client is pre-authorized for');
  });
});

describe('consent', () => {
  it('offers each grantable scope checked, and category alternatives for all Conditions or Observations unchecked', () => {
    const options = consentOptions(scopes('openid fhirUser launch/patient patient/Condition.rs patient/Observation.read patient/Patient.rs offline_access'));
    const checked = options.filter((o) => o.checked).map((o) => o.scope);
    assert.deepEqual(checked, ['openid', 'fhirUser', 'launch/patient', 'patient/Condition.rs', 'patient/Observation.read', 'patient/Patient.rs', 'offline_access']);
    const alternatives = options.filter((o) => !o.checked);
    assert.deepEqual(alternatives.filter((o) => o.narrows === 'patient/Condition.rs').map((o) => o.scope), [
      'patient/Condition.rs?category=http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item',
      'patient/Condition.rs?category=http://terminology.hl7.org/CodeSystem/condition-category|encounter-diagnosis',
      'patient/Condition.rs?category=http://hl7.org/fhir/us/core/CodeSystem/condition-category|health-concern',
    ]);
    const observation = alternatives.filter((o) => o.narrows === 'patient/Observation.read');
    assert.equal(observation.length, 6);
    assert.ok(observation.every((o) => o.scope.startsWith('patient/Observation.rs?category=')), 'a v1 request narrows to v2 granular scopes');
    assert.equal(options.find((o) => o.scope === 'offline_access')?.note, 'The app keeps access, even after you sign out, until you revoke it on your connected-apps page.');
    assert.equal(options.find((o) => o.scope === `patient/Observation.rs?category=${LAB}`)?.label, 'Laboratory results');
    assert.equal(options.find((o) => o.scope === 'patient/Observation.read')?.actions, 'read and search');
  });

  it('offers the common resource types instead of *, and warns that * covers future types', () => {
    const options = consentOptions(scopes('patient/*.rs'));
    assert.equal(options[0]?.note, 'This includes kinds of data the record does not hold yet, and kinds added in the future.');
    assert.ok(options.some((o) => o.scope === 'patient/MedicationRequest.rs' && !o.checked && o.narrows === 'patient/*.rs'));
  });

  it('grants what was checked: a patient may narrow Observation to categories and drop types and offline access', () => {
    const grantable = scopes('openid launch/patient patient/Observation.rs patient/Condition.rs offline_access');
    const granted = applyConsent(grantable, ['openid', 'launch/patient', `patient/Observation.rs?category=${LAB}`, `patient/Observation.rs?category=${VITALS}`]);
    assert.equal(scopeString(granted), `openid launch/patient patient/Observation.rs?category=${LAB} patient/Observation.rs?category=${VITALS}`);
    assert.equal(scopeString(applyConsent(grantable, ['patient/Observation.rs', `patient/Observation.rs?category=${LAB}`])), 'patient/Observation.rs', 'a category under a granted whole adds nothing');
    assert.equal(scopeString(applyConsent(grantable, [])), '');
  });

  it('refuses a scope the page did not offer', () => {
    assert.throws(() => applyConsent(scopes('patient/Observation.rs'), ['patient/*.cruds']), (e: unknown) => e instanceof ConsentError && e.message === 'patient/*.cruds was not offered on this consent page');
  });
});

describe('permits', () => {
  const g = (scope: string) => ({ scope, patient: 'p1' });

  it('maps interactions to permissions as SMART 2.2 defines them', () => {
    const grantText = 'patient/Observation.rs';
    for (const interaction of ['read', 'vread', 'history-instance', 'search', 'history-type'] as const) {
      assert.deepEqual(permits(g(grantText), { interaction, resourceType: 'Observation', id: interaction === 'search' || interaction === 'history-type' ? undefined : 'o1', compartment: { patient: 'p1' } }), { allow: true, scope: grantText }, interaction);
    }
    for (const interaction of ['create', 'update', 'patch', 'delete'] as const) {
      const d = permits(g(grantText), { interaction, resourceType: 'Observation', compartment: { patient: 'p1' } });
      assert.equal(d.allow, false, interaction);
    }
    assert.deepEqual(permits(g('patient/Observation.c'), { interaction: 'read', resourceType: 'Observation', id: 'o1', compartment: { patient: 'p1' } }), { allow: false, reason: 'no granted scope permits read (r) on Observation' });
    assert.equal(permits(g('user/Observation.u'), { interaction: 'patch', resourceType: 'Observation', id: 'o1' }).allow, true);
    assert.equal(permits(g('system/*.d'), { interaction: 'delete', resourceType: 'Encounter', id: 'e1' }).allow, true);
    assert.equal(permits(g('user/Observation.s'), { interaction: 'history', resourceType: 'Observation' }).allow, true, 'type history is s');
    assert.equal(permits(g('user/Observation.s'), { interaction: 'history', resourceType: 'Observation', id: 'o1' }).allow, false, 'instance history is r');
  });

  it('confines patient/ scopes to the patient in context', () => {
    assert.equal(permits(g('patient/*.rs'), { interaction: 'read', resourceType: 'Patient', id: 'p1' }).allow, true);
    assert.deepEqual(permits(g('patient/*.rs'), { interaction: 'read', resourceType: 'Patient', id: 'p2' }), { allow: false, reason: 'patient/*.rs permits only the compartment of patient p1, not p2' });
    assert.deepEqual(permits(g('patient/*.rs'), { interaction: 'search', resourceType: 'Observation' }), { allow: false, reason: 'patient/*.rs permits only the compartment of patient p1; the request is not confined to a patient' });
    assert.deepEqual(permits({ scope: 'patient/*.rs' }, { interaction: 'search', resourceType: 'Observation', compartment: { patient: 'p1' } }), { allow: false, reason: 'patient/*.rs needs a patient in context, and the grant has none' });
    assert.deepEqual(permits(g('patient/*.read'), { interaction: 'search', resourceType: 'Observation', compartment: { patient: 'p1' } }), { allow: true, scope: 'patient/*.rs' });
  });

  it('granular scopes: a narrowed search passes as it is; anything else carries the filter to apply', () => {
    const grantText = `patient/Observation.rs?category=${LAB} patient/Observation.rs?category=${VITALS}`;
    const p1 = { patient: 'p1' };
    assert.deepEqual(permits(g(grantText), { interaction: 'search', resourceType: 'Observation', params: { category: LAB }, compartment: p1 }), { allow: true, scope: `patient/Observation.rs?category=${LAB}` });
    assert.deepEqual(permits(g(grantText), { interaction: 'search', resourceType: 'Observation', params: { category: `${LAB},${VITALS}` }, compartment: p1 }), {
      allow: true,
      scope: `patient/Observation.rs?category=${LAB} patient/Observation.rs?category=${VITALS}`,
    });
    const unnarrowed = permits(g(grantText), { interaction: 'search', resourceType: 'Observation', params: { code: 'http://loinc.org|1234-5' }, compartment: p1 });
    assert.ok(unnarrowed.allow);
    assert.deepEqual(unnarrowed.mustMatch?.map((set) => set.map((q) => `${q.name}=${q.value}`)), [[`category=${LAB}`], [`category=${VITALS}`]]);
    const read = permits(g(grantText), { interaction: 'read', resourceType: 'Observation', id: 'o1', compartment: p1 });
    assert.ok(read.allow && read.mustMatch?.length === 2, 'a read is allowed only of a matching resource');
    assert.deepEqual(permits(g(`${grantText} patient/Observation.rs`), { interaction: 'read', resourceType: 'Observation', id: 'o1', compartment: p1 }), { allow: true, scope: 'patient/Observation.rs' }, 'a resource-level scope lifts the condition');
    assert.equal(permits(g(grantText), { interaction: 'search', resourceType: 'Condition', compartment: p1 }).allow, false);
  });

  it('ignores scopes it cannot parse rather than failing', () => {
    assert.deepEqual(permits(g('email patient/Observation.dus'), { interaction: 'read', resourceType: 'Observation', id: 'x', compartment: { patient: 'p1' } }), { allow: false, reason: 'no granted scope permits read (r) on Observation' });
  });
});
