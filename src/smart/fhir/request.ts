import { isFhirR4ResourceType } from '../scopes/resource-types.js';

/**
 * A FHIR R4 RESTful request (https://hl7.org/fhir/R4/http.html) as the access rules see it: which interaction,
 * on which type and instance, with which search parameters and body. Pure: the HTTP adapter hands in the
 * method, the path below the FHIR base, the query and the parsed body.
 */

/** One search parameter as sent: repeated names stay separate, values as in the URL (decoded). */
export type SearchParam = readonly [name: string, value: string];

export type FhirCall =
  | { readonly kind: 'capabilities' }
  | { readonly kind: 'read'; readonly type: string; readonly id: string }
  | { readonly kind: 'vread'; readonly type: string; readonly id: string; readonly version: string }
  | { readonly kind: 'history-instance'; readonly type: string; readonly id: string; readonly params: readonly SearchParam[] }
  | { readonly kind: 'history-type'; readonly type: string; readonly params: readonly SearchParam[] }
  | { readonly kind: 'history-system'; readonly params: readonly SearchParam[] }
  | { readonly kind: 'search-type'; readonly type: string; readonly params: readonly SearchParam[] }
  | { readonly kind: 'search-system'; readonly params: readonly SearchParam[] }
  | { readonly kind: 'create'; readonly type: string; readonly resource: unknown; readonly ifNoneExist: string | undefined }
  | { readonly kind: 'update'; readonly type: string; readonly id: string; readonly resource: unknown }
  | { readonly kind: 'conditional-update'; readonly type: string; readonly params: readonly SearchParam[]; readonly resource: unknown }
  | { readonly kind: 'patch'; readonly type: string; readonly id: string; readonly patch: unknown }
  | { readonly kind: 'delete'; readonly type: string; readonly id: string }
  | { readonly kind: 'conditional-delete'; readonly type: string; readonly params: readonly SearchParam[] }
  | { readonly kind: 'operation'; readonly name: string; readonly type: string | undefined; readonly id: string | undefined; readonly params: readonly SearchParam[]; readonly body: unknown }
  | { readonly kind: 'batch' | 'transaction'; readonly entries: readonly BundleEntryCall[] }
  | { readonly kind: 'invalid'; readonly status: 400 | 404 | 405; readonly reason: string };

/** One entry of a batch or transaction Bundle: the call it makes, and its request as sent. */
export interface BundleEntryCall {
  readonly call: FhirCall;
  readonly method: string;
  readonly url: string;
}

export interface RestRequest {
  readonly method: string;
  /** The path below the FHIR base, starting with `/` (`/Observation/123`), percent-decoded per segment. */
  readonly segments: readonly string[];
  readonly params: readonly SearchParam[];
  readonly body: unknown;
  /** The If-None-Exist header (conditional create). */
  readonly ifNoneExist?: string | undefined;
}

const ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** What may come with a write of one resource: the answer's format only. */
const WRITE_PARAMS: ReadonlySet<string> = new Set(['_format', '_pretty']);

const invalid = (status: 400 | 404 | 405, reason: string): FhirCall => ({ kind: 'invalid', status, reason });

export function parseRestRequest(request: RestRequest): FhirCall {
  const { method, params, body } = request;
  const segments = request.segments.filter((s) => s !== '');
  const [first, second, third, fourth, ...rest] = segments;
  if (rest.length) return invalid(404, `no FHIR interaction at /${segments.join('/')}`);

  // System level: [base], [base]/metadata, [base]/_history, [base]/_search, [base]/$op.
  if (first === undefined) {
    if (method === 'GET') return { kind: 'search-system', params };
    if (method === 'POST') return bundleCall(body);
    return invalid(405, `${method} is not a FHIR interaction on the base URL`);
  }
  if (first === 'metadata' && second === undefined) return method === 'GET' ? { kind: 'capabilities' } : invalid(405, 'the CapabilityStatement is read with GET');
  if (first === '_history' && second === undefined) return method === 'GET' ? { kind: 'history-system', params } : invalid(405, 'history is read with GET');
  if (first === '_search' && second === undefined) return method === 'POST' ? { kind: 'search-system', params } : invalid(405, '_search is POST');
  if (first.startsWith('$')) return second === undefined ? { kind: 'operation', name: first, type: undefined, id: undefined, params, body } : invalid(404, `no FHIR interaction at /${segments.join('/')}`);

  if (!isFhirR4ResourceType(first)) return invalid(404, `${first} is not a FHIR R4 resource type`);
  const type = first;

  // Type level: [type], [type]/_search, [type]/_history, [type]/$op.
  if (second === undefined) {
    switch (method) {
      case 'GET':
        return { kind: 'search-type', type, params };
      case 'POST':
        return { kind: 'create', type, resource: body, ifNoneExist: request.ifNoneExist };
      case 'PUT':
        return params.length ? { kind: 'conditional-update', type, params, resource: body } : invalid(400, 'a conditional update needs search parameters');
      case 'DELETE':
        return params.length ? { kind: 'conditional-delete', type, params } : invalid(400, 'a conditional delete needs search parameters');
      default:
        return invalid(405, `${method} is not a FHIR interaction on a resource type`);
    }
  }
  if (third === undefined) {
    if (second === '_search') return method === 'POST' ? { kind: 'search-type', type, params } : invalid(405, '_search is POST');
    if (second === '_history') return method === 'GET' ? { kind: 'history-type', type, params } : invalid(405, 'history is read with GET');
    if (second.startsWith('$')) return { kind: 'operation', name: second, type, id: undefined, params, body };
    if (!ID.test(second)) return invalid(404, `${second} is not a FHIR id`);
    const id = second;
    // A write of one resource takes no search parameters (FHIR R4 §http). One sent on is the FHIR server's to
    // act on unseen: HAPI's `DELETE Patient/123?_cascade=delete` deletes every resource that refers to it,
    // other patients' among them.
    const extra = method === 'PUT' || method === 'PATCH' || method === 'DELETE' ? params.find(([n]) => !WRITE_PARAMS.has(n)) : undefined;
    if (extra) return invalid(400, `${method} ${type}/${id} takes no parameter ${extra[0]}: a write of one resource is not qualified by search parameters`);
    switch (method) {
      case 'GET':
        return { kind: 'read', type, id };
      case 'PUT':
        return { kind: 'update', type, id, resource: body };
      case 'PATCH':
        return { kind: 'patch', type, id, patch: body };
      case 'DELETE':
        return { kind: 'delete', type, id };
      default:
        return invalid(405, `${method} is not a FHIR interaction on a resource`);
    }
  }
  if (!ID.test(second)) return invalid(404, `${second} is not a FHIR id`);
  const id = second;
  if (third.startsWith('$') && fourth === undefined) return { kind: 'operation', name: third, type, id, params, body };
  if (third === '_history') {
    if (method !== 'GET') return invalid(405, 'history is read with GET');
    if (fourth === undefined) return { kind: 'history-instance', type, id, params };
    return ID.test(fourth) ? { kind: 'vread', type, id, version: fourth } : invalid(404, `${fourth} is not a version id`);
  }
  return invalid(404, `no FHIR interaction at /${segments.join('/')}`);
}

const CONDITIONAL_MEMBERS = ['ifNoneExist', 'ifMatch', 'ifNoneMatch', 'ifModifiedSince'] as const;

/** A Bundle POSTed to the base: a batch or a transaction, each entry parsed as the request it makes. */
function bundleCall(body: unknown): FhirCall {
  const bundle = body as { resourceType?: unknown; type?: unknown; entry?: unknown } | undefined;
  if (bundle?.resourceType !== 'Bundle' || (bundle.type !== 'batch' && bundle.type !== 'transaction')) {
    return invalid(400, 'a POST to the base URL must be a Bundle of type batch or transaction');
  }
  if (bundle.entry !== undefined && !Array.isArray(bundle.entry)) return invalid(400, 'Bundle.entry must be an array');
  const entries: BundleEntryCall[] = [];
  for (const [i, entry] of ((bundle.entry ?? []) as unknown[]).entries()) {
    const request = (entry as { request?: { method?: unknown; url?: unknown; ifNoneExist?: unknown } } | null)?.request;
    if (typeof request?.method !== 'string' || typeof request.url !== 'string') return invalid(400, `Bundle.entry[${i}].request needs a method and a url`);
    // FHIR R4 Bundle.entry.request: strings. Another value goes upstream as it is, where a server may make one of
    // it (`["patient=…"]` becomes a conditional create across every patient that the rules never saw).
    for (const name of CONDITIONAL_MEMBERS) {
      const value = (request as Record<string, unknown>)[name];
      if (value !== undefined && typeof value !== 'string') return invalid(400, `Bundle.entry[${i}].request.${name} must be a string`);
    }
    let url: URL;
    try {
      url = new URL(request.url, 'http://base/');
    } catch {
      return invalid(400, `Bundle.entry[${i}].request.url is not a URL`);
    }
    const segments = url.pathname.split('/').map((s) => safeDecode(s));
    const call = parseRestRequest({
      method: request.method,
      segments,
      params: [...url.searchParams],
      body: (entry as { resource?: unknown }).resource,
      ifNoneExist: typeof request.ifNoneExist === 'string' ? request.ifNoneExist : undefined,
    });
    if (call.kind === 'batch' || call.kind === 'transaction') return invalid(400, `Bundle.entry[${i}]: a batch or transaction cannot nest another`);
    entries.push({ call, method: request.method, url: request.url });
  }
  return { kind: bundle.type, entries };
}

function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
