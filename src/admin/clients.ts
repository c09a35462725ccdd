import type { FastifyInstance } from 'fastify';

import { listClients, type ClientRecord } from '../clients/registry.js';
import type { ClientStatus } from '../db/tables/clients.js';
import type { AdminDeps } from './deps.js';
import {
  addClient,
  changeClient,
  CLIENT_CHANGE_SCHEMA,
  CLIENT_METADATA_PROPERTIES,
  CLIENT_STATUS_PROPERTY,
  decideRegistration,
  DECISION_REASON_PROPERTY,
  existingClient,
  newClientSecret,
  newInitialAccessToken,
  NEW_CLIENT_SCHEMA,
  removeClient,
  type ClientInput,
} from './operations/clients.js';
import { adminEvent, errorResponses, idParams, nextCursor, pageQuery, tagged } from './schemas.js';

const clientResponse = {
  type: 'object',
  required: ['client_id', 'status', 'created_at', 'updated_at'],
  properties: {
    client_id: { type: 'string' },
    client_secret: { type: 'string', description: 'only when created or rotated: store it now, it is not shown again' },
    status: CLIENT_STATUS_PROPERTY,
    has_secret: { type: 'boolean' },
    created_at: { type: 'string', format: 'date-time' },
    updated_at: { type: 'string', format: 'date-time' },
    ...CLIENT_METADATA_PROPERTIES,
    response_types: { type: 'array', items: { type: 'string' } },
  },
} as const;

export async function clientRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  app.post<{ Body: ClientInput }>(
    '/clients',
    { schema: { ...tagged, summary: 'Register a client', body: NEW_CLIENT_SCHEMA, response: { 201: clientResponse, ...errorResponses } } },
    async (request, reply) => {
      const created = await addClient(deps, adminEvent(request), request.body);
      return reply.code(201).send(view(created.record, created.secret));
    },
  );

  app.get<{ Querystring: { limit: number; after?: string; status?: ClientStatus; q?: string } }>(
    '/clients',
    {
      schema: {
        ...tagged,
        summary: 'List clients',
        querystring: { type: 'object', additionalProperties: false, properties: { ...pageQuery, status: CLIENT_STATUS_PROPERTY, q: { type: 'string', maxLength: 200, description: 'a part of the client_id or of the name, in any case' } } },
        response: { 200: { type: 'object', required: ['items', 'next'], properties: { items: { type: 'array', items: clientResponse }, next: { type: ['string', 'null'] } } }, ...errorResponses },
      },
    },
    async (request) => {
      const items = await listClients(deps.db, request.query);
      return { items: items.map((c) => view(c)), next: nextCursor(items, request.query.limit, (c) => c.client_id) };
    },
  );

  app.get<{ Params: { client_id: string } }>(
    '/clients/:client_id',
    { schema: { ...tagged, summary: 'Read a client', params: idParams('client_id'), response: { 200: clientResponse, ...errorResponses } } },
    async (request) => view(await existingClient(deps, request.params.client_id)),
  );

  app.patch<{ Params: { client_id: string }; Body: ClientInput }>(
    '/clients/:client_id',
    { schema: { ...tagged, summary: 'Change a client (suspend or reactivate it with status; a pending registration is decided at approve or reject)', params: idParams('client_id'), body: CLIENT_CHANGE_SCHEMA, response: { 200: clientResponse, ...errorResponses } } },
    async (request) => {
      const updated = await changeClient(deps, adminEvent(request), request.params.client_id, request.body);
      return view(updated.record, updated.secret);
    },
  );

  for (const decision of ['approve', 'reject'] as const) {
    app.post<{ Params: { client_id: string }; Body: { reason?: string; reviewed_updated_at?: string } | undefined }>(
      `/clients/:client_id/${decision}`,
      {
        // The reason is optional for an approval, so a request may come without a body at all.
        preValidation: async (request) => {
          if (request.body === undefined) request.body = {};
        },
        schema: {
          ...tagged,
          summary: decision === 'approve' ? 'Approve a pending registration (it becomes active), with an optional reason' : 'Reject a pending registration with the reason (it becomes suspended)',
          params: idParams('client_id'),
          body: {
            type: 'object',
            additionalProperties: false,
            ...(decision === 'reject' ? { required: ['reason'] } : {}),
            properties: {
              reason: { ...DECISION_REASON_PROPERTY, description: 'kept in the audit trail' },
              reviewed_updated_at: { type: 'string', format: 'date-time', description: 'the updated_at of the registration reviewed (required to approve): the decision applies to it only, and a registration changed since (by the client, RFC 7592) is a 409' },
            },
          },
          response: { 200: clientResponse, ...errorResponses },
        },
      },
      async (request) => view(await decideRegistration(deps, adminEvent(request), request.params.client_id, decision, request.body?.reason, request.body?.reviewed_updated_at)),
    );
  }

  app.delete<{ Params: { client_id: string } }>(
    '/clients/:client_id',
    { schema: { ...tagged, summary: 'Delete a client and everything issued to it', params: idParams('client_id'), response: { 204: { type: 'null' }, ...errorResponses } } },
    async (request, reply) => {
      await removeClient(deps, adminEvent(request), request.params.client_id);
      return reply.code(204).send();
    },
  );

  app.post<{ Params: { client_id: string } }>(
    '/clients/:client_id/secret',
    { schema: { ...tagged, summary: 'Replace the client secret (shown once)', params: idParams('client_id'), response: { 200: clientResponse, ...errorResponses } } },
    async (request) => {
      const rotated = await newClientSecret(deps, adminEvent(request), request.params.client_id);
      return view(rotated.record, rotated.secret);
    },
  );

  app.post<{ Body: { expires_in?: number } }>(
    '/registration-tokens',
    {
      schema: {
        ...tagged,
        summary: 'Create an initial access token for dynamic client registration (REGISTRATION=token)',
        body: { type: 'object', additionalProperties: false, properties: { expires_in: { type: 'integer', minimum: 60, maximum: 31_536_000, default: 86_400 } } },
        response: { 201: { type: 'object', required: ['token', 'expires_in'], properties: { token: { type: 'string' }, expires_in: { type: 'integer' } } }, ...errorResponses },
      },
    },
    async (request, reply) => {
      const expiresIn = request.body.expires_in ?? 86_400;
      return reply.code(201).send({ token: await newInitialAccessToken(deps, adminEvent(request), expiresIn), expires_in: expiresIn });
    },
  );
}

function view(record: ClientRecord, secret?: string): Record<string, unknown> {
  return {
    ...record.metadata,
    client_id: record.client_id,
    ...(secret ? { client_secret: secret } : {}),
    status: record.status,
    has_secret: record.has_secret,
    created_at: record.created_at.toISOString(),
    updated_at: record.updated_at.toISOString(),
  };
}
