import type { FastifyInstance } from 'fastify';
import { errors } from 'oidc-provider';

import { HttpProblem } from '../errors.js';
import { deleteClient, generateClientId, getClient, insertClient, listClients, rotateClientSecret, updateClient, type ClientRecord } from '../clients/registry.js';
import type { ClientStatus } from '../db/tables/clients.js';
import { checkClientMetadata, ClientRuleError, needsSecret, toProviderMetadata } from '../smart/client-rules.js';
import type { AdminDeps } from './deps.js';
import { adminEvent, errorResponses, idParams, nextCursor, pageQuery, tagged } from './schemas.js';

const uri = { type: 'string', minLength: 1, maxLength: 2048 } as const;

/** RFC 7591 client metadata, as far as this server uses it, plus ours (consent, status). */
const metadataProperties = {
  client_name: { type: 'string', minLength: 1, maxLength: 200 },
  redirect_uris: { type: 'array', maxItems: 50, items: uri },
  grant_types: { type: 'array', uniqueItems: true, maxItems: 3, items: { type: 'string', enum: ['authorization_code', 'refresh_token', 'client_credentials'] } },
  token_endpoint_auth_method: { type: 'string', enum: ['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'] },
  token_endpoint_auth_signing_alg: { type: 'string', enum: ['RS384', 'ES384', 'RS256', 'ES256'] },
  jwks: {
    type: 'object',
    required: ['keys'],
    additionalProperties: false,
    properties: { keys: { type: 'array', minItems: 1, maxItems: 20, items: { type: 'object', required: ['kty'], properties: { kty: { type: 'string' }, kid: { type: 'string' } } } } },
  },
  jwks_uri: uri,
  scope: { type: 'string', maxLength: 16384, description: 'every scope the client may be granted, SMART scopes included' },
  launch_uri: uri,
  logo_uri: uri,
  client_uri: uri,
  policy_uri: uri,
  tos_uri: uri,
  contacts: { type: 'array', maxItems: 20, items: { type: 'string', maxLength: 320 } },
  consent: { type: 'string', enum: ['required', 'pre-approved'], description: 'pre-approved clients skip the consent page' },
} as const;

const statusProperty = { type: 'string', enum: ['pending', 'active', 'suspended'] } as const;

const clientResponse = {
  type: 'object',
  required: ['client_id', 'status', 'created_at', 'updated_at'],
  properties: {
    client_id: { type: 'string' },
    client_secret: { type: 'string', description: 'only when created or rotated: store it now, it is not shown again' },
    status: statusProperty,
    has_secret: { type: 'boolean' },
    created_at: { type: 'string', format: 'date-time' },
    updated_at: { type: 'string', format: 'date-time' },
    ...metadataProperties,
    response_types: { type: 'array', items: { type: 'string' } },
  },
} as const;

interface ClientBody {
  client_id?: string;
  status?: ClientStatus;
  [key: string]: unknown;
}

export async function clientRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const { db, box, host, audit, clients } = deps;

  /** The client rules, then oidc-provider's own validation of what it will be served. */
  async function validated(metadata: Record<string, unknown>): Promise<Record<string, unknown>> {
    const grants = (metadata.grant_types as string[] | undefined) ?? ['authorization_code'];
    const full = { token_endpoint_auth_method: 'client_secret_basic', ...metadata, grant_types: grants, response_types: grants.includes('authorization_code') ? ['code'] : [], redirect_uris: metadata.redirect_uris ?? [] };
    try {
      checkClientMetadata(full, { writer: 'operator', vouched: true, allowHttpJwksUri: deps.config.outboundAllowPrivate });
      await host.provider.Client.validate({ client_id: 'validation', ...toProviderMetadata(full), ...(needsSecret(full) ? { client_secret: 'x'.repeat(43) } : {}) });
    } catch (error) {
      if (error instanceof ClientRuleError) throw HttpProblem.invalid(error.message);
      if (error instanceof errors.InvalidClientMetadata || error instanceof errors.InvalidRedirectUri) throw HttpProblem.invalid(String(error.error_description));
      throw error;
    }
    return full;
  }

  app.post<{ Body: ClientBody }>(
    '/clients',
    {
      schema: {
        ...tagged,
        summary: 'Register a client',
        body: { type: 'object', additionalProperties: false, properties: { client_id: { type: 'string', pattern: '^[A-Za-z0-9._~-][A-Za-z0-9._~:-]{0,127}$' }, status: statusProperty, ...metadataProperties } },
        response: { 201: clientResponse, ...errorResponses },
      },
    },
    async (request, reply) => {
      const { client_id: requestedId, status = 'active', ...metadata } = request.body;
      const clientId = requestedId ?? generateClientId();
      if (clientId.startsWith('urn:smart-auth:')) throw HttpProblem.invalid('client_id: the urn:smart-auth: prefix is reserved');
      const full = await validated(metadata);
      const created = await insertClient(db, box, clientId, full, status, { withSecret: needsSecret(full) });
      await audit.record({ ...adminEvent(request), type: 'client.created', clientId, details: { status, token_endpoint_auth_method: full.token_endpoint_auth_method, grant_types: full.grant_types, scope: full.scope } });
      return reply.code(201).send(view(created.record, created.secret));
    },
  );

  app.get<{ Querystring: { limit: number; after?: string; status?: ClientStatus } }>(
    '/clients',
    {
      schema: {
        ...tagged,
        summary: 'List clients',
        querystring: { type: 'object', additionalProperties: false, properties: { ...pageQuery, status: statusProperty } },
        response: { 200: { type: 'object', required: ['items', 'next'], properties: { items: { type: 'array', items: clientResponse }, next: { type: ['string', 'null'] } } }, ...errorResponses },
      },
    },
    async (request) => {
      const items = await listClients(db, { after: request.query.after, limit: request.query.limit, status: request.query.status });
      return { items: items.map((c) => view(c)), next: nextCursor(items, request.query.limit, (c) => c.client_id) };
    },
  );

  app.get<{ Params: { client_id: string } }>(
    '/clients/:client_id',
    { schema: { ...tagged, summary: 'Read a client', params: idParams('client_id'), response: { 200: clientResponse, ...errorResponses } } },
    async (request) => view(await existing(request.params.client_id)),
  );

  app.patch<{ Params: { client_id: string }; Body: ClientBody }>(
    '/clients/:client_id',
    {
      schema: {
        ...tagged,
        summary: 'Change a client (approve or suspend it with status)',
        params: idParams('client_id'),
        body: { type: 'object', additionalProperties: false, minProperties: 1, properties: { status: statusProperty, ...metadataProperties } },
        response: { 200: clientResponse, ...errorResponses },
      },
    },
    async (request) => {
      const current = await existing(request.params.client_id);
      const { status, ...changes } = request.body;
      const currentMetadata = Object.fromEntries(Object.entries(current.metadata).filter(([key]) => key !== 'client_id'));
      const full = await validated({ ...currentMetadata, ...changes });
      const updated = await updateClient(db, box, current.client_id, full, status, { withSecret: needsSecret(full) });
      clients.invalidate(current.client_id);
      await audit.record({ ...adminEvent(request), type: 'client.updated', clientId: current.client_id, details: { changed: Object.keys(request.body), status: updated.record.status } });
      return view(updated.record, updated.secret);
    },
  );

  app.delete<{ Params: { client_id: string } }>(
    '/clients/:client_id',
    { schema: { ...tagged, summary: 'Delete a client and everything issued to it', params: idParams('client_id'), response: { 204: { type: 'null' }, ...errorResponses } } },
    async (request, reply) => {
      if (!(await deleteClient(db, request.params.client_id))) throw HttpProblem.notFound(`no client ${request.params.client_id}`);
      clients.invalidate(request.params.client_id);
      await audit.record({ ...adminEvent(request), type: 'client.deleted', clientId: request.params.client_id });
      return reply.code(204).send();
    },
  );

  app.post<{ Params: { client_id: string } }>(
    '/clients/:client_id/secret',
    { schema: { ...tagged, summary: 'Replace the client secret (shown once)', params: idParams('client_id'), response: { 200: clientResponse, ...errorResponses } } },
    async (request) => {
      const current = await existing(request.params.client_id);
      if (!needsSecret(current.metadata)) throw HttpProblem.invalid(`client ${current.client_id} authenticates with ${String(current.metadata.token_endpoint_auth_method)}: it has no secret`);
      const secret = await rotateClientSecret(db, box, current.client_id);
      clients.invalidate(current.client_id);
      await audit.record({ ...adminEvent(request), type: 'client.secret_rotated', clientId: request.params.client_id });
      return view(await existing(request.params.client_id), secret);
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
      if (deps.config.registration !== 'token') throw HttpProblem.conflict(`dynamic registration is ${deps.config.registration}: initial access tokens are used only with REGISTRATION=token`);
      const expiresIn = request.body.expires_in ?? 86_400;
      const token = await new host.provider.InitialAccessToken({ expiresIn }).save();
      await audit.record({ ...adminEvent(request), type: 'client.updated', details: { initial_access_token: 'created', expires_in: expiresIn } });
      return reply.code(201).send({ token, expires_in: expiresIn });
    },
  );

  async function existing(clientId: string): Promise<ClientRecord> {
    const client = await getClient(db, clientId);
    if (!client) throw HttpProblem.notFound(`no client ${clientId}`);
    return client;
  }
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
