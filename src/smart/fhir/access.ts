import { scopesPermitting, scopesSearchIsConfinedTo, splitOr } from '../scopes/permits.js';
import type { PermissionLetter, ResourceScope, Scope } from '../scopes/scope.js';
import { searchParameter, type FhirModel } from './model.js';
import type { FhirCall, SearchParam } from './request.js';
import { inPatientCompartment, isResource, matchesAll, patientLinksOf, patientReference, patientsOf, type FhirResource } from './resources.js';

/**
 * What a SMART token may do at a FHIR server, request by request and resource by resource: the rules the
 * gateway (src/gateway) enforces at the door, and that a FHIR server can call itself (`smart-auth-server/enforce`).
 *
 * - Scopes permit interactions per resource type (SMART App Launch 2.2 §Scopes: c create; r read, vread,
 *   instance history; u update, patch; d delete; s search, type history).
 * - `patient/` scopes reach the Patient compartment (FHIR R4 CompartmentDefinition-patient) of the patient in
 *   context; `user/` scopes the patients the user may act for (all of them for a clinician); `system/`
 *   scopes every patient. Resource types outside the compartment (Practitioner, Organization, Medication…)
 *   carry no one's record: any scope for their type reads them; only one that reaches every patient writes
 *   them. A write by a scope that reaches some patients only must name those patients alone (reachesResource).
 * - Granular scopes (`?category=…`) reach only resources matching all of their parameters.
 *
 * Requests are confined before they are sent (a search narrowed to the patients reached and, where it can
 * say it, to a granular scope's parameters) and every resource that comes back is checked again: a resource
 * no granted scope reaches is never returned, wherever it sits (a match, an `_include`, a history entry, a
 * `$everything` or batch entry, a contained resource).
 */

export interface AccessGrant {
  /** The token's scopes, parsed. */
  readonly scopes: readonly Scope[];
  /** The patient in context (the token's `patient`), which `patient/` scopes reach. */
  readonly patient: string | undefined;
  /** Whom `user/` scopes reach: the user's patients, `all` (a clinician), or undefined with no user (a backend). */
  readonly userPatients: readonly string[] | 'all' | undefined;
  /**
   * When set, no scope reaches a patient outside it, whatever its context (`system/` included): the members
   * a payer's Provider Access or Payer-to-Payer client may reach now (CMS-0057-F).
   */
  readonly population?: readonly string[] | undefined;
  /** Resources of these patients that carry one of these security labels are withheld (the member chose to exclude sensitive data). */
  readonly withheld?: Withheld | undefined;
}

export interface Withheld {
  readonly patients: readonly string[];
  /** Security labels as `system|code`. */
  readonly labels: readonly string[];
}

export interface AccessOptions {
  /** Operations (`$name`) and search features (`_filter`, `_query`) the operator lets through this upstream. */
  readonly allowedOperations: ReadonlySet<string>;
}

export type Letter = PermissionLetter;

/** What a scope permitting an interaction reaches: which patients, and which resources (its parameters). */
interface Reach {
  readonly scope: ResourceScope;
  readonly patients: ReadonlySet<string> | 'all';
}

export type Access =
  | {
      readonly allow: false;
      /**
       * 403 a refusal (the scopes, the patients reached); 404 as if it did not exist; 400 a request that is
       * not the interaction it claims to be (FHIR R4 §http: a body that could not be parsed or failed basic
       * validation); 405 a method the path does not take.
       */
      readonly status: 400 | 403 | 404 | 405;
      readonly reason: string;
      /** For 403 insufficient_scope: a scope that would have permitted it (RFC 6750 §3.1 `scope`). */
      readonly needed?: string | undefined;
    }
  | {
      readonly allow: true;
      /** Search parameters to add before the request goes on: the confinement. */
      readonly addParams: readonly SearchParam[];
      /** The resource as it stands must be read and reached first (update, patch, delete, an instance operation). */
      readonly checkCurrent: Letter | undefined;
      /** The letters each resource of the answer is checked with (one of them must reach it). */
      readonly resultLetters: readonly Letter[];
      /**
       * The request as sent upstream selects only what the grant reaches, so a count (`total`,
       * `_summary=count`) is the grant's to see. When false, only the answer is checked: totals are dropped.
       */
      readonly countable: boolean;
    };

const deny = (status: 400 | 403 | 404 | 405, reason: string, needed?: string): Access => ({ allow: false, status, reason, needed });
const allow = (resultLetter: Letter, options: { addParams?: readonly SearchParam[]; checkCurrent?: Letter; countable?: boolean } = {}): Access => ({
  allow: true,
  addParams: options.addParams ?? [],
  checkCurrent: options.checkCurrent,
  resultLetters: [resultLetter],
  countable: options.countable ?? true,
});

/** The scopes of the grant that permit `letter` on `resourceType`, with what each reaches. */
function reaches(grant: AccessGrant, resourceType: string, letter: Letter): Reach[] {
  const out: Reach[] = [];
  const population = grant.population === undefined ? undefined : new Set(grant.population);
  const within = (patients: ReadonlySet<string> | 'all'): ReadonlySet<string> | 'all' => (population === undefined ? patients : patients === 'all' ? population : new Set([...patients].filter((p) => population.has(p))));
  for (const scope of scopesPermitting(grant.scopes, resourceType, letter)) {
    if (scope.context === 'system') out.push({ scope, patients: within('all') });
    else if (scope.context === 'patient') {
      if (grant.patient !== undefined) out.push({ scope, patients: within(new Set([grant.patient])) });
    } else if (grant.userPatients !== undefined) {
      out.push({ scope, patients: within(grant.userPatients === 'all' ? 'all' : new Set(grant.userPatients)) });
    }
  }
  return out;
}

/** A scope that would permit it, in the contexts the grant uses: for `WWW-Authenticate: … scope="…"`. */
function neededScope(grant: AccessGrant, resourceType: string, letter: Letter): string {
  const contexts = [...new Set(grant.scopes.filter((s): s is ResourceScope => s.kind === 'resource').map((s) => s.context))];
  return (contexts.length ? contexts : ['patient', 'user', 'system']).map((c) => `${c}/${resourceType}.${letter}`).join(' ');
}

function insufficient(grant: AccessGrant, resourceType: string, letter: Letter, what: string): Access {
  // Scopes that would permit it, but reach no one: patient/ scopes without a patient in context, user/ scopes without a user.
  const unreaching = scopesPermitting(grant.scopes, resourceType, letter).filter((s) => (s.context === 'patient' && grant.patient === undefined) || (s.context === 'user' && grant.userPatients === undefined));
  if (unreaching.length) {
    const contexts = [...new Set(unreaching.map((s) => s.context))];
    const why = contexts.map((c) => (c === 'patient' ? 'patient/ scopes need a patient in context, and this token has none' : 'user/ scopes need a signed-in user, and this token has none')).join('; ');
    return deny(403, `no granted scope reaches any record for ${what} (${letter}) on ${resourceType}: ${why}`);
  }
  return deny(403, `no granted scope permits ${what} (${letter}) on ${resourceType}`, neededScope(grant, resourceType, letter));
}

/** The patients reached on the type, or `all`. Empty: nobody's record. */
function reachedPatients(model: FhirModel, resourceType: string, list: readonly Reach[]): ReadonlySet<string> | 'all' {
  if (!inPatientCompartment(model, resourceType) || list.some((r) => r.patients === 'all')) return 'all';
  return new Set(list.flatMap((r) => [...(r.patients as ReadonlySet<string>)]));
}

/**
 * Does some scope that permits `letter` on the resource's type reach this resource?
 *
 * To read it, the resource must name a patient the scope reaches. To write it (create, update, the result of
 * a patch, delete), a scope that reaches some patients only must reach every patient it names and no
 * reference in its compartment may be one that cannot be told (see patientLinksOf): an Observation about
 * another patient is not made one's own by naming oneself its performer. Resources outside the compartment
 * (Practitioner, Organization, Medication…) are shared by every record: any scope for their type reads them,
 * only one that reaches every patient writes them.
 */
export function reachesResource(grant: AccessGrant, model: FhirModel, resource: FhirResource, letter: Letter): boolean {
  const list = reaches(grant, resource.resourceType, letter);
  if (!list.length) return false;
  const write = letter === 'c' || letter === 'u' || letter === 'd';
  const matching = (r: Reach) => matchesAll(model, resource, r.scope.query);
  if (!inPatientCompartment(model, resource.resourceType)) {
    // A Binary whose securityContext is a Patient is that patient's (one naming another resource is not followed).
    const owner = resource.resourceType === 'Binary' ? patientReference(resource.securityContext) : undefined;
    return list.some((r) => (!write || r.patients === 'all') && (owner === undefined || r.patients === 'all' || r.patients.has(owner)) && matching(r));
  }
  const patients = patientsOf(model, resource);
  if (isWithheld(grant.withheld, resource, patients)) return false;
  if (!write) return list.some((r) => (r.patients === 'all' || [...patients].some((p) => (r.patients as ReadonlySet<string>).has(p))) && matching(r));
  const links = patientLinksOf(model, resource);
  return list.some((r) => {
    if (r.patients === 'all') return matching(r);
    const reached = r.patients;
    return !links.unresolved && links.patients.size > 0 && [...links.patients].every((p) => reached.has(p)) && matching(r);
  });
}

/** PDex: a member who chose to exclude sensitive data; a resource of theirs labelled sensitive is not shared. */
function isWithheld(withheld: Withheld | undefined, resource: FhirResource, patients: ReadonlySet<string>): boolean {
  if (!withheld?.patients.length || !withheld.labels.length || !withheld.patients.some((p) => patients.has(p))) return false;
  const security = (resource.meta as { security?: unknown } | undefined)?.security;
  if (!Array.isArray(security)) return false;
  return security.some((label: unknown) => {
    const { system, code } = (label ?? {}) as { system?: unknown; code?: unknown };
    return typeof system === 'string' && typeof code === 'string' && withheld.labels.includes(`${system}|${code}`);
  });
}

/** May the grant do this? And if so, how is the request confined, and how is its answer checked. */
export function authorize(grant: AccessGrant, model: FhirModel, call: FhirCall, options: AccessOptions): Access {
  switch (call.kind) {
    case 'capabilities':
      return allow('r');
    case 'invalid':
      return deny(call.status, call.reason);
    case 'read':
    case 'vread':
    case 'history-instance':
      return instanceAccess(grant, model, call.type, call.id, 'r', call.kind === 'history-instance' ? 'instance history' : 'read');
    case 'search-type':
      return searchAccess(grant, model, call.type, call.params, options);
    case 'search-system':
      return systemSearchAccess(grant, model, call.params, options);
    case 'history-type': {
      const list = reaches(grant, call.type, 's');
      if (!list.length) return insufficient(grant, call.type, 's', 'type history');
      // Binary as its search (searchAccess): a deleted one's entry holds no resource to tell whose it was, only its id.
      const confined = call.type === 'Binary' ? list.every((r) => r.patients !== 'all') : reachedPatients(model, call.type, list) !== 'all';
      if (confined) return deny(403, `the history of every ${call.type} cannot be confined to the patients this token reaches; read the history of each resource instead`);
      return allow('s');
    }
    case 'history-system':
      return everyType(grant, 's') ? allow('s') : deny(403, 'the history of the whole server needs a system/*.s scope (or *.s reaching every patient)', neededScope(grant, '*', 's'));
    case 'create': {
      if (!reaches(grant, call.type, 'c').length) return insufficient(grant, call.type, 'c', 'create');
      if (!writesShared(grant, model, call.type, 'c')) return sharedRecord(call.type, 'create');
      // After the scopes: a token that may not create one is told so (insufficient_scope), whatever it sent.
      if (!isResource(call.resource) || call.resource.resourceType !== call.type) return deny(400, `the body must be a ${call.type} resource`);
      // Checked as it will be created: the id is dropped before it goes (FHIR R4 §create), so a Patient sent
      // with the id of the patient in context is not theirs once created (the server gives it another id).
      if (!reachesResource(grant, model, withoutId(call.resource), 'c')) return deny(403, `the ${call.type} would be outside what this token reaches (another patient's record, or outside its granular scopes)`);
      if (call.ifNoneExist !== undefined && reachedPatients(model, call.type, reaches(grant, call.type, 's')) !== 'all') {
        return deny(403, 'a conditional create (If-None-Exist) searches every patient; it needs a scope that reaches them all');
      }
      return allow('c');
    }
    case 'update': {
      if (!reaches(grant, call.type, 'u').length) return insufficient(grant, call.type, 'u', 'update');
      if (!writesShared(grant, model, call.type, 'u')) return sharedRecord(call.type, 'update');
      // FHIR R4 §http update: an id missing from the body, or not the URL's, is a 400.
      if (!isResource(call.resource) || call.resource.resourceType !== call.type || call.resource.id !== call.id) return deny(400, `the body must be the ${call.type} with id ${call.id}`);
      if (!reachesResource(grant, model, call.resource, 'u')) return deny(403, `the ${call.type} would be outside what this token reaches (another patient's record, or outside its granular scopes)`);
      return allow('u', { checkCurrent: 'u' });
    }
    case 'patch':
      if (!reaches(grant, call.type, 'u').length) return insufficient(grant, call.type, 'u', 'patch');
      return writesShared(grant, model, call.type, 'u') ? allow('u', { checkCurrent: 'u' }) : sharedRecord(call.type, 'patch');
    case 'delete':
      if (!reaches(grant, call.type, 'd').length) return insufficient(grant, call.type, 'd', 'delete');
      return writesShared(grant, model, call.type, 'd') ? allow('d', { checkCurrent: 'd' }) : sharedRecord(call.type, 'delete');
    case 'conditional-update':
    case 'conditional-delete': {
      const letter = call.kind === 'conditional-update' ? 'u' : 'd';
      const list = reaches(grant, call.type, letter);
      if (!list.length) return insufficient(grant, call.type, letter, call.kind);
      if (reachedPatients(model, call.type, list) !== 'all' || list.every((r) => r.scope.query.length)) {
        return deny(403, `a ${call.kind} selects resources by search across every record; it needs a scope that reaches them all, without granular parameters`);
      }
      if (call.kind === 'conditional-update' && !(isResource(call.resource) && call.resource.resourceType === call.type)) return deny(400, `the body must be a ${call.type} resource`);
      return allow(letter);
    }
    case 'operation':
      return operationAccess(grant, model, call, options);
    case 'batch':
    case 'transaction':
      // Each entry is authorized on its own (authorizeEntries).
      return allow('r');
  }
}

/** A type in the Patient compartment, or a scope permitting the write that reaches every patient (see reachesResource). */
function writesShared(grant: AccessGrant, model: FhirModel, type: string, letter: Letter): boolean {
  return inPatientCompartment(model, type) || reaches(grant, type, letter).some((r) => r.patients === 'all');
}

function sharedRecord(type: string, what: string): Access {
  return deny(403, `a ${type} is shared by every patient's record: to ${what} one needs a scope that reaches every patient (system/, or user/ for a user who may access every record)`);
}

function instanceAccess(grant: AccessGrant, model: FhirModel, type: string, id: string, letter: Letter, what: string): Access {
  const list = reaches(grant, type, letter);
  if (!list.length) return insufficient(grant, type, letter, what);
  // A Patient is its own compartment: one not reached is not even looked for (404, as if it did not exist).
  const patients = reachedPatients(model, type, list);
  if (type === 'Patient' && patients !== 'all' && !patients.has(id)) return deny(404, `Patient/${id} is not known`);
  return allow(letter);
}

function searchAccess(grant: AccessGrant, model: FhirModel, type: string, params: readonly SearchParam[], options: AccessOptions): Access {
  const list = reaches(grant, type, 's');
  if (!list.length) return insufficient(grant, type, 's', 'search');
  const features = featureProblem(grant, model, type, params, options);
  if (features) return features;
  const add: SearchParam[] = [];

  // Binary is outside the compartment, but its content is usually someone's record (a scanned letter, a report's
  // PDF): a listing of every Binary cannot be confined to a patient (each is read by its id instead).
  if (type === 'Binary' && list.every((r) => r.patients !== 'all')) return deny(403, 'a search of Binary cannot be confined to the patients this token reaches; read each Binary by its id');
  const patients = reachedPatients(model, type, list);
  // The patients whose records the search can return: those it names, else all those reached.
  let searched = patients;
  if (patients !== 'all') {
    if (!patients.size) return deny(403, 'this token reaches no patient record');
    const confined = patientParams(model, type, params);
    if (confined.foreign) return deny(403, `the search names ${confined.foreign}, outside the records this token reaches`);
    const named = confined.patients.filter((p) => !patients.has(p));
    if (named.length) return deny(403, `the search names Patient/${named[0]!}, outside the records this token reaches`);
    if (confined.patients.length) searched = new Set(confined.patients);
    else {
      const narrowing = narrowingParam(model, type);
      if (!narrowing) return deny(403, `a search of ${type} cannot be confined to a patient here`);
      add.push([narrowing.name, [...patients].map((p) => (narrowing.reference ? `Patient/${p}` : p)).join(',')]);
    }
  }

  // Granular scopes (SMART 2.2): said in the search when one parameter says them all; checked on the answer anyway.
  let countable = true;
  if (list.every((r) => r.scope.query.length) && !narrowedByScopes(list, params)) {
    const names = new Set(list.flatMap((r) => r.scope.query.map((q) => q.name)));
    if (names.size === 1 && list.every((r) => r.scope.query.length === 1)) {
      const [name] = names;
      add.push([name!, [...new Set(list.map((r) => escapeValue(r.scope.query[0]!.value)))].join(',')]);
    } else {
      countable = false;
    }
  }
  if (!countable && params.some(([n, v]) => n === '_summary' && v === 'count')) {
    return deny(403, `_summary=count would count ${type} resources outside this token's granular scopes; search without it`);
  }
  // Resources a member withheld (PDex sensitive data) are taken out of the answer, not out of the upstream's
  // count: a total (`_summary=count`, `_count=0`, a `code=` search counted) would tell that they exist.
  if (searched !== 'all' && grant.withheld?.labels.length && grant.withheld.patients.some((p) => searched.has(p))) {
    if (params.some(([n, v]) => n === '_summary' && v === 'count')) return deny(403, `_summary=count would count ${type} resources withheld from this client; search without it`);
    countable = false;
  }
  return allow('s', { addParams: add, countable });
}

function systemSearchAccess(grant: AccessGrant, model: FhirModel, params: readonly SearchParam[], options: AccessOptions): Access {
  // A page of a search the upstream keeps (HAPI's `_getpages`): whatever it holds, the answer is checked.
  // Only a page as the upstream links it: any other parameter next to `_getpages` is a search of its own
  // (a server that does not know `_getpages` runs it), held to the rules below.
  if (params.some(([n]) => n === '_getpages') && params.every(([n]) => PAGE_PARAMS.has(n))) return allow('s', { countable: false });
  const types = params.filter(([n]) => n === '_type').flatMap(([, v]) => v.split(','));
  if (!types.length) return deny(403, 'a search of the whole server must name its types with _type');
  for (const type of types) {
    const list = reaches(grant, type, 's');
    if (!list.length) return insufficient(grant, type, 's', 'search');
    if (reachedPatients(model, type, list) !== 'all' || list.every((r) => r.scope.query.length)) return deny(403, `search ${type} on its own: a search across types cannot be confined to the records this token reaches`);
    const features = featureProblem(grant, model, type, params, options);
    if (features) return features;
  }
  return allow('s');
}

/** The parameters of HAPI's paging links (`?_getpages=…&_getpagesoffset=20&_count=20&_bundletype=searchset`). */
const PAGE_PARAMS: ReadonlySet<string> = new Set(['_getpages', '_getpagesoffset', '_count', '_pretty', '_bundletype', '_format']);

function operationAccess(grant: AccessGrant, model: FhirModel, call: Extract<FhirCall, { kind: 'operation' }>, options: AccessOptions): Access {
  if (call.name === '$everything' && call.type === 'Patient') {
    if (call.id === undefined) return everyType(grant, 'r') ? allow('r') : deny(403, 'Patient/$everything for every patient needs a scope that reaches every record');
    const access = instanceAccess(grant, model, 'Patient', call.id, 'r', '$everything');
    return access.allow ? allow('r') : access;
  }
  if (!options.allowedOperations.has(call.name)) return deny(403, `the operation ${call.name} is not let through this gateway (an operator may allow it)`);
  if (call.type === undefined) return everyType(grant, 'r') ? allow('r') : deny(403, `${call.name} on the whole server needs a scope that reaches every record`);
  if (call.id !== undefined) {
    const access = instanceAccess(grant, model, call.type, call.id, 'r', call.name);
    return access.allow ? allow('r', { checkCurrent: 'r' }) : access;
  }
  const list = reaches(grant, call.type, 'r');
  if (!list.length) return insufficient(grant, call.type, 'r', call.name);
  return reachedPatients(model, call.type, list) === 'all' ? allow('r') : deny(403, `${call.name} on every ${call.type} cannot be confined to the records this token reaches`);
}

/** A scope for every type, reaching every record, without granular parameters. */
function everyType(grant: AccessGrant, letter: Letter): boolean {
  return reaches(grant, '*', letter).some((r) => r.scope.resourceType === '*' && r.patients === 'all' && !r.scope.query.length);
}

/** Search features the rules cannot see through: refused unless the operator allows them; `_has` and chains need the types they touch. */
function featureProblem(grant: AccessGrant, model: FhirModel, type: string, params: readonly SearchParam[], options: AccessOptions): Access | undefined {
  // A search that is not confined to the patients reached (a Practitioner, a Medication, a Location…) must not
  // select by what the records of other patients hold: `Medication?_has:MedicationRequest:medication:patient=bob`
  // would list Bob's medications to a token that reaches Amy only.
  const unconfined = reachedPatients(model, type, reaches(grant, type, 's')) === 'all';
  const intoOthers = (other: string): boolean => unconfined && inPatientCompartment(model, other) && reachedPatients(model, other, reaches(grant, other, 's')) !== 'all';
  for (const [name] of params) {
    if ((name === '_filter' || name === '_query' || name === '_contained') && !options.allowedOperations.has(name)) return deny(403, `${name} is not let through this gateway (an operator may allow it)`);
    // `_has` and chains select by what other resources hold: the token must be able to search those freely
    // (without granular parameters), or the answer would tell what it may not see.
    for (const [, other] of name.matchAll(/_has:([A-Za-z]+):/g)) {
      if (!searchesFreely(grant, other!)) return deny(403, `a search through _has needs a scope to search ${other!} without granular parameters`, neededScope(grant, other!, 's'));
      if (intoOthers(other!)) return deny(403, `a search of ${type} through _has:${other!} would select by the records of patients this token does not reach`);
    }
    const chain = /^([^.:_][^.:]*)(?::([A-Za-z]+))?\./.exec(name);
    if (chain) {
      const targets = chain[2] ? [chain[2]] : (searchParameter(model, type, chain[1]!)?.target ?? []);
      if (!targets.length) return deny(403, `the chained parameter ${name} is not one this gateway knows`);
      for (const target of targets) {
        if (!searchesFreely(grant, target)) return deny(403, `the chained search ${name} needs a scope to search ${target} without granular parameters (or name one type: ${chain[1]!}:Patient.…)`, neededScope(grant, target, 's'));
        if (intoOthers(target)) return deny(403, `the chained search ${name} of ${type} would select by the records of patients this token does not reach`);
      }
    }
  }
  return undefined;
}

function searchesFreely(grant: AccessGrant, type: string): boolean {
  return reaches(grant, type, 's').some((r) => !r.scope.query.length);
}

/** The patients a search names through its compartment parameters, or a value that names something else. */
function patientParams(model: FhirModel, type: string, params: readonly SearchParam[]): { patients: string[]; foreign: string | undefined } {
  // The compartment's parameters, and `patient` where the type has one (Observation's is not a compartment
  // parameter: `subject` is, but `patient` is what apps send).
  const names = new Set(type === 'Patient' ? ['_id'] : [...(model.compartment.get(type) ?? []), ...(searchParameter(model, type, 'patient') ? ['patient'] : [])]);
  const patients: string[] = [];
  for (const [rawName, value] of params) {
    const name = rawName.replace(/:Patient$/, '');
    if (!names.has(name)) continue;
    // A bare id names a patient where the parameter can only point to one (`patient`, `subject:Patient`).
    const bareIsPatient = name === 'patient' || rawName.endsWith(':Patient');
    for (const v of value.split(',')) {
      const id = type === 'Patient' ? v : /^(?:.*\/)?Patient\/([A-Za-z0-9\-.]{1,64})$/.exec(v)?.[1] ?? (/^[A-Za-z0-9\-.]{1,64}$/.test(v) && bareIsPatient ? v : undefined);
      if (id === undefined) return { patients, foreign: `${rawName}=${v}` };
      patients.push(id);
    }
  }
  return { patients, foreign: undefined };
}

/** The parameter that confines a search of the type to patients: `_id` for Patient, else `patient` or the first reference parameter of the compartment. */
function narrowingParam(model: FhirModel, type: string): { name: string; reference: boolean } | undefined {
  if (type === 'Patient') return { name: '_id', reference: false };
  // The compartment's own parameter, as the CompartmentDefinition names it (`patient` where it does;
  // Observation's is `subject`, sent as `subject=Patient/123`): what every FHIR server indexes.
  const params = model.compartment.get(type) ?? [];
  if (params.includes('patient')) return { name: 'patient', reference: false };
  // The compartment parameter on the element the type's `patient` parameter reads (Coverage: beneficiary,
  // not policy-holder): the one that names the patient whose record it is.
  const element = /^\(?[A-Za-z]+\.([A-Za-z]+)/.exec(searchParameter(model, type, 'patient')?.expression ?? '')?.[1];
  const own = element === undefined ? undefined : params.find((p) => searchParameter(model, type, p)?.type === 'reference' && new RegExp(`^\\(?${type}\\.${element}\\b`).test(searchParameter(model, type, p)!.expression));
  if (own) return { name: own, reference: true };
  const first = params.find((p) => searchParameter(model, type, p)?.type === 'reference');
  return first ? { name: first, reference: true } : undefined;
}

/** The search is already confined to the granular scopes (the scope engine's rule, as `permits` applies it). */
function narrowedByScopes(list: readonly Reach[], params: readonly SearchParam[]): boolean {
  return scopesSearchIsConfinedTo(list.map((r) => r.scope), (name) => params.filter(([n]) => n === name).flatMap(([, v]) => splitOr(v))) !== undefined;
}

/** A value as it goes into a search: its commas escaped (FHIR R4 §3.1.1.2). */
function escapeValue(value: string): string {
  return value.replace(/,/g, '\\,');
}

/** What filtering an answer found: how many resources it returns, whose records, and whether it removed any. */
export interface Filtered {
  readonly body: unknown;
  readonly resources: number;
  readonly patients: ReadonlySet<string>;
  /** A resource of the answer itself (not only an included one) was not reached. */
  readonly removedMatch: boolean;
}

/**
 * The answer as the grant may see it: a resource not reached becomes nothing (the caller answers 404), a
 * Bundle loses every entry not reached (matches, includes, history, `$everything`), and every resource loses
 * the contained resources whose type the grant may not read. A resource counts as reached when a scope
 * permitting one of `letters` on its type reaches it; included resources are read through the search (r or s).
 */
export function filterAnswer(grant: AccessGrant, model: FhirModel, body: unknown, letters: readonly Letter[]): Filtered {
  const patients = new Set<string>();
  let resources = 0;
  let removedMatch = false;
  const reached = (resource: FhirResource, with_: readonly Letter[]): boolean => {
    if (resource.resourceType === 'OperationOutcome') return true;
    if (!with_.some((l) => reachesResource(grant, model, resource, l))) return false;
    resources++;
    if (inPatientCompartment(model, resource.resourceType)) for (const p of patientsOf(model, resource)) patients.add(p);
    return true;
  };
  const visit = (value: unknown, with_: readonly Letter[]): unknown => {
    if (!isResource(value)) return value;
    if (value.resourceType === 'Bundle') return visitBundle(value, with_);
    if (value.resourceType === 'Parameters') return visitParameters(value, with_);
    return reached(value, with_) ? withoutForeignContained(grant, value) : undefined;
  };
  const visitBundle = (bundle: FhirResource, with_: readonly Letter[]): FhirResource => {
    const entries = Array.isArray(bundle.entry) ? (bundle.entry as Record<string, unknown>[]) : [];
    const kept: Record<string, unknown>[] = [];
    let removed = false;
    for (const entry of entries) {
      if (entry.resource === undefined) {
        kept.push(entry);
        continue;
      }
      const include = (entry.search as { mode?: unknown } | undefined)?.mode === 'include';
      const resource = visit(entry.resource, include ? READ_THROUGH_SEARCH : with_);
      if (resource === undefined) {
        if (!include) removed = true;
        continue;
      }
      kept.push({ ...entry, resource });
    }
    const out: Record<string, unknown> = { ...bundle, entry: kept };
    if (!kept.length) delete out.entry;
    // A total counted before resources were taken out would tell what the token may not see.
    if (removed) {
      delete out.total;
      removedMatch = true;
    }
    return out as FhirResource;
  };
  // An operation's output: the resources among its parameters are checked; the rest is the operation's own.
  const visitParameters = (parameters: FhirResource, with_: readonly Letter[]): FhirResource => {
    const visitParameter = (parameter: unknown): unknown => {
      if (typeof parameter !== 'object' || parameter === null) return parameter;
      const out: Record<string, unknown> = { ...(parameter as Record<string, unknown>) };
      if (out.resource !== undefined) {
        const resource = visit(out.resource, with_);
        if (resource === undefined) return undefined;
        out.resource = resource;
      }
      if (Array.isArray(out.part)) out.part = out.part.map(visitParameter).filter((p) => p !== undefined);
      return out;
    };
    const list = Array.isArray(parameters.parameter) ? parameters.parameter.map(visitParameter).filter((p) => p !== undefined) : undefined;
    return list ? { ...parameters, parameter: list } : parameters;
  };
  const filtered = visit(body, letters);
  return { body: filtered, resources, patients, removedMatch };
}

const READ_THROUGH_SEARCH: readonly Letter[] = ['r', 's'];

/** The resource as a create makes it: without the id sent (the server assigns one). */
function withoutId(resource: FhirResource): FhirResource {
  if (resource.id === undefined) return resource;
  const copy: Record<string, unknown> = { ...resource };
  delete copy.id;
  return copy as FhirResource;
}

function withoutForeignContained(grant: AccessGrant, resource: FhirResource): FhirResource {
  if (!Array.isArray(resource.contained)) return resource;
  const contained = (resource.contained as unknown[]).filter((c) => isResource(c) && (reaches(grant, c.resourceType, 'r').length > 0 || reaches(grant, c.resourceType, 's').length > 0));
  if (contained.length === resource.contained.length) return resource;
  return { ...resource, contained };
}
