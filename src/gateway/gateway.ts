import { applyPatch } from '@medplum/core';
import type { Logger } from 'pino';

import type { AuditLog } from '../audit/audit.js';
import type { Config, FhirUpstream } from '../config/config.js';
import { authorize, filterAnswer, reachesResource, type Access, type AccessGrant, type Letter } from '../smart/fhir/access.js';
import { smartSecurity, withSmartSecurity } from '../smart/fhir/capability-statement.js';
import type { FhirModel } from '../smart/fhir/model.js';
import { parseRestRequest, type BundleEntryCall, type FhirCall, type SearchParam } from '../smart/fhir/request.js';
import { isResource, type FhirResource } from '../smart/fhir/resources.js';
import type { Admitted, Door } from './door.js';
import { FHIR_JSON, GatewayProblem, insufficientScope, operationOutcome } from './outcome.js';
import { BaseRewriter } from './rewrite.js';
import { UpstreamClient, UpstreamFailure, type UpstreamAnswer } from './upstream.js';

/**
 * The gateway in front of one upstream FHIR server. For each request: parse it as a FHIR interaction,
 * authenticate the token at the door, ask the access rules (src/smart/fhir/access.ts) what it may do,
 * confine it, send it upstream, check the answer resource by resource, rewrite the upstream's URLs, and
 * record one access event. Batches and transactions are checked entry by entry.
 */

export interface GatewayRequest {
  readonly method: string;
  /** The path below the FHIR base, as sent (percent-encoded), starting with `/` or empty. */
  readonly path: string;
  /** The query string as sent, without `?`. */
  readonly query: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** The parsed body: JSON, or a form's fields (a POST `_search`), or nothing. */
  readonly body: unknown;
  /** The body's media type, without parameters. */
  readonly contentType: string | undefined;
  readonly requestId: string;
  readonly ip: string;
}

export interface GatewayResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string | undefined;
}

export interface GatewayDeps {
  readonly config: Config;
  readonly door: Door;
  readonly model: FhirModel;
  readonly audit: AuditLog;
  readonly log: Logger;
}

/** Request headers passed on upstream as they are (FHIR R4 §http: conditional requests and Prefer). */
const FORWARDED_HEADERS = ['prefer', 'if-match', 'if-none-match', 'if-modified-since', 'if-none-exist', 'accept-language'];
/** Answer headers passed back (URLs among them rewritten). */
const ANSWER_HEADERS = ['etag', 'last-modified', 'location', 'content-location', 'retry-after'];
/** The upstream's CapabilityStatement is read again after this long. */
const METADATA_TTL_MS = 60_000;
/** Media types the gateway reads and writes. */
const JSON_TYPES = new Set(['application/fhir+json', 'application/json', 'application/json+fhir', 'application/json-patch+json']);

type Reply = GatewayResponse;

export class FhirGateway {
  readonly base: string;
  readonly #deps: GatewayDeps;
  readonly #upstream: UpstreamClient;
  readonly #out: BaseRewriter;
  readonly #in: BaseRewriter;
  readonly #allow: ReadonlySet<string>;
  #metadata: { at: number; body: string } | undefined;

  constructor(upstream: FhirUpstream, deps: GatewayDeps) {
    this.base = upstream.base;
    this.#deps = deps;
    this.#upstream = new UpstreamClient(upstream);
    this.#out = new BaseRewriter(upstream.url, upstream.base);
    this.#in = new BaseRewriter(upstream.base, upstream.url);
    this.#allow = new Set(upstream.allow);
  }

  async close(): Promise<void> {
    await this.#upstream.close();
  }

  async handle(request: GatewayRequest): Promise<Reply> {
    let admitted: Admitted | undefined;
    let call: FhirCall | undefined;
    try {
      const segments = decodeSegments(request.path);
      const params = searchParams(request);
      call = parseRestRequest({ method: request.method, segments, params, body: request.body, ifNoneExist: header(request, 'if-none-exist') });
      if (call.kind === 'invalid') {
        throw new GatewayProblem(call.status, call.reason, undefined, call.status === 405 ? { allow: allowedMethods(segments) } : {});
      }
      checkFormat(request, params);
      if (call.kind === 'capabilities') return await this.#capabilities();

      admitted = await this.#deps.door.admit(header(request, 'authorization'), this.base);
      const outcome = call.kind === 'batch' || call.kind === 'transaction' ? await this.#bundle(call, request, admitted) : await this.#single(call, request, params, admitted);
      this.#record(request, admitted, call, outcome.status, outcome.summary);
      return outcome.reply;
    } catch (error) {
      const problem = this.#problemOf(error, request);
      if (admitted && call) this.#record(request, admitted, call, problem.status, { resources: 0, patients: new Set(), reason: problem.message });
      return problemReply(problem);
    }
  }

  /** One interaction (not a Bundle of them). */
  async #single(call: FhirCall, request: GatewayRequest, params: readonly SearchParam[], admitted: Admitted): Promise<Outcome> {
    const access = this.#authorize(admitted.grant, call);
    if (!access.allow) throw refusal(this.base, access);
    if (!access.countable && params.some(([n, v]) => n === '_summary' && v === 'count')) throw new GatewayProblem(403, '_summary=count is not available under these scopes');

    const headers = forwardedHeaders(request);
    let body = request.body;
    if (call.kind === 'create') body = withoutId(body);
    if (access.checkCurrent) {
      const checked = await this.#checkCurrent(call, admitted.grant, access.checkCurrent, body);
      if (checked.ifMatch) headers['if-match'] = pinnedVersion(headers['if-match'], checked.ifMatch);
    }

    const sentParams = [...params, ...access.addParams];
    const isSearch = call.kind === 'search-type' || call.kind === 'search-system';
    const path = upstreamPath(decodeSegments(request.path), isSearch && request.method === 'POST' ? [] : sentParams);
    const formBody = isSearch && request.method === 'POST' ? new URLSearchParams(sentParams as [string, string][]).toString() : undefined;
    if (formBody !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    else if (body !== undefined && request.method !== 'GET' && request.method !== 'DELETE') headers['content-type'] = request.contentType === 'application/json-patch+json' ? 'application/json-patch+json' : 'application/fhir+json';

    const answer = await this.#upstream.send({
      method: request.method,
      path,
      headers,
      body: formBody ?? (body === undefined || request.method === 'GET' || request.method === 'DELETE' ? undefined : JSON.stringify(this.#in.json(body))),
    });
    if (answer.status === 304 && (call.kind === 'read' || call.kind === 'vread') && authorizeNarrows(admitted.grant, this.#deps.model, call.type, this.#allow)) {
      // A conditional read (If-None-Match, If-Modified-Since) answered 304 carries no resource to check, yet
      // tells that it exists, its version and date: the token's to know only if it reaches the resource.
      const full = await this.#upstream.send({ method: 'GET', path, headers: { accept: 'application/fhir+json', 'x-request-id': request.requestId } });
      const current = full.status === 200 ? parseJson(full.body) : undefined;
      if (!isResource(current) || filterAnswer(admitted.grant, this.#deps.model, current, access.resultLetters).body === undefined) throw notKnown(call);
    }
    return this.#answer(call, access, admitted.grant, answer);
  }

  /** The upstream's answer, checked: what the token may not see is gone, the upstream's URLs are ours. */
  #answer(call: FhirCall, access: Extract<Access, { allow: true }>, grant: AccessGrant, answer: UpstreamAnswer): Outcome {
    const headers = this.#answerHeaders(answer);
    if (answer.status >= 500) {
      const upstream = parseJson(answer.body);
      const said = isResource(upstream) && upstream.resourceType === 'OperationOutcome' ? `: ${diagnosticsOf(upstream)}` : '';
      const status = answer.status === 503 || answer.status === 504 ? answer.status : 502;
      throw new GatewayProblem(status, `the FHIR server failed (${answer.status})${said}`, undefined, headers['retry-after'] ? { 'retry-after': headers['retry-after'] } : {});
    }
    if (!answer.body.length) return { reply: { status: answer.status, headers, body: undefined }, status: answer.status, summary: empty() };
    const parsed = parseJson(answer.body);
    if (!isResource(parsed)) throw new GatewayProblem(502, `the FHIR server answered ${answer.status} with something that is not a FHIR resource in JSON`);
    const resource = answer.body.includes(this.#upstream.url) ? (this.#out.json(parsed) as FhirResource) : parsed;

    if (answer.status >= 400) {
      // A deleted resource (410) outside what the token reaches is as unknown as one that never existed.
      if (answer.status === 410 && 'type' in call && call.type !== undefined && authorizeNarrows(grant, this.#deps.model, call.type, this.#allow)) throw notKnown(call);
      return { reply: json(answer.status, headers, resource), status: answer.status, summary: empty() };
    }

    const filtered = filterAnswer(grant, this.#deps.model, resource, access.resultLetters);
    if (filtered.body === undefined) throw notKnown(call);
    if (call.kind === 'history-instance' && filtered.removedMatch) throw notKnown(call);
    const body = counted(filtered.body as FhirResource, access);
    return { reply: json(answer.status, headers, body), status: answer.status, summary: { resources: filtered.resources, patients: filtered.patients } };
  }

  /**
   * Before an update, patch, delete or instance operation: the resource as it stands must be one the token
   * reaches (else 404, as if it did not exist), and so must what a patch makes of it. The version read is
   * returned, to be sent as If-Match: the resource cannot change between the check and the write.
   */
  async #checkCurrent(call: FhirCall, grant: AccessGrant, letter: Letter, body: unknown): Promise<{ ifMatch: string | undefined }> {
    if (!('type' in call) || !('id' in call) || call.type === undefined || call.id === undefined) return { ifMatch: undefined };
    const answer = await this.#upstream.send({ method: 'GET', path: `/${encodeURIComponent(call.type)}/${encodeURIComponent(call.id)}`, headers: { accept: 'application/fhir+json' } });
    if (answer.status === 404 || answer.status === 410) {
      // An update of a resource that does not exist creates it: the body must be one the token may create.
      if (call.kind === 'update' && isResource(body) && reachesResource(grant, this.#deps.model, body, 'c')) return { ifMatch: undefined };
      throw notKnown(call);
    }
    if (answer.status >= 400) throw new GatewayProblem(answer.status >= 500 ? 502 : answer.status, `the FHIR server refused to read ${call.type}/${call.id} (${answer.status})`);
    const current = parseJson(answer.body);
    if (!isResource(current) || !reachesResource(grant, this.#deps.model, current, letter)) throw notKnown(call);
    if (call.kind === 'patch') {
      if (!Array.isArray(body)) throw new GatewayProblem(415, 'a PATCH through this gateway must be a JSON Patch (Content-Type: application/json-patch+json)');
      const patched = structuredClone(current) as Record<string, unknown>;
      let problems: { message: string }[];
      try {
        problems = applyPatch(patched, body as never).filter((p) => p !== null);
      } catch (error) {
        // @medplum/core throws on some paths (`/__proto__/…`) rather than reporting them.
        problems = [{ message: error instanceof Error ? error.message : String(error) }];
      }
      if (problems.length) throw new GatewayProblem(422, `the JSON Patch does not apply: ${problems.map((p) => p.message).join('; ')}`);
      if (!isResource(patched) || patched.resourceType !== current.resourceType || !reachesResource(grant, this.#deps.model, patched, 'u')) {
        throw new GatewayProblem(403, `the patched ${call.type} would be outside what this token reaches (another patient's record, or outside its granular scopes)`);
      }
    }
    const versionId = (current.meta as { versionId?: unknown } | undefined)?.versionId;
    // A delete is pinned as a write is: on a FHIR server that honours If-Match there (Medplum, FHIR R5's
    // versioned delete) the record deleted is the one checked, not what another writer made of it since.
    return { ifMatch: typeof versionId === 'string' && (call.kind === 'update' || call.kind === 'patch' || call.kind === 'delete') ? `W/"${versionId}"` : undefined };
  }

  /**
   * A batch: each entry is authorized on its own; refused entries are answered in place (403/404), the rest
   * go upstream in one batch, and what comes back is checked entry by entry. A transaction is all or
   * nothing: one refused entry refuses it whole, before anything is sent.
   */
  async #bundle(call: Extract<FhirCall, { kind: 'batch' | 'transaction' }>, request: GatewayRequest, admitted: Admitted): Promise<Outcome> {
    const bundle = request.body as { entry?: Record<string, unknown>[] };
    const entries = bundle.entry ?? [];
    const decided: ({ index: number; access: Extract<Access, { allow: true }>; entry: Record<string, unknown> } | { index: number; problem: GatewayProblem })[] = [];
    for (const [index, entryCall] of call.entries.entries()) {
      const entry = entries[index]!;
      try {
        decided.push({ index, access: await this.#entryAccess(entryCall, admitted, entry), entry });
      } catch (error) {
        const problem = this.#problemOf(error, request);
        if (call.kind === 'transaction') throw new GatewayProblem(problem.status, `Bundle.entry[${index}] (${entryCall.method} ${entryCall.url}): ${problem.message}`, problem.challenge);
        decided.push({ index, problem });
      }
    }

    const sent = decided.filter((d): d is Extract<(typeof decided)[number], { access: unknown }> => 'access' in d);
    const responses = new Map<number, Record<string, unknown>>();
    let resources = 0;
    const patients = new Set<string>();
    if (sent.length) {
      const upstreamBundle = { resourceType: 'Bundle', type: call.kind, entry: sent.map((d) => this.#in.json(d.entry)) };
      const answer = await this.#upstream.send({ method: 'POST', path: '', headers: { ...forwardedHeaders(request), 'content-type': 'application/fhir+json' }, body: JSON.stringify(upstreamBundle) });
      if (answer.status >= 300) return this.#answer(call, { allow: true, addParams: [], checkCurrent: undefined, resultLetters: ['r'], countable: true }, admitted.grant, answer);
      const parsed = parseJson(answer.body);
      const answered = isResource(parsed) && Array.isArray(parsed.entry) ? (this.#out.json(parsed.entry) as Record<string, unknown>[]) : undefined;
      if (!answered || answered.length !== sent.length) throw new GatewayProblem(502, `the FHIR server's ${call.kind}-response does not answer each entry`);
      for (const [i, d] of sent.entries()) {
        const response = answered[i]!;
        if (response.resource === undefined) {
          responses.set(d.index, response);
          continue;
        }
        const filtered = filterAnswer(admitted.grant, this.#deps.model, response.resource, d.access.resultLetters);
        resources += filtered.resources;
        for (const p of filtered.patients) patients.add(p);
        if (filtered.body === undefined) responses.set(d.index, entryProblem(new GatewayProblem(404, 'not known')));
        // A search entry is held to its counts as a search on its own is (see #answer): a batch is no way round them.
        else responses.set(d.index, { ...response, resource: counted(filtered.body as FhirResource, d.access) });
      }
    }
    for (const d of decided) if ('problem' in d) responses.set(d.index, entryProblem(d.problem));
    const out = { resourceType: 'Bundle', type: `${call.kind}-response`, entry: decided.map((d) => responses.get(d.index)!) };
    return { reply: json(200, {}, out), status: 200, summary: { resources, patients } };
  }

  /** May this entry of a batch or transaction go upstream, and how is it changed to go? */
  async #entryAccess(entryCall: BundleEntryCall, admitted: Admitted, entry: Record<string, unknown>): Promise<Extract<Access, { allow: true }>> {
    const { call } = entryCall;
    if (call.kind === 'invalid') throw new GatewayProblem(call.status, call.reason);
    if (call.kind === 'capabilities') return { allow: true, addParams: [], checkCurrent: undefined, resultLetters: ['r'], countable: true };
    const access = this.#authorize(admitted.grant, call);
    if (!access.allow) throw refusal(this.base, access);
    const request = { ...(entry.request as Record<string, unknown>) };
    if (access.addParams.length) {
      const [path = '', query = ''] = String(request.url).split('?', 2);
      const params = new URLSearchParams(query);
      for (const [n, v] of access.addParams) params.append(n, v);
      request.url = `${path}?${params.toString()}`;
    }
    if ((call.kind === 'read' || call.kind === 'vread') && authorizeNarrows(admitted.grant, this.#deps.model, call.type, this.#allow)) {
      // A 304 in a batch-response has no resource to check (see #single): the entry is read whole instead.
      delete request.ifNoneMatch;
      delete request.ifModifiedSince;
    }
    let resource = entry.resource;
    if (call.kind === 'create') resource = withoutId(resource);
    if (access.checkCurrent) {
      const patch = call.kind === 'patch' ? binaryJsonPatch(resource) : resource;
      const { ifMatch } = await this.#checkCurrent(call, admitted.grant, access.checkCurrent, patch);
      if (ifMatch) request.ifMatch = pinnedVersion(typeof request.ifMatch === 'string' ? request.ifMatch : undefined, ifMatch);
    }
    entry.request = request;
    if (resource !== undefined) entry.resource = resource;
    return access;
  }

  #authorize(grant: AccessGrant, call: FhirCall): Access {
    return authorize(grant, this.#deps.model, call, { allowedOperations: this.#allow });
  }

  /** `GET [base]/metadata`, open to anyone: the upstream's statement with our security section. */
  async #capabilities(): Promise<Reply> {
    if (this.#metadata && Date.now() - this.#metadata.at < METADATA_TTL_MS) return { status: 200, headers: { 'content-type': FHIR_JSON, 'cache-control': 'public, max-age=60' }, body: this.#metadata.body };
    const answer = await this.#upstream.send({ method: 'GET', path: '/metadata', headers: { accept: 'application/fhir+json' } });
    const parsed = parseJson(answer.body);
    if (answer.status !== 200 || !isResource(parsed) || parsed.resourceType !== 'CapabilityStatement') throw new GatewayProblem(502, `the FHIR server did not answer /metadata with a CapabilityStatement (${answer.status})`);
    const statement = withSmartSecurity(this.#out.json(parsed) as Record<string, unknown>, smartSecurity(this.#deps.config));
    const body = JSON.stringify(statement);
    this.#metadata = { at: Date.now(), body };
    return { status: 200, headers: { 'content-type': FHIR_JSON, 'cache-control': 'public, max-age=60' }, body };
  }

  #answerHeaders(answer: UpstreamAnswer): Record<string, string> {
    const out: Record<string, string> = {};
    for (const name of ANSWER_HEADERS) {
      const value = answer.headers[name];
      if (value !== undefined) out[name] = name === 'location' || name === 'content-location' ? this.#out.url(value) : value;
    }
    return out;
  }

  #problemOf(error: unknown, request: GatewayRequest): GatewayProblem {
    if (error instanceof GatewayProblem) return error;
    if (error instanceof UpstreamFailure) {
      this.#deps.log.warn({ upstream: this.#upstream.url, kind: error.kind, reqId: request.requestId }, 'FHIR upstream failed');
      return new GatewayProblem(error.status, error.message);
    }
    throw error;
  }

  /** One access event per interaction, written with the audit log's next batch, off the response path. */
  #record(request: GatewayRequest, admitted: Admitted, call: FhirCall, status: number, summary: Summary): void {
    const { token } = admitted;
    const patients = [...summary.patients];
    const patient = patients.length === 1 ? patients[0] : patients.length === 0 ? token.patient : undefined;
    this.#deps.audit.recordQuietly({
      type: 'fhir.access',
      outcome: status < 400 ? 'success' : 'failure',
      actorType: token.userId ? 'user' : 'client',
      actorId: token.userId ?? token.clientId,
      userId: token.userId,
      clientId: token.clientId,
      patientId: patient,
      grantId: token.grantId,
      sourceIp: request.ip,
      requestId: request.requestId,
      details: {
        base: this.base,
        interaction: call.kind,
        ...('type' in call && call.type !== undefined ? { resourceType: call.type } : {}),
        ...('id' in call && call.id !== undefined ? { id: call.id } : {}),
        ...(call.kind === 'operation' ? { operation: call.name } : {}),
        ...(call.kind === 'batch' || call.kind === 'transaction' ? { entries: call.entries.length, resourceTypes: [...new Set(call.entries.flatMap((e) => ('type' in e.call && e.call.type ? [e.call.type] : [])))] } : {}),
        status,
        resources: summary.resources,
        ...(token.payerRole ? { payerRole: token.payerRole } : {}),
        // UDAP hl7-b2b: the rendering provider (subject_id, an NPI for Provider Access), their organisation and purpose.
        ...(token.b2b ? { b2b: { subjectId: token.b2b.subjectId, organizationId: token.b2b.organizationId, purposeOfUse: token.b2b.purposeOfUse } } : {}),
        ...(patients.length > 1 ? { patients: patients.slice(0, 50) } : {}),
        ...(summary.reason ? { reason: summary.reason } : {}),
      },
    });
  }
}

interface Summary {
  readonly resources: number;
  readonly patients: ReadonlySet<string>;
  readonly reason?: string;
}

interface Outcome {
  readonly reply: Reply;
  readonly status: number;
  readonly summary: Summary;
}

const empty = (): Summary => ({ resources: 0, patients: new Set() });

/** Does a search of the type go through unconfined (the grant reaches every record of it)? */
function authorizeNarrows(grant: AccessGrant, model: FhirModel, type: string, allow: ReadonlySet<string>): boolean {
  const access = authorize(grant, model, { kind: 'search-type', type, params: [] }, { allowedOperations: allow });
  return !access.allow || access.addParams.length > 0 || !access.countable;
}

/**
 * The answer without its `total` where the search upstream was not confined to what the grant reaches (granular
 * scopes it could not say, withheld resources): the upstream counted resources the token may not see.
 */
function counted(body: FhirResource, access: Extract<Access, { allow: true }>): FhirResource {
  if (access.countable || body.resourceType !== 'Bundle' || !('total' in body)) return body;
  const copy: Record<string, unknown> = { ...body };
  delete copy.total;
  return copy as FhirResource;
}

/** A denial as the gateway answers it: only a 403 is about the token, and only a 403 for want of a scope carries the challenge. */
function refusal(base: string, access: Extract<Access, { allow: false }>): GatewayProblem {
  if (access.status !== 403) return new GatewayProblem(access.status, access.reason);
  return access.needed ? insufficientScope(base, access.reason, access.needed) : new GatewayProblem(403, access.reason);
}

function notKnown(call: FhirCall): GatewayProblem {
  const what = 'type' in call && call.type !== undefined ? `${call.type}${'id' in call && call.id !== undefined ? `/${call.id}` : ''}` : 'the resource';
  return new GatewayProblem(404, `${what} is not known`);
}

function problemReply(problem: GatewayProblem): Reply {
  const headers: Record<string, string> = { ...problem.headers, 'cache-control': 'no-store' };
  if (problem.challenge) headers['www-authenticate'] = problem.challenge;
  return json(problem.status, headers, operationOutcome(problem.status, problem.message));
}

function entryProblem(problem: GatewayProblem): Record<string, unknown> {
  return { response: { status: `${problem.status} ${STATUS_TEXT[problem.status] ?? ''}`.trim(), outcome: operationOutcome(problem.status, problem.message) } };
}

const STATUS_TEXT: Readonly<Record<number, string>> = { 400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 409: 'Conflict', 412: 'Precondition Failed', 415: 'Unsupported Media Type', 422: 'Unprocessable Entity', 502: 'Bad Gateway', 504: 'Gateway Timeout' };

function json(status: number, headers: Record<string, string>, body: unknown): Reply {
  return { status, headers: { ...headers, 'content-type': FHIR_JSON }, body: JSON.stringify(body) };
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
}

function diagnosticsOf(outcome: FhirResource): string {
  const issues = Array.isArray(outcome.issue) ? (outcome.issue as { diagnostics?: unknown; details?: { text?: unknown } }[]) : [];
  return issues.map((i) => (typeof i.diagnostics === 'string' ? i.diagnostics : typeof i.details?.text === 'string' ? i.details.text : '')).filter(Boolean).join('; ').slice(0, 500);
}

function header(request: GatewayRequest, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

function forwardedHeaders(request: GatewayRequest): Record<string, string> {
  const out: Record<string, string> = { accept: 'application/fhir+json', 'x-request-id': request.requestId };
  for (const name of FORWARDED_HEADERS) {
    const value = header(request, name);
    if (value !== undefined) out[name] = value;
  }
  return out;
}

/** Path segments, each percent-decoded. @throws {GatewayProblem} 400 for a bad escape. */
function decodeSegments(path: string): string[] {
  try {
    return path.split('/').filter((s) => s !== '').map((s) => decodeURIComponent(s));
  } catch {
    throw new GatewayProblem(400, 'the path has an invalid percent-encoding');
  }
}

/** The search parameters of the query, and of a form body (a POST `_search`), in order. */
function searchParams(request: GatewayRequest): SearchParam[] {
  const params: SearchParam[] = [...new URLSearchParams(request.query)];
  if (request.contentType === 'application/x-www-form-urlencoded' && request.body && typeof request.body === 'object') {
    for (const [name, value] of Object.entries(request.body as Record<string, unknown>)) {
      for (const v of Array.isArray(value) ? value : [value]) if (typeof v === 'string') params.push([name, v]);
    }
  }
  return params;
}

function upstreamPath(segments: readonly string[], params: readonly SearchParam[]): string {
  const path = segments.length ? `/${segments.map((s) => encodeURIComponent(s).replace(/%24/g, '$')).join('/')}` : '';
  return params.length ? `${path}?${new URLSearchParams(params as [string, string][]).toString()}` : path;
}

/**
 * JSON only (FHIR R4 §http: `_format` and Accept). XML is not what the gateway can check, so it is refused
 * rather than passed on unchecked.
 */
function checkFormat(request: GatewayRequest, params: readonly SearchParam[]): void {
  for (const [name, value] of params) {
    if (name === '_format' && !['json', 'application/json', 'application/fhir+json', 'application/json+fhir'].includes(value.split(';')[0]!.trim())) {
      throw new GatewayProblem(406, `_format=${value} is not served here: this FHIR server speaks JSON (_format=json)`);
    }
  }
  const accept = header(request, 'accept');
  if (accept !== undefined && accept.trim() !== '' && !acceptsJson(accept)) throw new GatewayProblem(406, `Accept: ${accept} is not served here: ask for application/fhir+json`);
  if (request.body !== undefined && request.contentType !== undefined && !JSON_TYPES.has(request.contentType) && request.contentType !== 'application/x-www-form-urlencoded') {
    throw new GatewayProblem(415, `Content-Type ${request.contentType} is not accepted: send application/fhir+json`);
  }
}

function acceptsJson(accept: string): boolean {
  return accept.split(',').some((part) => {
    const [type = '', ...parameters] = part.trim().toLowerCase().split(';');
    if (parameters.some((p) => /^\s*q\s*=\s*0(\.0*)?\s*$/.test(p))) return false;
    return type === '*/*' || type === 'application/*' || JSON_TYPES.has(type.trim());
  });
}

/** HEAD is answered wherever GET is (src/gateway/routes.ts). */
function allowedMethods(segments: readonly string[]): string {
  if (segments.length === 0) return 'GET, HEAD, POST';
  if (segments.length === 1) return segments[0] === 'metadata' ? 'GET, HEAD' : 'GET, HEAD, POST, PUT, DELETE';
  return segments[1] === '_search' ? 'POST' : segments[1] === '_history' ? 'GET, HEAD' : 'GET, HEAD, PUT, PATCH, DELETE';
}

/** FHIR R4 §create: the server assigns the id; one sent is ignored (and must never overwrite another resource). */
function withoutId(body: unknown): unknown {
  if (!isResource(body) || body.id === undefined) return body;
  const copy: Record<string, unknown> = { ...body };
  delete copy.id;
  return copy;
}

/**
 * The version a write is sent with: the one checked. An If-Match of the app's naming another version is
 * answered 412 here, as the FHIR server would answer it now; sent on instead, it would let the write land on
 * a later version, one the gateway never checked (the resource may by then be another patient's).
 */
function pinnedVersion(sent: string | undefined, checked: string): string {
  if (sent === undefined) return checked;
  const bare = (tag: string) => tag.trim().replace(/^W\//, '');
  if (bare(sent) !== bare(checked)) throw new GatewayProblem(412, `If-Match ${sent} does not name the current version (${checked})`);
  return checked;
}

/** A batch entry's PATCH: a JSON Patch in a Binary (FHIR R4 §http patch in a batch). */
function binaryJsonPatch(resource: unknown): unknown {
  if (!isResource(resource) || resource.resourceType !== 'Binary' || typeof resource.data !== 'string') return undefined;
  try {
    return JSON.parse(Buffer.from(resource.data, 'base64').toString('utf8'));
  } catch {
    return undefined;
  }
}
