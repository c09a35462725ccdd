import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

import { HttpProblem } from '../../errors.js';
import { ADMIN_ROLE, AUDITOR_ROLE, getUser, listUsers, type UserRecord } from '../../users/users.js';
import { idParams } from '../schemas.js';
import { addUser, changeUser, checkNewPassword, checkNewUser, checkUserChange, setUserPassword, type UserChange } from '../operations/users.js';
import { checked, noticeOf, text, words, type ConsoleContext, type FormValue } from './context.js';
import { operatorEvent } from './session.js';
import { when } from './views.js';

const PAGE = 50;
const CONSOLE_ROLES: readonly string[] = [ADMIN_ROLE, AUDITOR_ROLE];
const formBody = { type: 'object', required: ['csrf'], properties: { csrf: { type: 'string', maxLength: 128 } }, additionalProperties: { anyOf: [{ type: 'string', maxLength: 4096 }, { type: 'array', maxItems: 20, items: { type: 'string', maxLength: 64 } }] } } as const;
type Form = Record<string, FormValue>;

/** The roles a form gives: the console roles ticked, and the others typed. */
function rolesOf(form: Form): string[] {
  return [...new Set([...checked(form.roles).filter((r) => CONSOLE_ROLES.includes(r)), ...words(form.other_roles, 'other_roles')])];
}

function values(source: { id?: string; username?: string; name?: string; fhirUser?: string; roles?: readonly string[]; patients?: readonly string[] }) {
  const roles = source.roles ?? [];
  return {
    id: source.id ?? '',
    username: source.username ?? '',
    name: source.name ?? '',
    fhirUser: source.fhirUser ?? '',
    roles: roles.filter((r) => CONSOLE_ROLES.includes(r)),
    otherRoles: roles.filter((r) => !CONSOLE_ROLES.includes(r)).join(' '),
    patients: (source.patients ?? []).join(' '),
  };
}

function submitted(form: Form) {
  const str = (v: FormValue) => (typeof v === 'string' ? v : '');
  return { id: str(form.id), username: str(form.username), name: str(form.name), fhirUser: str(form.fhirUser), roles: rolesOf(form), patients: words(form.patients, 'patients') };
}

/** Users: list and search, create, change (roles, linked patients), disable, reset the password. */
export async function userPages(app: FastifyInstance, ctx: ConsoleContext): Promise<void> {
  const { deps, base } = ctx;
  const { db } = deps;
  const userPath = (id: string) => `/users/${encodeURIComponent(id)}`;

  function newPage(request: FastifyRequest, reply: FastifyReply, form: ReturnType<typeof values>, error?: string, status = 200) {
    return ctx.render(request, reply, 'user-new', { section: 'users', action: `${base}/users`, values: form, error: error ?? null }, status);
  }

  function userPage(request: FastifyRequest, reply: FastifyReply, user: UserRecord, extra: { notice?: string | null; error?: string; form?: ReturnType<typeof values>; status?: number } = {}) {
    const path = `${base}${userPath(user.id)}`;
    return ctx.render(request, reply, 'user', {
      section: 'users',
      notice: extra.notice ?? null,
      error: extra.error ?? null,
      user: { id: user.id, username: user.username, name: user.name, disabled: user.disabled, created: when(user.created_at), lastLogin: when(user.last_login_at), path },
      values: extra.form ?? values(user),
      grantsHref: `${base}/grants?user=${encodeURIComponent(user.id)}`,
      auditHref: `${base}/audit?user=${encodeURIComponent(user.id)}`,
    }, extra.status ?? 200);
  }

  async function existing(id: string): Promise<UserRecord> {
    const user = await getUser(db, id);
    if (!user) throw HttpProblem.notFound(`no user ${id}`);
    return user;
  }

  app.get<{ Querystring: { q?: string; after?: string; notice?: string } }>(
    '/admin/users',
    { schema: { querystring: { type: 'object', properties: { q: { type: 'string', maxLength: 128 }, after: { type: 'string', maxLength: 256 }, notice: { type: 'string', maxLength: 64 } } } } },
    async (request, reply) => {
      const { q, after } = request.query;
      const items = await listUsers(db, { q, after, limit: PAGE });
      return ctx.render(request, reply, 'users', {
        section: 'users',
        notice: noticeOf(request.query.notice),
        q: q ?? '',
        paged: !!after,
        first: `${base}/users${q ? `?${new URLSearchParams({ q }).toString()}` : ''}`,
        next: items.length === PAGE ? `${base}/users?${new URLSearchParams({ ...(q ? { q } : {}), after: items.at(-1)!.id }).toString()}` : null,
        users: items.map((u) => ({ id: u.id, href: `${base}${userPath(u.id)}`, username: u.username, name: u.name, fhirUser: u.fhirUser, roles: u.roles.join(', '), disabled: u.disabled, lastLogin: when(u.last_login_at) })),
      });
    },
  );

  app.get('/admin/users/new', async (request, reply) => newPage(request, reply, values({})));

  app.post<{ Body: Form }>('/admin/users', { schema: { body: formBody } }, async (request, reply) => {
    const form = request.body;
    let user: UserRecord;
    try {
      const patients = words(form.patients, 'patients');
      const input = checkNewUser(
        Object.fromEntries(
          Object.entries({ id: text(form.id, 'id'), username: text(form.username, 'username'), password: typeof form.password === 'string' && form.password ? form.password : undefined, fhirUser: text(form.fhirUser, 'fhirUser'), name: text(form.name, 'name'), roles: rolesOf(form), patients: patients.length ? patients : undefined }).filter(([, v]) => v !== undefined),
        ),
      );
      user = await addUser(deps, operatorEvent(request), input);
    } catch (error) {
      if (!(error instanceof HttpProblem) || error.statusCode >= 500) throw error;
      return newPage(request, reply, values(submitted(form)), error.message, error.statusCode);
    }
    return ctx.redirect(reply, userPath(user.id), 'user-created');
  });

  app.get<{ Params: { id: string }; Querystring: { notice?: string } }>(
    '/admin/users/:id',
    { schema: { params: idParams('id'), querystring: { type: 'object', properties: { notice: { type: 'string', maxLength: 64 } } } } },
    async (request, reply) => userPage(request, reply, await existing(request.params.id), { notice: noticeOf(request.query.notice) }),
  );

  app.post<{ Params: { id: string }; Body: Form }>('/admin/users/:id', { schema: { params: idParams('id'), body: formBody } }, async (request, reply) => {
    const user = await existing(request.params.id);
    const form = request.body;
    try {
      const wanted: UserChange = { name: text(form.name, 'name') ?? '', fhirUser: text(form.fhirUser, 'fhirUser') ?? '', roles: rolesOf(form), patients: words(form.patients, 'patients') };
      const current: UserChange = { name: user.name, fhirUser: user.fhirUser, roles: [...user.roles], patients: [...user.patients] };
      const change = Object.fromEntries(Object.entries(wanted).filter(([key, value]) => JSON.stringify(value) !== JSON.stringify(current[key as keyof UserChange])));
      if (Object.keys(change).length) await changeUser(deps, operatorEvent(request), user.id, checkUserChange(change));
    } catch (error) {
      if (!(error instanceof HttpProblem) || error.statusCode >= 500) throw error;
      return userPage(request, reply, user, { error: error.message, form: values({ ...submitted(form), id: user.id, username: user.username }), status: error.statusCode });
    }
    return ctx.redirect(reply, userPath(user.id), 'user-updated');
  });

  const csrfBody = { type: 'object', required: ['csrf'], properties: { csrf: { type: 'string', maxLength: 128 } } } as const;
  for (const [action, disabled] of [['disable', true], ['enable', false]] as const) {
    app.post<{ Params: { id: string } }>(`/admin/users/:id/${action}`, { schema: { params: idParams('id'), body: csrfBody } }, async (request, reply) => {
      if (disabled && request.consoleOperator?.userId === request.params.id) throw HttpProblem.conflict('you cannot disable the account you are signed in with');
      await changeUser(deps, operatorEvent(request), request.params.id, { disabled });
      return ctx.redirect(reply, userPath(request.params.id), disabled ? 'user-disabled' : 'user-enabled');
    });
  }

  app.post<{ Params: { id: string }; Body: { password?: string } }>(
    '/admin/users/:id/password',
    { schema: { params: idParams('id'), body: { type: 'object', required: ['csrf'], properties: { csrf: { type: 'string', maxLength: 128 }, password: { type: 'string', maxLength: 1024 } } } } },
    async (request, reply) => {
      const user = await existing(request.params.id);
      try {
        const { password } = checkNewPassword({ password: request.body.password ?? '' });
        await setUserPassword(deps, operatorEvent(request), user.id, password);
      } catch (error) {
        if (!(error instanceof HttpProblem) || error.statusCode >= 500) throw error;
        return userPage(request, reply, user, { error: `New password: ${error.message}`, status: error.statusCode });
      }
      return ctx.redirect(reply, userPath(user.id), 'password-set');
    },
  );
}
