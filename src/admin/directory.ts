import type { FastifyInstance } from 'fastify';

import { HttpProblem } from '../errors.js';
import { encountersOf, patientExists, patientResource, searchPatients } from '../directory/patients.js';
import type { AdminDeps } from './deps.js';
import { addEncounter, addPatient, importedResources, importPatients, removePatient } from './operations/directory.js';
import { adminEvent, errorResponses, idParams, tagged } from './schemas.js';

const resourceBody = { type: 'object', required: ['resourceType'], properties: { resourceType: { type: 'string' } }, additionalProperties: true } as const;
const patientSummary = {
  type: 'object',
  required: ['id', 'name'],
  properties: { id: { type: 'string' }, name: { type: 'string' }, birthDate: { type: ['string', 'null'] }, gender: { type: ['string', 'null'] }, identifiers: { type: 'array', items: { type: 'string' } } },
} as const;
const resourceResponse = { type: 'object', additionalProperties: true, properties: { resourceType: { type: 'string' }, id: { type: 'string' } } } as const;
const MAX_IMPORT_BYTES = 32 * 1024 * 1024;

/** The patient directory the pickers search, and each patient's encounters; FHIR R4 resources in. */
export async function directoryRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const { db } = deps;
  app.addContentTypeParser(['application/fhir+json'], { parseAs: 'string' }, (_request, body, done) => {
    try {
      done(null, JSON.parse(body as string));
    } catch {
      done(HttpProblem.invalid('the body is not JSON'), undefined);
    }
  });
  app.addContentTypeParser(['application/fhir+ndjson', 'application/x-ndjson', 'application/ndjson'], { parseAs: 'string', bodyLimit: MAX_IMPORT_BYTES }, (_request, body, done) => done(null, { ndjson: body }));

  app.post<{ Body: Record<string, unknown> }>(
    '/patients',
    { schema: { ...tagged, summary: 'Add or replace a patient: a FHIR R4 Patient whose id becomes the patient id', body: resourceBody, response: { 201: resourceResponse, ...errorResponses } } },
    async (request, reply) => reply.code(201).send(await addPatient(deps, adminEvent(request), request.body)),
  );

  app.get<{ Querystring: { q?: string; limit: number } }>(
    '/patients',
    {
      schema: {
        ...tagged,
        summary: 'Search the directory by name, birth date or identifier',
        querystring: { type: 'object', additionalProperties: false, properties: { q: { type: 'string', maxLength: 200 }, limit: { type: 'integer', minimum: 1, maximum: 500, default: 50 } } },
        response: { 200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: patientSummary } } }, ...errorResponses },
      },
    },
    async (request) => ({ items: await searchPatients(db, request.query.q ?? '', request.query.limit) }),
  );

  app.get<{ Params: { id: string } }>('/patients/:id', { schema: { ...tagged, summary: 'Read a patient', params: idParams('id'), response: { 200: resourceResponse, ...errorResponses } } }, async (request) => {
    const resource = await patientResource(db, request.params.id);
    if (!resource) throw HttpProblem.notFound(`no patient ${request.params.id}`);
    return resource;
  });

  app.delete<{ Params: { id: string } }>('/patients/:id', { schema: { ...tagged, summary: 'Remove a patient and their encounters from the directory', params: idParams('id'), response: { 204: { type: 'null' }, ...errorResponses } } }, async (request, reply) => {
    await removePatient(deps, request.params.id);
    return reply.code(204).send();
  });

  app.post<{ Params: { id: string }; Body: Record<string, unknown> }>(
    '/patients/:id/encounters',
    { schema: { ...tagged, summary: "Add or replace one of the patient's encounters: a FHIR R4 Encounter", params: idParams('id'), body: resourceBody, response: { 201: resourceResponse, ...errorResponses } } },
    async (request, reply) => reply.code(201).send(await addEncounter(deps, request.params.id, request.body)),
  );

  app.get<{ Params: { id: string } }>(
    '/patients/:id/encounters',
    {
      schema: {
        ...tagged,
        summary: "The patient's encounters, newest first",
        params: idParams('id'),
        response: { 200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: { type: 'object', properties: { id: { type: 'string' }, status: { type: 'string' }, start: { type: ['string', 'null'] }, description: { type: 'string' } } } } } }, ...errorResponses },
      },
    },
    async (request) => {
      if (!(await patientExists(db, request.params.id))) throw HttpProblem.notFound(`no patient ${request.params.id}`);
      return { items: await encountersOf(db, request.params.id) };
    },
  );

  app.post<{ Body: Record<string, unknown> }>(
    '/patients/$import',
    {
      bodyLimit: MAX_IMPORT_BYTES,
      schema: {
        ...tagged,
        summary: 'Import Patient and Encounter resources from a FHIR Bundle (application/fhir+json) or NDJSON (application/fhir+ndjson); all or nothing',
        body: { type: 'object' },
        response: { 200: { type: 'object', required: ['patients', 'encounters'], properties: { patients: { type: 'integer' }, encounters: { type: 'integer' } } }, ...errorResponses },
      },
    },
    async (request) => {
      const body = request.body;
      const resources = typeof body.ndjson === 'string' ? importedResources(body.ndjson, 'ndjson') : importedResources(JSON.stringify(body), 'bundle');
      return importPatients(deps, adminEvent(request), resources);
    },
  );
}
