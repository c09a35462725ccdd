import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { authorize } from '../../src/smart/fhir/access.js';
import { enforce, grantOf, type EnforceAllowed, type EnforceDecision, type TokenGrant } from '../../src/smart/fhir/enforce.js';
import { fhirR4Model } from '../../src/smart/fhir/model.js';
import { parseRestRequest } from '../../src/smart/fhir/request.js';
import { parseScopes } from '../../src/smart/scopes/scope.js';

/**
 * The door check as a library (smart-auth-server/enforce): the access rules the gateway applies, case by
 * case, with no server around them.
 */

const AMY = 'amy';
const CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';
const patientGrant = (scope: string): TokenGrant => ({ scope, patient: AMY });
const allowed = (d: EnforceDecision): EnforceAllowed => {
  if (d.decision === 'deny') assert.fail(`denied: ${d.status} ${d.reason}`);
  return d;
};
const denied = (d: EnforceDecision, status: number, reason?: RegExp, scope?: string): void => {
  if (d.decision !== 'deny') assert.fail(`allowed: ${JSON.stringify(d)}`);
  assert.equal(d.status, status, d.reason);
  if (reason) assert.match(d.reason, reason);
  assert.equal(d.scope, scope);
};
const obs = (id: string, patient: string, category = 'laboratory', extra: Record<string, unknown> = {}) => ({ resourceType: 'Observation', id, status: 'final', category: [{ coding: [{ system: CATEGORY, code: category }] }], code: { text: 'x' }, subject: { reference: `Patient/${patient}` }, ...extra });
const bundle = (...resources: Record<string, unknown>[]) => ({ resourceType: 'Bundle', type: 'searchset', total: resources.length, entry: resources.map((resource) => ({ resource, search: { mode: 'match' } })) });

describe('enforce: the gateway\'s rules as a library', () => {
  it('reads: allowed on the type, checked on the answer; a Patient not reached is 404 at once', () => {
    const grant = patientGrant('patient/*.rs');
    const read = allowed(enforce({ method: 'GET', url: 'Observation/o1' }, grant));
    assert.equal(read.decision, 'allow');
    assert.equal(read.interaction, 'read');
    assert.deepEqual(read.check(obs('o1', AMY)).body, obs('o1', AMY));
    assert.equal(read.check(obs('o1', 'bob')).body, undefined, 'another patient\'s: nothing (answer 404)');
    denied(enforce({ method: 'GET', url: 'Patient/bob' }, grant), 404, /Patient\/bob is not known/);
    allowed(enforce({ method: 'GET', url: `Patient/${AMY}` }, grant));
    allowed(enforce({ method: 'GET', url: 'Practitioner/p1' }, grant));
  });

  it('searches: narrowed to the patient; naming another is 403; the answer is checked again', () => {
    const grant = patientGrant('patient/Observation.rs');
    const search = allowed(enforce({ method: 'GET', url: 'Observation?code=1234' }, grant));
    assert.equal(search.decision, 'narrow');
    assert.deepEqual(search.params, [['subject', `Patient/${AMY}`]], 'the compartment\'s parameter (Observation\'s is subject)');
    assert.equal(search.url, 'Observation?code=1234&subject=Patient%2Famy');
    assert.deepEqual(allowed(enforce({ method: 'GET', url: 'Condition' }, patientGrant('patient/Condition.rs'))).params, [['patient', AMY]], 'Condition\'s compartment parameter is patient');
    assert.equal(allowed(enforce({ method: 'GET', url: `Observation?subject=Patient/${AMY}` }, grant)).decision, 'allow', 'already confined');
    assert.equal(allowed(enforce({ method: 'GET', url: `Observation?subject:Patient=${AMY}` }, grant)).decision, 'allow');
    denied(enforce({ method: 'GET', url: 'Observation?patient=bob' }, grant), 403, /names Patient\/bob/);
    denied(enforce({ method: 'GET', url: 'Observation?subject=Group/g1' }, grant), 403, /names subject=Group\/g1/);
    const filtered = search.check(bundle(obs('o1', AMY), obs('o2', 'bob')));
    assert.deepEqual((filtered.body as { entry: unknown[] }).entry.length, 1);
    assert.equal((filtered.body as { total?: number }).total, undefined, 'a total that counted what was removed is dropped');
    assert.equal(filtered.resources, 1);
    assert.deepEqual([...filtered.patients], [AMY]);
  });

  it('insufficient scope names the scope that would do, in the contexts the token uses', () => {
    denied(enforce({ method: 'GET', url: 'Condition' }, patientGrant('patient/Observation.rs')), 403, /no granted scope permits search \(s\) on Condition/, 'patient/Condition.s');
    denied(enforce({ method: 'DELETE', url: 'Observation/o1' }, { scope: 'user/Observation.rs', userPatients: 'all' }), 403, /delete \(d\)/, 'user/Observation.d');
    denied(enforce({ method: 'GET', url: 'Observation/o1' }, { scope: 'launch openid' }), 403, undefined, 'patient/Observation.r user/Observation.r system/Observation.r');
  });

  it('user/ scopes reach the user\'s patients; system/ every record; a patient/ scope without a patient in context, no one', () => {
    const family = allowed(enforce({ method: 'GET', url: 'Observation' }, { scope: 'user/Observation.rs', userPatients: [AMY, 'ben'] }));
    assert.deepEqual(family.params, [['subject', 'Patient/amy,Patient/ben']]);
    assert.equal(allowed(enforce({ method: 'GET', url: 'Observation' }, { scope: 'user/Observation.rs', userPatients: 'all' })).decision, 'allow');
    assert.equal(allowed(enforce({ method: 'GET', url: 'Observation' }, { scope: 'system/Observation.rs' })).decision, 'allow');
    denied(enforce({ method: 'GET', url: 'Observation' }, { scope: 'user/Observation.rs', userPatients: [] }), 403, /reaches no patient record/);
    denied(enforce({ method: 'GET', url: 'Observation' }, { scope: 'patient/Observation.rs' }), 403, /patient\/ scopes need a patient in context, and this token has none$/);
    denied(enforce({ method: 'GET', url: 'Observation' }, { scope: 'user/Observation.rs' }), 403, /user\/ scopes need a signed-in user/);
    assert.equal(grantOf({ scope: 'patient/*.rs', patient: AMY, active: true } as never).patient, AMY);
  });

  it('granular scopes: one parameter is added to the search; several are checked on the answer only, without counts', () => {
    const lab = allowed(enforce({ method: 'GET', url: 'Observation' }, patientGrant(`patient/Observation.rs?category=${CATEGORY}|laboratory`)));
    assert.deepEqual(lab.params, [['subject', `Patient/${AMY}`], ['category', `${CATEGORY}|laboratory`]]);
    assert.equal(lab.countable, true);
    assert.equal(lab.check(obs('v', AMY, 'vital-signs')).body, undefined);
    const two = patientGrant(`patient/Observation.rs?category=${CATEGORY}|laboratory&code=1234`);
    const search = allowed(enforce({ method: 'GET', url: 'Observation' }, two));
    assert.equal(search.countable, false);
    denied(enforce({ method: 'GET', url: 'Observation?_summary=count' }, two), 403, /_summary=count/);
    const either = allowed(enforce({ method: 'GET', url: `Observation?category=${encodeURIComponent(`${CATEGORY}|laboratory`)}` }, patientGrant(`patient/Observation.rs?category=${CATEGORY}|laboratory patient/Observation.rs?category=${CATEGORY}|vital-signs`)));
    assert.deepEqual(either.params, [['subject', `Patient/${AMY}`]], 'the search already names a granted category');
  });

  it('_include, _revinclude and contained resources are checked with the scopes of their own types', () => {
    const grant = patientGrant('patient/Observation.rs patient/Patient.r');
    const search = allowed(enforce({ method: 'GET', url: 'Observation?_include=Observation:performer&_include=Observation:subject' }, grant));
    const answer = {
      resourceType: 'Bundle',
      type: 'searchset',
      entry: [
        { resource: obs('o1', AMY, 'laboratory', { contained: [{ resourceType: 'Practitioner', id: 'c1' }, { resourceType: 'Patient', id: 'c2' }] }), search: { mode: 'match' } },
        { resource: { resourceType: 'Practitioner', id: 'p1' }, search: { mode: 'include' } },
        { resource: { resourceType: 'Patient', id: AMY }, search: { mode: 'include' } },
        { resource: { resourceType: 'Patient', id: 'bob' }, search: { mode: 'include' } },
      ],
    };
    const body = search.check(answer).body as { entry: { resource: { resourceType: string; id: string; contained?: { resourceType: string }[] } }[] };
    assert.deepEqual(body.entry.map((e) => `${e.resource.resourceType}/${e.resource.id}`), ['Observation/o1', `Patient/${AMY}`]);
    assert.deepEqual(body.entry[0]!.resource.contained?.map((c) => c.resourceType), ['Patient'], 'a contained Practitioner goes: no scope reads Practitioner');
  });

  it('_has and chains need a free search of the types they look into; _filter, _query, _contained and unknown operations need an operator\'s leave', () => {
    const grant = patientGrant(`patient/Patient.rs patient/Observation.rs?category=${CATEGORY}|laboratory`);
    denied(enforce({ method: 'GET', url: 'Patient?_has:Observation:patient:code=1234' }, grant), 403, /_has/, 'patient/Observation.s');
    denied(enforce({ method: 'GET', url: 'Patient?_has:Condition:patient:code=1234' }, grant), 403, /_has/, 'patient/Condition.s');
    allowed(enforce({ method: 'GET', url: 'Patient?_has:Observation:patient:code=1234' }, patientGrant('patient/Patient.rs patient/Observation.rs')));
    denied(enforce({ method: 'GET', url: 'Observation?subject:Patient.name=Shaw' }, patientGrant('patient/Observation.rs')), 403, /chained/, 'patient/Patient.s');
    allowed(enforce({ method: 'GET', url: 'Observation?subject:Patient.name=Shaw' }, patientGrant('patient/Observation.rs patient/Patient.rs')));
    denied(enforce({ method: 'GET', url: 'Observation?_filter=code eq 1' }, patientGrant('patient/*.rs')), 403, /_filter/);
    allowed(enforce({ method: 'GET', url: 'Observation?_filter=code eq 1' }, patientGrant('patient/*.rs'), { allow: ['_filter'] }));
    denied(enforce({ method: 'POST', url: 'Observation/$lastn', body: {} }, patientGrant('patient/*.rs')), 403, /\$lastn is not let through/);
    denied(enforce({ method: 'GET', url: '?_type=Observation' }, patientGrant('patient/*.rs')), 403, /across types/);
    denied(enforce({ method: 'GET', url: '' }, patientGrant('patient/*.rs')), 403, /_type/);
    allowed(enforce({ method: 'GET', url: '?_type=Observation,Condition' }, { scope: 'system/*.rs' }));
  });

  it('writes: the body must stay in the compartment; updates, patches and deletes check the resource as it stands first', () => {
    const grant = patientGrant('patient/Observation.cruds');
    allowed(enforce({ method: 'POST', url: 'Observation', body: obs('x', AMY) }, grant));
    denied(enforce({ method: 'POST', url: 'Observation', body: obs('x', 'bob') }, grant), 403, /outside what this token reaches/);
    for (const body of [{ resourceType: 'Condition' }, [1, 2], null, undefined]) denied(enforce({ method: 'POST', url: 'Observation', body }, grant), 400, /^the body must be a Observation resource$/);
    denied(enforce({ method: 'POST', url: 'Observation', body: [1, 2] }, patientGrant('patient/Observation.rs')), 403, /create \(c\)/, 'patient/Observation.c');
    denied(enforce({ method: 'POST', url: 'Observation', body: obs('x', AMY), ifNoneExist: 'identifier=1' }, grant), 403, /conditional create/);
    const update = allowed(enforce({ method: 'PUT', url: 'Observation/x', body: obs('x', AMY) }, grant));
    assert.equal(update.checkCurrent, 'u');
    assert.equal(update.reaches(obs('x', 'bob'), 'u'), false);
    for (const body of [obs('y', AMY), { ...obs('x', AMY), id: undefined }, { resourceType: 'Condition', id: 'x' }]) denied(enforce({ method: 'PUT', url: 'Observation/x', body }, grant), 400, /^the body must be the Observation with id x$/);
    assert.equal(allowed(enforce({ method: 'DELETE', url: 'Observation/x' }, grant)).checkCurrent, 'd');
    assert.equal(allowed(enforce({ method: 'PATCH', url: 'Observation/x', body: [] }, grant)).checkCurrent, 'u');
    denied(enforce({ method: 'PUT', url: 'Observation?identifier=1', body: obs('x', AMY) }, grant), 403, /conditional-update/);
    denied(enforce({ method: 'PUT', url: 'Observation?identifier=1', body: { resourceType: 'Condition' } }, { scope: 'system/Observation.u' }), 400, /^the body must be a Observation resource$/);
    const batch = allowed(enforce({ method: 'POST', url: '', body: { resourceType: 'Bundle', type: 'batch', entry: [{ resource: obs('y', AMY), request: { method: 'PUT', url: 'Observation/x' } }] } }, grant));
    denied(batch.entries![0]!, 400, /^the body must be the Observation with id x$/);
  });

  it('history: an instance\'s with r; a type\'s only when it reaches every record; the server\'s with */*.s for all', () => {
    allowed(enforce({ method: 'GET', url: 'Observation/o1/_history' }, patientGrant('patient/Observation.r')));
    denied(enforce({ method: 'GET', url: 'Observation/_history' }, patientGrant('patient/Observation.rs')), 403, /history of every Observation/);
    allowed(enforce({ method: 'GET', url: 'Observation/_history' }, { scope: 'system/Observation.s' }));
    denied(enforce({ method: 'GET', url: '_history' }, { scope: 'system/Observation.s' }), 403, /history of the whole server/, 'system/*.s');
    allowed(enforce({ method: 'GET', url: '_history' }, { scope: 'system/*.s' }));
  });

  it('batch and transaction: a decision per entry', () => {
    const grant = patientGrant('patient/Observation.rs');
    const decision = allowed(
      enforce(
        {
          method: 'POST',
          url: '',
          body: { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: 'Observation?code=1' } }, { request: { method: 'GET', url: 'Condition/c1' } }, { request: { method: 'GET', url: 'Patient/bob' } }] },
        },
        grant,
      ),
    );
    const [search, condition, patient] = decision.entries ?? [];
    assert.equal(search!.decision, 'narrow');
    denied(condition!, 403, /on Condition/, 'patient/Condition.r');
    denied(patient!, 403, /on Patient/, 'patient/Patient.r');
    denied(enforce({ method: 'POST', url: '', body: { resourceType: 'Bundle', type: 'collection' } }, grant), 400, /batch or transaction/);
    const nested = allowed(enforce({ method: 'POST', url: '', body: { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'POST', url: '' } }] } }, grant));
    denied(nested.entries![0]!, 400, /batch or transaction/);
  });

  it('an operation\'s Parameters output is checked resource by resource; Patient/$everything reaches the patient\'s own only', () => {
    const grant = patientGrant('patient/*.rs');
    const everything = allowed(enforce({ method: 'GET', url: `Patient/${AMY}/$everything` }, grant));
    const body = everything.check(bundle({ resourceType: 'Patient', id: AMY }, obs('o1', AMY), obs('o2', 'bob'))).body as { entry: unknown[] };
    assert.equal(body.entry.length, 2);
    denied(enforce({ method: 'GET', url: 'Patient/bob/$everything' }, grant), 404);
    const op = allowed(enforce({ method: 'POST', url: 'Observation/o1/$stats', body: {} }, grant, { allow: ['$stats'] }));
    assert.equal(op.checkCurrent, 'r');
    const parameters = op.check({ resourceType: 'Parameters', parameter: [{ name: 'a', resource: obs('o1', AMY) }, { name: 'b', resource: obs('o2', 'bob') }, { name: 'c', valueString: 'x' }] }).body as { parameter: { name: string }[] };
    assert.deepEqual(parameters.parameter.map((p) => p.name), ['a', 'c']);
  });

  it('refuses what is not a FHIR interaction with the status the request earns', () => {
    const grant = patientGrant('patient/*.rs');
    denied(enforce({ method: 'GET', url: 'NotAType/1' }, grant), 404);
    denied(enforce({ method: 'PATCH', url: 'Observation' }, grant), 405);
    denied(enforce({ method: 'GET', url: 'Observation/%E0%A4%A' }, grant), 400);
    denied(enforce({ method: 'GET', url: 'Observation/a/b/c/d' }, grant), 404);
    // authorize itself, for a caller that hands it what the parser made of such a request: the same status, not a 403.
    for (const [method, url, status] of [['GET', 'NotAType/1', 404], ['PATCH', 'Observation', 405], ['PUT', 'Observation', 400]] as const) {
      const call = parseRestRequest({ method, segments: url.split('/'), params: [], body: undefined });
      assert.deepEqual(authorize({ scopes: parseScopes('patient/*.cruds').scopes, patient: AMY, userPatients: undefined }, fhirR4Model(), call, { allowedOperations: new Set() }), { allow: false, status, reason: (call as { reason: string }).reason, needed: undefined });
    }
  });
});
