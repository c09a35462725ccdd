import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import fc from 'fast-check';

import { contains, intersect, intersectSets, reduce, toV2 } from '../../src/smart/scopes/algebra.js';
import { permits, type FhirInteraction, type FhirRequest } from '../../src/smart/scopes/permits.js';
import { formatScope, parseScope, V1_PERMISSIONS, type QueryParam, type ResourceScope, type Scope } from '../../src/smart/scopes/scope.js';

const LAB = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
const VITALS = 'http://terminology.hl7.org/CodeSystem/observation-category|vital-signs';
const TYPES = ['*', 'Observation', 'Condition', 'Patient'];
const PARAMS: QueryParam[] = [
  { name: 'category', value: LAB, raw: `category=${LAB}` },
  { name: 'category', value: VITALS, raw: `category=${VITALS}` },
  { name: 'status', value: 'final', raw: 'status=final' },
];
const PATIENT = 'p1';
const INTERACTIONS: FhirInteraction[] = ['read', 'vread', 'history-instance', 'history-type', 'search', 'create', 'update', 'patch', 'delete'];

const resourceScope: fc.Arbitrary<ResourceScope> = fc
  .record({
    context: fc.constantFrom('patient' as const, 'user' as const, 'system' as const),
    resourceType: fc.constantFrom(...TYPES),
    permissions: fc.integer({ min: 1, max: 31 }),
    query: fc.subarray(PARAMS),
    v1: fc.boolean(),
  })
  .map(({ context, resourceType, permissions, query, v1 }) => {
    const canBeV1 = !query.length && (Object.values(V1_PERMISSIONS) as number[]).includes(permissions);
    return { kind: 'resource', context, resourceType, permissions, query, syntax: v1 && canBeV1 ? 'v1' : 'v2' } as const;
  });

const scope: fc.Arbitrary<Scope> = fc.oneof(
  { weight: 4, arbitrary: resourceScope },
  fc.constantFrom<Scope>({ kind: 'fixed', name: 'openid' }, { kind: 'fixed', name: 'offline_access' }, { kind: 'launch-context', name: 'patient', resourceType: 'Patient', role: undefined }),
);

const request: fc.Arbitrary<FhirRequest> = fc.record({
  interaction: fc.constantFrom(...INTERACTIONS),
  resourceType: fc.constantFrom('Observation', 'Condition', 'Patient', 'Encounter'),
  id: fc.option(fc.constantFrom(PATIENT, 'x'), { nil: undefined }),
  params: fc.option(
    fc.record({ category: fc.option(fc.constantFrom(LAB, VITALS, `${LAB},${VITALS}`), { nil: undefined }), status: fc.option(fc.constant('final'), { nil: undefined }) }),
    { nil: undefined },
  ),
  compartment: fc.option(fc.record({ patient: fc.constantFrom(PATIENT, 'p2') }), { nil: undefined }),
});

/** What a grant permits for a request, as a comparable value. */
function outcome(scopes: readonly Scope[], req: FhirRequest): string {
  const d = permits({ scope: scopes, patient: PATIENT }, req);
  if (!d.allow) return 'deny';
  return d.mustMatch ? `allow if ${JSON.stringify(d.mustMatch.map((set) => set.map((q) => `${q.name}=${q.value}`).sort()).sort())}` : 'allow';
}

const allows = (scopes: readonly Scope[], req: FhirRequest): boolean => permits({ scope: scopes, patient: PATIENT }, req).allow;

const RUNS = { numRuns: 400 };

describe('scope algebra (properties)', () => {
  it('format∘parse is the identity on valid scopes', () => {
    fc.assert(
      fc.property(scope, (s) => {
        const text = formatScope(s);
        assert.deepEqual(parseScope(text), s);
        assert.equal(formatScope(parseScope(text)), text);
      }),
      RUNS,
    );
  });

  it('normalising is idempotent', () => {
    fc.assert(
      fc.property(fc.array(scope, { maxLength: 6 }), (set) => {
        assert.deepEqual(toV2(toV2(set[0] ?? { kind: 'fixed', name: 'openid' })), toV2(set[0] ?? { kind: 'fixed', name: 'openid' }));
        assert.deepEqual(reduce(reduce(set)), reduce(set));
      }),
      RUNS,
    );
  });

  it('containment is a partial order: reflexive, transitive, antisymmetric up to equal meaning', () => {
    fc.assert(
      fc.property(resourceScope, resourceScope, resourceScope, (a, b, c) => {
        assert.ok(contains(a, a));
        if (contains(a, b) && contains(b, c)) assert.ok(contains(a, c));
        if (contains(a, b) && contains(b, a)) {
          for (const req of fc.sample(request, 20)) assert.equal(outcome([a], req), outcome([b], req));
        }
      }),
      RUNS,
    );
  });

  it('the intersection is contained in both operands, and contains whatever both contain', () => {
    fc.assert(
      fc.property(resourceScope, resourceScope, resourceScope, (a, b, c) => {
        const both = intersect(a, b);
        if (both) {
          assert.ok(contains(a, both), `${formatScope(a)} ⊇ ${formatScope(both)}`);
          assert.ok(contains(b, both), `${formatScope(b)} ⊇ ${formatScope(both)}`);
        }
        if (contains(a, c) && contains(b, c)) assert.ok(both && contains(both, c), 'greatest lower bound');
      }),
      RUNS,
    );
  });

  it('a v1 scope and its v2 normal form permit exactly the same requests', () => {
    fc.assert(
      fc.property(resourceScope, request, (s, req) => {
        assert.equal(outcome([s], req), outcome([toV2(s)], req));
      }),
      RUNS,
    );
  });

  it('containment is sound: what the contained scope permits, the containing one permits', () => {
    fc.assert(
      fc.property(resourceScope, resourceScope, request, (a, b, req) => {
        if (contains(a, b) && allows([b], req)) assert.ok(allows([a], req), `${formatScope(a)} ⊇ ${formatScope(b)} but only the latter permits ${JSON.stringify(req)}`);
      }),
      RUNS,
    );
  });

  it('reducing a set and intersecting sets never widen what is permitted', () => {
    fc.assert(
      fc.property(fc.array(resourceScope, { maxLength: 5 }), fc.array(resourceScope, { maxLength: 5 }), request, (x, y, req) => {
        assert.equal(allows(reduce(x), req), allows(x, req), 'reduce keeps what is permitted');
        if (allows(intersectSets(x, y), req)) {
          assert.ok(allows(x, req) && allows(y, req), 'the intersection permits nothing either set does not');
        }
      }),
      RUNS,
    );
  });
});
