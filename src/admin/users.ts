import type { FastifyInstance } from 'fastify';

import { HttpProblem } from '../errors.js';
import { getUser, listUsers, type UserRecord } from '../users/users.js';
import type { AdminDeps } from './deps.js';
import { addUser, changeUser, NEW_PASSWORD_SCHEMA, NEW_USER_SCHEMA, setUserPassword, USER_CHANGE_SCHEMA, type NewUser, type UserChange } from './operations/users.js';
import { adminEvent, errorResponses, idParams, nextCursor, pageQuery, tagged } from './schemas.js';

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
  app.post<{ Body: NewUser }>('/users', { schema: { ...tagged, summary: 'Create a user', body: NEW_USER_SCHEMA, response: { 201: userResponse, ...errorResponses } } }, async (request, reply) => {
    return reply.code(201).send(view(await addUser(deps, adminEvent(request), request.body)));
  });

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
      const items = await listUsers(deps.db, request.query);
      return { items: items.map(view), next: nextCursor(items, request.query.limit, (u) => u.id) };
    },
  );

  app.get<{ Params: { id: string } }>('/users/:id', { schema: { ...tagged, summary: 'Read a user', params: idParams('id'), response: { 200: userResponse, ...errorResponses } } }, async (request) => {
    const user = await getUser(deps.db, request.params.id);
    if (!user) throw HttpProblem.notFound(`no user ${request.params.id}`);
    return view(user);
  });

  app.patch<{ Params: { id: string }; Body: UserChange }>(
    '/users/:id',
    { schema: { ...tagged, summary: 'Change a user; disabled: true also revokes every grant the user holds', params: idParams('id'), body: USER_CHANGE_SCHEMA, response: { 200: userResponse, ...errorResponses } } },
    async (request) => view(await changeUser(deps, adminEvent(request), request.params.id, request.body)),
  );

  app.post<{ Params: { id: string }; Body: { password: string } }>(
    '/users/:id/password',
    { schema: { ...tagged, summary: 'Set a new password (lifts the sign-in slowdown on the user name)', params: idParams('id'), body: NEW_PASSWORD_SCHEMA, response: { 204: { type: 'null' }, ...errorResponses } } },
    async (request, reply) => {
      await setUserPassword(deps, adminEvent(request), request.params.id, request.body.password);
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
