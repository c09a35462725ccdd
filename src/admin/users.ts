import type { FastifyInstance } from 'fastify';

import { HttpProblem } from '../errors.js';
import { createUser, getUser, listUsers, resetPassword, updateUser, type UserRecord } from '../users/users.js';
import type { AdminDeps } from './deps.js';
import { adminEvent, errorResponses, idParams, nextCursor, pageQuery, tagged } from './schemas.js';

/** `Practitioner/123`, relative to the FHIR base: the resource types SMART allows for fhirUser. */
const fhirUser = { type: 'string', pattern: '^(Practitioner|PractitionerRole|Patient|RelatedPerson|Person)/[A-Za-z0-9\\-.]{1,64}$' } as const;
const password = { type: 'string', minLength: 10, maxLength: 1024, description: 'at least 10 characters' } as const;
const patients = { type: 'array', maxItems: 100, uniqueItems: true, items: { type: 'string', maxLength: 64 }, description: 'patients the user may act for (a caregiver), from the directory' } as const;
const roles = { type: 'array', maxItems: 20, items: { type: 'string', minLength: 1, maxLength: 64 } } as const;

const userResponse = {
  type: 'object',
  required: ['id', 'username', 'fhirUser', 'name', 'roles', 'disabled', 'created_at', 'updated_at'],
  properties: {
    id: { type: 'string' },
    username: { type: 'string' },
    fhirUser: { type: 'string' },
    name: { type: 'string' },
    roles: { type: 'array', items: { type: 'string' } },
    disabled: { type: 'boolean' },
    patients: { type: 'array', items: { type: 'string' } },
    created_at: { type: 'string', format: 'date-time' },
    updated_at: { type: 'string', format: 'date-time' },
    last_login_at: { type: ['string', 'null'], format: 'date-time' },
  },
} as const;

export async function userRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const { db, box, audit } = deps;

  app.post<{ Body: { id?: string; username: string; password?: string; fhirUser: string; name: string; roles?: string[]; patients?: string[] } }>(
    '/users',
    {
      schema: {
        ...tagged,
        summary: 'Create a user',
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['username', 'fhirUser', 'name'],
          properties: { id: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$' }, username: { type: 'string', pattern: '^[A-Za-z0-9._@+-]{1,128}$' }, password, fhirUser, name: { type: 'string', minLength: 1, maxLength: 200 }, roles, patients },
        },
        response: { 201: userResponse, ...errorResponses },
      },
    },
    async (request, reply) => {
      const user = await createUser(db, request.body);
      await audit.record({ ...adminEvent(request), type: 'user.created', userId: user.id, details: { username: user.username, fhirUser: user.fhirUser, roles: user.roles } });
      return reply.code(201).send(view(user));
    },
  );

  app.get<{ Querystring: { limit: number; after?: string; q?: string } }>(
    '/users',
    {
      schema: {
        ...tagged,
        summary: 'List users',
        querystring: { type: 'object', additionalProperties: false, properties: { ...pageQuery, q: { type: 'string', maxLength: 128 } } },
        response: { 200: { type: 'object', required: ['items', 'next'], properties: { items: { type: 'array', items: userResponse }, next: { type: ['string', 'null'] } } }, ...errorResponses },
      },
    },
    async (request) => {
      const items = await listUsers(db, request.query);
      return { items: items.map(view), next: nextCursor(items, request.query.limit, (u) => u.id) };
    },
  );

  app.get<{ Params: { id: string } }>('/users/:id', { schema: { ...tagged, summary: 'Read a user', params: idParams('id'), response: { 200: userResponse, ...errorResponses } } }, async (request) => {
    const user = await getUser(db, request.params.id);
    if (!user) throw HttpProblem.notFound(`no user ${request.params.id}`);
    return view(user);
  });

  app.patch<{ Params: { id: string }; Body: { fhirUser?: string; name?: string; roles?: string[]; disabled?: boolean; patients?: string[] } }>(
    '/users/:id',
    {
      schema: {
        ...tagged,
        summary: 'Change a user; disabled: true also revokes every grant the user holds',
        params: idParams('id'),
        body: { type: 'object', additionalProperties: false, minProperties: 1, properties: { fhirUser, name: { type: 'string', minLength: 1, maxLength: 200 }, roles, disabled: { type: 'boolean' }, patients } },
        response: { 200: userResponse, ...errorResponses },
      },
    },
    async (request) => {
      const user = await updateUser(db, request.params.id, request.body);
      await audit.record({ ...adminEvent(request), type: 'user.updated', userId: user.id, details: { changed: Object.keys(request.body), disabled: user.disabled } });
      return view(user);
    },
  );

  app.post<{ Params: { id: string }; Body: { password: string } }>(
    '/users/:id/password',
    {
      schema: {
        ...tagged,
        summary: 'Set a new password (lifts the sign-in slowdown on the user name)',
        params: idParams('id'),
        body: { type: 'object', additionalProperties: false, required: ['password'], properties: { password } },
        response: { 204: { type: 'null' }, ...errorResponses },
      },
    },
    async (request, reply) => {
      await resetPassword(db, box, request.params.id, request.body.password);
      await audit.record({ ...adminEvent(request), type: 'user.password_reset', userId: request.params.id });
      return reply.code(204).send();
    },
  );
}

function view(user: UserRecord): Record<string, unknown> {
  return {
    id: user.id,
    username: user.username,
    fhirUser: user.fhirUser,
    name: user.name,
    roles: user.roles,
    disabled: user.disabled,
    patients: user.patients,
    created_at: user.created_at.toISOString(),
    updated_at: user.updated_at.toISOString(),
    last_login_at: user.last_login_at?.toISOString() ?? null,
  };
}
