import { contains, intersect, reduce, setContains } from './algebra.js';
import { formatScope, parseScope, type ResourceScope, type Scope, type ScopeContext } from './scope.js';

/**
 * What a client may be granted: granted = requested ∩ registered for the client ∩ supported by the server
 * ∩ consented to by the user (SMART App Launch 2.2 §Scopes; the server may grant less than asked, and
 * something other than asked, and says so in the token response's `scope`).
 */

/** Which grant the scopes are for: interactive flows get patient/ and user/ scopes, backend services system/. */
export type GrantFlow = 'interactive' | 'backend';

/** A requested scope that was not granted, and why: shown to operators and in audit events, not to apps. */
export interface Refusal {
  readonly scope: string;
  readonly reason: string;
}

/** A request that must be refused as a whole (`invalid_scope`), naming the scope at fault. */
export class ScopeGrantError extends Error {
  override name = 'ScopeGrantError';
  constructor(
    readonly scope: string,
    readonly reason: string,
  ) {
    super(`${scope}: ${reason}`);
  }
}

/**
 * The scopes a client is registered for (its `scope` metadata). `undefined` means nothing was registered:
 * such a client may be granted any patient/, user/, identity and launch scope, but no system/ or extension
 * scope, which always need to be registered explicitly.
 */
export type RegisteredScopes = readonly Scope[] | undefined;

const INTERACTIVE_CONTEXTS: readonly ScopeContext[] = ['patient', 'user'];
/** Fixed scopes granted only to clients registered for them, in any flow: this server's own. */
const RESTRICTED_FIXED = new Set<string>(['introspect', 'admin', 'ehr-launch']);

/**
 * The scopes a client may not give itself through dynamic registration: this server's own (administration,
 * EHR launches, introspection) always, and system/ scopes (bulk access to every record) unless an operator
 * vouches for the client, by approving it or by handing out the initial access token it registers with.
 */
export function operatorOnlyScopes(scopes: readonly Scope[], vouched: boolean): string[] {
  return scopes.filter((s) => (s.kind === 'fixed' && RESTRICTED_FIXED.has(s.name)) || (!vouched && s.kind === 'resource' && s.context === 'system')).map(formatScope);
}

/**
 * The interactive grant before consent: each requested scope narrowed to what the client is registered
 * for; what cannot be granted at all is refused with the reason. Scopes granted as requested keep their
 * exact text; narrowed ones are written in the syntax (v1 or v2) of the request where it can say them.
 */
export function grantableScopes(requested: readonly Scope[], registered: RegisteredScopes): { granted: Scope[]; refused: Refusal[] } {
  const granted: Scope[] = [];
  const refused: Refusal[] = [];
  for (const scope of requested) {
    const text = formatScope(scope);
    switch (scope.kind) {
      case 'fixed':
      case 'launch-context':
        if (scope.kind === 'fixed' && RESTRICTED_FIXED.has(scope.name) && !registered?.some((r) => contains(r, scope))) refused.push({ scope: text, reason: 'the client is not registered for it' });
        else if (registered && !setContains(registered, scope)) refused.push({ scope: text, reason: 'the client is not registered for it' });
        else granted.push(scope);
        break;
      case 'extension':
        if (registered && setContains(registered, scope)) granted.push(scope);
        else refused.push({ scope: text, reason: 'extension scopes are granted only to clients registered for them' });
        break;
      case 'resource': {
        if (!INTERACTIVE_CONTEXTS.includes(scope.context)) {
          refused.push({ scope: text, reason: 'system/ scopes are granted only to backend services (client_credentials)' });
          break;
        }
        const pieces = narrowToRegistered(scope, registered);
        if (!pieces.length) refused.push({ scope: text, reason: 'the client is not registered for any part of it' });
        granted.push(...pieces);
        break;
      }
    }
  }
  const reduced = reduce(granted);
  // online_access is the weaker of the two refresh scopes: with offline_access granted it adds nothing.
  return { granted: reduced.some(isFixed('offline_access')) ? reduced.filter((s) => !isFixed('online_access')(s)) : reduced, refused };
}

/** The parts of `scope` within the registered scopes: `scope` itself when wholly contained. */
function narrowToRegistered(scope: ResourceScope, registered: RegisteredScopes): ResourceScope[] {
  if (!registered || setContains(registered, scope)) return [scope];
  const pieces: ResourceScope[] = [];
  for (const allowed of registered) {
    if (allowed.kind !== 'resource') continue;
    const piece = intersect(scope, allowed);
    if (piece) pieces.push({ ...piece, syntax: scope.syntax });
  }
  return reduce(pieces) as ResourceScope[];
}

/**
 * Backend services (SMART App Launch 2.2 §Backend Services): every requested scope must be a system/ scope
 * within what the client was pre-authorized for; anything else refuses the whole request. A TEFCA Individual
 * Access Services request (`context` patient) is a client_credentials request for one patient's records:
 * patient/ scopes instead of system/ ones.
 * @throws {ScopeGrantError} for the first scope at fault.
 */
export function grantBackendScopes(requested: readonly Scope[], registered: RegisteredScopes, context: 'system' | 'patient' = 'system'): Scope[] {
  if (!requested.length) throw new ScopeGrantError('scope', `is required: request the ${context}/ scopes this client is pre-authorized for`);
  for (const scope of requested) {
    const text = formatScope(scope);
    if (scope.kind !== 'resource' || scope.context !== context) {
      const registrable = scope.kind === 'extension' || (scope.kind === 'fixed' && RESTRICTED_FIXED.has(scope.name));
      if (registrable && registered && setContains(registered, scope)) continue;
      const refusal =
        context === 'system'
          ? "backend services are granted system/ scopes (and this server's own: introspect, admin, ehr-launch) only"
          : 'an Individual Access Services request (tefca_ias) is granted patient/ scopes only, for the patient its demographics match';
      throw new ScopeGrantError(text, registrable ? 'not within the scopes this client is pre-authorized for' : refusal);
    }
    if (!registered || !setContains(registered, scope)) throw new ScopeGrantError(text, 'not within the scopes this client is pre-authorized for');
  }
  return reduce(requested);
}

/** Drops patient/ scopes when no patient is in context: a patient/ scope without a patient permits nothing. */
export function requirePatientContext(granted: readonly Scope[], hasPatient: boolean): { granted: Scope[]; refused: Refusal[] } {
  if (hasPatient) return { granted: [...granted], refused: [] };
  const refused = granted.filter((s) => s.kind === 'resource' && s.context === 'patient').map((s) => ({ scope: formatScope(s), reason: 'no patient in context' }));
  return { granted: granted.filter((s) => !(s.kind === 'resource' && s.context === 'patient')), refused };
}

/** Does the set ask for a patient in context, by scope? */
export function needsPatient(scopes: readonly Scope[]): boolean {
  return scopes.some((s) => (s.kind === 'resource' && s.context === 'patient') || (s.kind === 'launch-context' && s.name === 'patient'));
}

export function isFixed(name: string): (scope: Scope) => boolean {
  return (scope) => scope.kind === 'fixed' && scope.name === name;
}

/** The space-separated `scope` value of a grant. */
export function scopeString(scopes: readonly Scope[]): string {
  return scopes.map(formatScope).join(' ');
}

/** Parses scopes registered on a client; a registration is validated when written, so an invalid one here is a bug. */
export function parseRegisteredScopes(value: string | undefined): RegisteredScopes {
  if (value === undefined) return undefined;
  return value.split(' ').filter(Boolean).map(parseScope);
}

/** Is `candidate` a narrowing the user may choose instead of `of` (contained in it, and not it)? */
export function isNarrowing(candidate: Scope, of: Scope): boolean {
  return contains(of, candidate) && !contains(candidate, of);
}
