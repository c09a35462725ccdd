/**
 * Scope engine micro-benchmark: a 2,000-scope request through parse, grant, consent and enforcement, side
 * by side with a baseline measured in the same run (split on spaces and one regular-expression test per
 * scope: the least any parser must do). Run: npm run bench:scopes
 */
import { performance } from 'node:perf_hooks';

import { consentOptions } from '../src/smart/scopes/consent.js';
import { grantableScopes, parseRegisteredScopes } from '../src/smart/scopes/grant.js';
import { permits } from '../src/smart/scopes/permits.js';
import { parseScopes, splitScopes } from '../src/smart/scopes/scope.js';
import { FHIR_R4_RESOURCE_TYPES } from '../src/smart/scopes/resource-types.js';

const COUNT = 2000;
const types = [...FHIR_R4_RESOURCE_TYPES];
const perms = ['r', 'rs', 'cruds', 'cu', 's', 'read', 'write', '*'];
const scopes: string[] = [];
for (let i = 0; scopes.length < COUNT; i++) {
  const type = types[i % types.length]!;
  const perm = perms[i % perms.length]!;
  const context = ['patient', 'user'][i % 2]!;
  scopes.push(perm.length > 1 && !/read|write|\*/.test(perm) && i % 3 === 0 ? `${context}/${type}.${perm}?category=http://example.org/cs|code-${i}` : `${context}/${type}.${perm}`);
}
const request = `openid fhirUser launch/patient offline_access ${scopes.join(' ')}`;
const registered = parseRegisteredScopes('openid fhirUser launch/patient offline_access patient/*.cruds user/*.rs');

function measure(name: string, fn: () => unknown, perScope = COUNT): { name: string; ms: number; usPerScope: number } {
  for (let i = 0; i < 20; i++) fn();
  const runs: number[] = [];
  for (let r = 0; r < 30; r++) {
    const t = performance.now();
    fn();
    runs.push(performance.now() - t);
  }
  runs.sort((a, b) => a - b);
  const ms = runs[Math.floor(runs.length / 2)]!;
  return { name, ms, usPerScope: (ms * 1000) / perScope };
}

const baselinePattern = /^(patient|user|system)\/([A-Za-z*]+)\.([a-z*]+)(\?.*)?$/;
const parsed = parseScopes(request).scopes;
const granted = grantableScopes(parsed, registered).granted;

const rows = [
  measure('baseline: split + one regex per scope', () => splitScopes(request).filter((s) => baselinePattern.test(s)).length),
  measure('parseScopes (validate, decode, R4 type check)', () => parseScopes(request)),
  measure('grantableScopes (∩ registered, reduce)', () => grantableScopes(parsed, registered)),
  measure('consentOptions (labels, alternatives)', () => consentOptions(granted)),
  measure('permits (one search; µs per call, not per scope)', () => permits({ scope: granted, patient: 'p1' }, { interaction: 'search', resourceType: 'Observation', compartment: { patient: 'p1' } }), 1),
];

console.log(`Scope engine, ${COUNT} resource scopes + 4 fixed; Node ${process.version}; median of 30 runs\n`);
console.log(`${'step'.padEnd(48)} ${'ms / request'.padStart(13)} ${'µs / scope'.padStart(11)} ${'× baseline'.padStart(11)}`);
for (const row of rows) {
  console.log(`${row.name.padEnd(48)} ${row.ms.toFixed(3).padStart(13)} ${row.usPerScope.toFixed(3).padStart(11)} ${(row.ms / rows[0]!.ms).toFixed(1).padStart(11)}`);
}
