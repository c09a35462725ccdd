import { isFhirR4ResourceType, suggestResourceType } from './resource-types.js';

/**
 * SMART scopes as values (SMART App Launch 2.2 §Scopes and Launch Context). Every place in the server that
 * reads or writes a scope goes through `parseScope` / `formatScope`; nothing else splits a scope string.
 */

export type ScopeContext = 'patient' | 'user' | 'system';
export const SCOPE_CONTEXTS: readonly ScopeContext[] = ['patient', 'user', 'system'];

/** v2 permissions, in the only order the spec allows them (§Scopes for requesting FHIR resources). */
export const PERMISSION_LETTERS = ['c', 'r', 'u', 'd', 's'] as const;
export type PermissionLetter = (typeof PERMISSION_LETTERS)[number];
/** Bit per permission: c = 1, r = 2, u = 4, d = 8, s = 16. A scope's permissions are a non-zero set. */
export const PERMISSION_BITS: Readonly<Record<PermissionLetter, number>> = { c: 1, r: 2, u: 4, d: 8, s: 16 };
export const ALL_PERMISSIONS = 31;

/** SMART v1 permissions and their v2 meaning: read ⇒ rs, write ⇒ cud, * ⇒ cruds. */
export const V1_PERMISSIONS = { read: 18, write: 13, '*': 31 } as const;
export type V1Permission = keyof typeof V1_PERMISSIONS;

export interface QueryParam {
  /** Decoded parameter name, e.g. `category`. */
  readonly name: string;
  /** Decoded value, e.g. `http://terminology.hl7.org/CodeSystem/observation-category|laboratory`. */
  readonly value: string;
  /** The `name=value` text exactly as it was written, so that it goes out again unchanged. */
  readonly raw: string;
}

/** `patient/Observation.rs?category=…`, `user/*.read`, `system/Patient.cruds`. */
export interface ResourceScope {
  readonly kind: 'resource';
  readonly context: ScopeContext;
  /** A FHIR R4 resource type, or `*` for every type (including types that do not exist yet). */
  readonly resourceType: string;
  /** Bit set of {@link PERMISSION_BITS}; never 0. */
  readonly permissions: number;
  /** Granular constraints (`?param=value&…`), all of which apply; empty for a resource-level scope. */
  readonly query: readonly QueryParam[];
  /** Which grammar the scope is written in. A v1 scope never has a query. */
  readonly syntax: 'v1' | 'v2';
}

/**
 * Identity, launch and refresh scopes (SMART), UDAP's `udap` (HL7 UDAP Security IG §6: Tiered OAuth), and this
 * server's own: `introspect` lets a resource server's access token call the introspection endpoint, `admin` the
 * admin API, `ehr-launch` its launch creation.
 */
export const FIXED_SCOPES = ['openid', 'fhirUser', 'profile', 'launch', 'offline_access', 'online_access', 'udap', 'introspect', 'admin', 'ehr-launch'] as const;
export type FixedScopeName = (typeof FIXED_SCOPES)[number];

/** Identity, launch and refresh scopes with fixed meaning. */
export interface FixedScope {
  readonly kind: 'fixed';
  readonly name: FixedScopeName;
}

/**
 * `launch/patient`, `launch/encounter` (ask for that context), and, experimentally, `launch/<type>` for
 * other resources in `fhirContext`, the type in lower case, with at most one `?role=` (SMART App Launch 2.2
 * §Scopes for requesting context data).
 */
export interface LaunchContextScope {
  readonly kind: 'launch-context';
  /** The text after `launch/`, as written: `patient`, `encounter`, `imagingstudy`, … */
  readonly name: string;
  /** The FHIR resource type it names: `Patient`, `Encounter`, `ImagingStudy`, … */
  readonly resourceType: string;
  /** The `?role=` asked for, as written; undefined for the default role. */
  readonly role: string | undefined;
}

/** Scopes the SMART spec leaves to servers: absolute URIs, or names starting with `__`. Granted only when registered. */
export interface ExtensionScope {
  readonly kind: 'extension';
  readonly value: string;
}

export type Scope = ResourceScope | FixedScope | LaunchContextScope | ExtensionScope;

/** A scope string that is not a valid scope, with the rule it breaks. */
export class ScopeSyntaxError extends Error {
  override name = 'ScopeSyntaxError';
  constructor(
    readonly scope: string,
    readonly rule: string,
  ) {
    super(`${scope}: ${rule}`);
  }
}

const FIXED = new Set<string>(FIXED_SCOPES);
/** An RFC 3986 scheme followed by `:`; `patient/x.r?code=http://…` is not one, the `/` comes first. */
const URI = /^[A-Za-z][A-Za-z0-9+.-]*:\S+$/;
const RESOURCE = /^([^/]+)\/([^.]*)\.([^?]*)(?:\?(.*))?$/;
const V2_PERMISSIONS = /^c?r?u?d?s?$/;
/** FHIR search parameter names, with an optional modifier or chain (`code:in`, `subject:Patient.name`). */
const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_.:-]*$/;

/** The scope strings of a space-separated `scope` value, in order, without duplicates. */
export function splitScopes(value: string | undefined): string[] {
  if (!value) return [];
  return [...new Set(value.split(' ').filter(Boolean))];
}

/** @throws {ScopeSyntaxError} naming the scope and the rule it breaks. */
export function parseScope(text: string): Scope {
  if (text === '' || /\s/.test(text)) throw new ScopeSyntaxError(JSON.stringify(text), 'a scope is one non-empty token without spaces');
  if (FIXED.has(text)) return { kind: 'fixed', name: text as FixedScopeName };
  if (text.startsWith('launch/')) return parseLaunchContext(text);
  if (text.startsWith('__') || URI.test(text)) return { kind: 'extension', value: text };
  if (text.includes('/')) return parseResourceScope(text);
  throw new ScopeSyntaxError(text, `not a SMART scope: expected ${FIXED_SCOPES.join(', ')}, launch/<context>, <context>/<Type>.<permissions> or an extension scope (an absolute URI or a name starting with __)`);
}

const LAUNCH = /^launch\/([^?]*)(?:\?(.*))?$/;

function parseLaunchContext(text: string): LaunchContextScope {
  const [, name = '', query] = LAUNCH.exec(text) ?? [];
  const resourceType = suggestResourceType(name);
  if (!resourceType || resourceType.toLowerCase() !== name.toLowerCase()) {
    throw new ScopeSyntaxError(text, `launch context must be patient, encounter or another FHIR R4 resource type in lower case, e.g. launch/imagingstudy`);
  }
  if (query === undefined) return { kind: 'launch-context', name, resourceType, role: undefined };
  const role = /^role=([^&]+)$/.exec(query)?.[1];
  if (!role) throw new ScopeSyntaxError(text, 'a launch context scope takes at most one parameter, ?role=<role>');
  return { kind: 'launch-context', name, resourceType, role };
}

function parseResourceScope(text: string): ResourceScope {
  const match = RESOURCE.exec(text);
  if (!match) throw new ScopeSyntaxError(text, 'expected <context>/<Type>.<permissions>, e.g. patient/Observation.rs');
  const [, context = '', resourceType = '', permissionText = '', queryText] = match;
  if (!(SCOPE_CONTEXTS as readonly string[]).includes(context)) {
    throw new ScopeSyntaxError(text, `unknown context "${context}": expected patient, user or system`);
  }
  if (resourceType !== '*' && !isFhirR4ResourceType(resourceType)) {
    throw new ScopeSyntaxError(text, `"${resourceType}" is not a FHIR R4 resource type or *${hint(resourceType)}`);
  }
  const v1 = (V1_PERMISSIONS as Record<string, number | undefined>)[permissionText];
  if (v1 !== undefined) {
    if (queryText !== undefined) throw new ScopeSyntaxError(text, 'a query (?…) is only allowed on v2 scopes: write the permissions as letters, e.g. .rs');
    return { kind: 'resource', context: context as ScopeContext, resourceType, permissions: v1, query: [], syntax: 'v1' };
  }
  return {
    kind: 'resource',
    context: context as ScopeContext,
    resourceType,
    permissions: parseV2Permissions(text, permissionText),
    query: queryText === undefined ? [] : parseQuery(text, queryText),
    syntax: 'v2',
  };
}

function parseV2Permissions(text: string, permissions: string): number {
  if (permissions === '') throw new ScopeSyntaxError(text, 'permissions are missing: expected one or more of c, r, u, d, s (in that order), or read, write, *');
  const unknown = permissions.split('').filter((p) => !(PERMISSION_LETTERS as readonly string[]).includes(p));
  if (unknown.length) {
    throw new ScopeSyntaxError(text, `undefined permission "${unknown.join('')}" in ".${permissions}": v2 permissions are c, r, u, d, s; v1 permissions are read, write, *`);
  }
  if (!V2_PERMISSIONS.test(permissions)) {
    throw new ScopeSyntaxError(text, `permissions ".${permissions}" must each appear once and in the order c, r, u, d, s`);
  }
  let bits = 0;
  for (const p of permissions) bits |= PERMISSION_BITS[p as PermissionLetter];
  return bits;
}

function parseQuery(text: string, query: string): QueryParam[] {
  if (query === '') throw new ScopeSyntaxError(text, 'the query after ? is empty: expected param=value pairs joined by &');
  const params: QueryParam[] = [];
  for (const raw of query.split('&')) {
    const eq = raw.indexOf('=');
    const name = eq === -1 ? raw : raw.slice(0, eq);
    const value = eq === -1 ? '' : raw.slice(eq + 1);
    if (eq === -1 || name === '' || value === '') {
      throw new ScopeSyntaxError(text, `malformed query parameter "${raw}": expected param=value pairs joined by &`);
    }
    let decodedName: string;
    let decodedValue: string;
    try {
      decodedName = decodeURIComponent(name);
      decodedValue = decodeURIComponent(value);
    } catch {
      throw new ScopeSyntaxError(text, `malformed percent-encoding in query parameter "${raw}"`);
    }
    if (!PARAM_NAME.test(decodedName)) throw new ScopeSyntaxError(text, `"${decodedName}" is not a FHIR search parameter name`);
    params.push({ name: decodedName, value: decodedValue, raw });
  }
  return params;
}

function hint(name: string): string {
  const suggestion = suggestResourceType(name);
  return suggestion ? ` (did you mean ${suggestion}?)` : '';
}

/**
 * The scope as text. A scope parsed from text formats back to exactly that text; a v1 scope whose
 * permissions cannot be said in v1 (after narrowing) is written in v2.
 */
export function formatScope(scope: Scope): string {
  switch (scope.kind) {
    case 'fixed':
      return scope.name;
    case 'launch-context':
      return `launch/${scope.name}${scope.role === undefined ? '' : `?role=${scope.role}`}`;
    case 'extension':
      return scope.value;
    case 'resource':
      return `${scope.context}/${scope.resourceType}.${formatPermissions(scope)}${scope.query.length ? `?${scope.query.map((q) => q.raw).join('&')}` : ''}`;
  }
}

function formatPermissions(scope: ResourceScope): string {
  if (scope.syntax === 'v1' && !scope.query.length) {
    const word = v1Word(scope.permissions);
    if (word) return word;
  }
  return permissionLetters(scope.permissions);
}

export function v1Word(permissions: number): V1Permission | undefined {
  for (const [word, bits] of Object.entries(V1_PERMISSIONS) as [V1Permission, number][]) if (bits === permissions) return word;
  return undefined;
}

export function permissionLetters(permissions: number): string {
  return PERMISSION_LETTERS.filter((p) => permissions & PERMISSION_BITS[p]).join('');
}

/** Parses a whole `scope` parameter, collecting every invalid scope rather than stopping at the first. */
export function parseScopes(value: string | undefined): { scopes: Scope[]; errors: ScopeSyntaxError[] } {
  const scopes: Scope[] = [];
  const errors: ScopeSyntaxError[] = [];
  for (const text of splitScopes(value)) {
    try {
      scopes.push(parseScope(text));
    } catch (error) {
      if (!(error instanceof ScopeSyntaxError)) throw error;
      errors.push(error);
    }
  }
  return { scopes, errors };
}

export function isResourceScope(scope: Scope): scope is ResourceScope {
  return scope.kind === 'resource';
}
