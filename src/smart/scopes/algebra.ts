import { formatScope, type QueryParam, type ResourceScope, type Scope } from './scope.js';

/**
 * Scopes as sets of permitted FHIR interactions. A resource scope permits, in its context, its
 * interactions on its resource type (every type for `*`) restricted to resources matching all of its query
 * parameters. Everything here follows from that reading:
 *
 * - `a` contains `b` when every interaction `b` permits, `a` permits: same context, `a`'s type is `*` or
 *   `b`'s, `b`'s permissions within `a`'s, and every constraint of `a` also constrains `b` (more parameters
 *   narrow a scope, so `patient/Observation.rs` contains `patient/Observation.rs?category=…`, not the reverse).
 * - `a ∩ b` permits what both permit: the narrower type, the common permissions, both sets of constraints.
 * - v1 scopes are the same sets written differently (`read` = rs, `write` = cud, `*` = cruds).
 */

/** The scope in v2 syntax. Idempotent; identity on v2 scopes. */
export function toV2(scope: Scope): Scope {
  return scope.kind === 'resource' && scope.syntax === 'v1' ? { ...scope, syntax: 'v2' } : scope;
}

const sameParam = (a: QueryParam, b: QueryParam): boolean => a.name === b.name && a.value === b.value;

/** Does `a` permit everything `b` permits? */
export function contains(a: Scope, b: Scope): boolean {
  if (a.kind !== 'resource' || b.kind !== 'resource') return a.kind === b.kind && formatScope(toV2(a)) === formatScope(toV2(b));
  return (
    a.context === b.context &&
    (a.resourceType === '*' || a.resourceType === b.resourceType) &&
    (b.permissions & ~a.permissions) === 0 &&
    a.query.every((qa) => b.query.some((qb) => sameParam(qa, qb)))
  );
}

/** The scope permitting exactly what both permit, or undefined when that is nothing. */
export function intersect(a: ResourceScope, b: ResourceScope): ResourceScope | undefined {
  if (a.context !== b.context) return undefined;
  let resourceType: string;
  if (a.resourceType === '*') resourceType = b.resourceType;
  else if (b.resourceType === '*' || b.resourceType === a.resourceType) resourceType = a.resourceType;
  else return undefined;
  const permissions = a.permissions & b.permissions;
  if (permissions === 0) return undefined;
  const query = [...a.query, ...b.query.filter((qb) => !a.query.some((qa) => sameParam(qa, qb)))];
  return { kind: 'resource', context: a.context, resourceType, permissions, query, syntax: a.syntax === 'v1' && b.syntax === 'v1' ? 'v1' : 'v2' };
}

/**
 * The same permissions with nothing said twice: duplicates and scopes contained in another are dropped,
 * and resource scopes differing only in permissions are merged (`.r` + `.s` = `.rs`). Order follows the
 * first appearance, so that a grant reads like the request it answers.
 */
export function reduce(scopes: readonly Scope[]): Scope[] {
  const merged: Scope[] = [];
  for (const scope of scopes) {
    if (scope.kind === 'resource') {
      const i = merged.findIndex((m) => m.kind === 'resource' && m.context === scope.context && m.resourceType === scope.resourceType && sameQuery(m.query, scope.query));
      const existing = merged[i];
      if (existing?.kind === 'resource') {
        const permissions = existing.permissions | scope.permissions;
        merged[i] = { ...existing, permissions, syntax: existing.syntax === 'v1' && scope.syntax === 'v1' ? 'v1' : 'v2' };
        continue;
      }
    } else if (merged.some((m) => contains(m, scope))) {
      continue;
    }
    merged.push(scope);
  }
  return merged.filter((scope, i) => !merged.some((other, j) => j !== i && contains(other, scope) && (!contains(scope, other) || j < i)));
}

function sameQuery(a: readonly QueryParam[], b: readonly QueryParam[]): boolean {
  return a.length === b.length && a.every((qa) => b.some((qb) => sameParam(qa, qb)));
}

/** Everything either set permits. */
export function union(a: readonly Scope[], b: readonly Scope[]): Scope[] {
  return reduce([...a, ...b]);
}

/** Everything both sets permit: the largest scopes contained in some scope of each. */
export function intersectSets(a: readonly Scope[], b: readonly Scope[]): Scope[] {
  const out: Scope[] = [];
  for (const x of a) {
    for (const y of b) {
      if (x.kind === 'resource' && y.kind === 'resource') {
        const both = intersect(x, y);
        if (both) out.push(both);
      } else if (contains(y, x)) {
        out.push(x);
      }
    }
  }
  return reduce(out);
}

/** Does some scope of the set contain `scope`? */
export function setContains(set: readonly Scope[], scope: Scope): boolean {
  return set.some((s) => contains(s, scope));
}
