import { parseScopes, type Scope } from '../scopes/scope.js';
import { authorize, filterAnswer, reachesResource, type Access, type AccessGrant, type Letter } from './access.js';
import { fhirR4Model, type FhirModel } from './model.js';
import { parseRestRequest, type FhirCall, type SearchParam } from './request.js';
import type { FhirResource } from './resources.js';

/**
 * The gateway's door check, for FHIR servers that enforce SMART tokens themselves
 * (`import { enforce } from 'smart-auth-server/enforce'`): the same rules, the same code.
 *
 * ```ts
 * import { enforce, grantOf } from 'smart-auth-server/enforce';
 *
 * // The token's grant, from introspection (or a verified JWT access token): its scope and patient.
 * const grant = grantOf(introspection, { userPatients: 'all' });
 * const decision = enforce({ method: 'GET', url: 'Observation?code=8867-4' }, grant);
 * if (decision.decision === 'deny') return reply(decision.status, decision.reason);      // 400, 403, 404 …
 * const url = decision.decision === 'narrow' ? decision.url : 'Observation?code=8867-4'; // patient=… added
 * const answer = await search(url);
 * const { body } = decision.check(answer);                                               // what the token may see
 * ```
 *
 * `enforce` never talks to anything: what it cannot know from the request alone it says. An update, patch,
 * delete or instance operation comes back with `checkCurrent`: the server reads the resource as it stands
 * and asks {@link EnforceAllowed.reaches} before writing (a resource the token does not reach is a 404).
 * Every answer goes through `check`: a resource no granted scope reaches is dropped wherever it sits
 * (a match, an `_include`, a history entry, a `$everything` or batch entry, a contained resource).
 */

export interface TokenGrant {
  /** The token's scope string (as in the token response or introspection), or its scopes parsed. */
  readonly scope: string | readonly Scope[];
  /** The patient in context (the token's `patient`), which `patient/` scopes reach. */
  readonly patient?: string | undefined;
  /** Whom `user/` scopes reach: the patients the user may act for, or `all` (a clinician). Without it, `user/` scopes reach no one. */
  readonly userPatients?: readonly string[] | 'all' | undefined;
}

export interface EnforceRequest {
  readonly method: string;
  /** The request below the FHIR base, query included: `Observation?code=x`, `/Patient/123`, or `''` for the base. */
  readonly url: string;
  /** The parsed JSON body (a resource, a JSON Patch, a batch or transaction Bundle). */
  readonly body?: unknown;
  /** The If-None-Exist header of a conditional create. */
  readonly ifNoneExist?: string | undefined;
}

export interface EnforceOptions {
  /** Operations (`$validate`) and search features (`_filter`, `_query`, `_contained`) the server lets through. */
  readonly allow?: readonly string[];
  /** The FHIR definitions the rules use; FHIR R4's by default. */
  readonly model?: FhirModel;
}

export interface EnforceAllowed {
  /** `allow`: send the request as it is; `narrow`: send `url` instead (the search confined with `params`). */
  readonly decision: 'allow' | 'narrow';
  /** The FHIR interaction (read, search-type, update, …; batch and transaction as such). */
  readonly interaction: FhirCall['kind'];
  /** Search parameters to add: the confinement to the patients and granular scopes the token reaches. */
  readonly params: readonly SearchParam[];
  /** The request's URL with `params` added. */
  readonly url: string;
  /** Read the resource as it stands first and require `reaches(current, checkCurrent)`: else answer 404. */
  readonly checkCurrent: Letter | undefined;
  /** Whether counts (`total`, `_summary=count`) may be returned: false when only the answer can be checked. */
  readonly countable: boolean;
  /** For a batch or transaction: each entry's decision, in order (a transaction goes only if all are allowed). */
  readonly entries?: readonly EnforceDecision[];
  /** The answer as the token may see it: `undefined` body means answer 404. */
  check(answer: unknown): { readonly body: unknown; readonly resources: number; readonly patients: ReadonlySet<string> };
  /** Does the token reach this resource for the interaction letter (c, r, u, d, s)? */
  reaches(resource: unknown, letter: Letter): boolean;
}

export interface EnforceDenied {
  readonly decision: 'deny';
  readonly status: 400 | 403 | 404 | 405;
  readonly reason: string;
  /** For a 403 for want of a scope: one that would do, for `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"`. */
  readonly scope?: string | undefined;
}

export type EnforceDecision = EnforceAllowed | EnforceDenied;

/** The grant a token's introspection (RFC 7662, SMART's `patient`) or JWT claims describe. */
export function grantOf(token: { readonly scope?: unknown; readonly patient?: unknown }, options: { readonly userPatients?: readonly string[] | 'all' } = {}): TokenGrant {
  return { scope: typeof token.scope === 'string' ? token.scope : '', patient: typeof token.patient === 'string' ? token.patient : undefined, userPatients: options.userPatients };
}

export function enforce(request: EnforceRequest, grant: TokenGrant, options: EnforceOptions = {}): EnforceDecision {
  const model = options.model ?? fhirR4Model();
  const access: AccessGrant = { scopes: typeof grant.scope === 'string' ? parseScopes(grant.scope).scopes : grant.scope, patient: grant.patient, userPatients: grant.userPatients };
  const allowedOperations = new Set(options.allow ?? []);
  const [pathPart = '', query = ''] = request.url.split('?', 2);
  let segments: string[];
  try {
    segments = pathPart.split('/').filter((s) => s !== '').map((s) => decodeURIComponent(s));
  } catch {
    return { decision: 'deny', status: 400, reason: 'the path has an invalid percent-encoding' };
  }
  const call = parseRestRequest({ method: request.method.toUpperCase(), segments, params: [...new URLSearchParams(query)], body: request.body, ifNoneExist: request.ifNoneExist });
  return decide(call, access, model, allowedOperations, pathPart, query);
}

function decide(call: FhirCall, grant: AccessGrant, model: FhirModel, allowedOperations: ReadonlySet<string>, path: string, query: string): EnforceDecision {
  if (call.kind === 'invalid') return { decision: 'deny', status: call.status, reason: call.reason };
  const access: Access = authorize(grant, model, call, { allowedOperations });
  if (!access.allow) return { decision: 'deny', status: access.status, reason: access.reason, scope: access.needed };
  const params = new URLSearchParams(query);
  for (const [name, value] of access.addParams) params.append(name, value);
  const entries =
    call.kind === 'batch' || call.kind === 'transaction'
      ? call.entries.map((entry) => {
          const [entryPath = '', entryQuery = ''] = entry.url.split('?', 2);
          return decide(entry.call, grant, model, allowedOperations, entryPath, entryQuery);
        })
      : undefined;
  return {
    decision: access.addParams.length ? 'narrow' : 'allow',
    interaction: call.kind,
    params: access.addParams,
    url: params.size ? `${path}?${params.toString()}` : path,
    checkCurrent: access.checkCurrent,
    countable: access.countable,
    ...(entries ? { entries } : {}),
    check(answer) {
      const filtered = filterAnswer(grant, model, answer, access.resultLetters);
      return { body: filtered.body, resources: filtered.resources, patients: filtered.patients };
    },
    reaches(resource, letter) {
      return typeof resource === 'object' && resource !== null && typeof (resource as { resourceType?: unknown }).resourceType === 'string' && reachesResource(grant, model, resource as FhirResource, letter);
    },
  };
}

export type { Letter, SearchParam };
