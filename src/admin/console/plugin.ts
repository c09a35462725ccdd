import formbody from '@fastify/formbody';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

import { HttpProblem } from '../../errors.js';
import { redactUrl } from '../../http/logger.js';
import { closeConsoleSession, findConsoleSession } from '../../users/console-sessions.js';
import type { AdminDeps } from '../deps.js';
import { apiDocsPage } from './api-docs.js';
import { auditPages } from './audit.js';
import { clientPages } from './clients.js';
import type { ConsoleContext, Notice } from './context.js';
import { dashboardPage } from './dashboard.js';
import { directoryPages } from './directory.js';
import { grantPages } from './grants.js';
import { keyPages } from './keys.js';
import { launchPages } from './launches.js';
import { payerPages } from './payer.js';
import { ConsoleCookies, consoleRole, operatorEvent } from './session.js';
import { signInPages } from './sign-in.js';
import { userPages } from './users.js';

/** Sections of the console, in the order of its navigation; `auditor`: open to auditors. */
const SECTIONS = [
  { key: 'dashboard', path: '', label: 'Dashboard', auditor: true },
  { key: 'clients', path: '/clients', label: 'Clients', auditor: false },
  { key: 'users', path: '/users', label: 'Users', auditor: false },
  { key: 'patients', path: '/patients', label: 'Patients', auditor: false },
  { key: 'launches', path: '/launches', label: 'EHR launches', auditor: false },
  { key: 'grants', path: '/grants', label: 'Grants', auditor: true },
  { key: 'audit', path: '/audit', label: 'Audit trail', auditor: true },
  { key: 'keys', path: '/keys', label: 'Keys', auditor: false },
  { key: 'payer', path: '/payer', label: 'CMS-0057-F', auditor: true },
] as const;

/**
 * The operator console at /admin: server-rendered pages (views/console/), usable without JavaScript, for
 * what the admin API does. Every action calls the same function as the API route (src/admin/operations/),
 * so validation and audit events are the same whichever door is used.
 *
 * Sign-in: a person with the admin or auditor role, with their user name and password under the sign-in
 * throttle (src/users/sign-in.ts), or ADMIN_TOKEN typed into a form (never in a URL). Sessions are rows of
 * console_sessions (src/users/console-sessions.ts). Every POST carries a CSRF token bound to the session.
 * Pages are never cached and never framed (the default security headers: frame-ancestors 'none').
 */
export async function operatorConsole(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const base = `${deps.config.basePath}/admin`;
  const cookies = new ConsoleCookies(deps.config, deps.box);
  await app.register(formbody, { bodyLimit: 64 * 1024 });

  const ctx: ConsoleContext = {
    deps,
    cookies,
    base,
    async render(request, reply, view, data, status = 200) {
      const operator = request.consoleOperator;
      void reply.header('cache-control', 'no-store');
      return reply.code(status).view(`console/${view}.ejs`, {
        basePath: deps.config.basePath,
        base,
        operator: operator ? { name: operator.name, role: operator.role, admin: operator.role === 'admin' } : null,
        csrf: operator ? cookies.csrfFor(operator.sessionId) : null,
        nav: operator ? SECTIONS.filter((s) => operator.role === 'admin' || s.auditor).map((s) => ({ ...s, href: `${base}${s.path}` })) : [],
        section: null,
        notice: null,
        error: null,
        ...data,
      });
    },
    redirect(reply, path, notice) {
      return reply.redirect(`${base}${path}${notice ? `${path.includes('?') ? '&' : '?'}notice=${notice satisfies Notice}` : ''}`, 303);
    },
  };

  // Who is asking, before anything else is read: without a session, the sign-in page; an auditor on an
  // admin page, 403.
  app.addHook('onRequest', async (request, reply) => {
    if (request.routeOptions.config.consolePublic) return;
    const sessionId = cookies.sessionOf(request);
    const session = await findConsoleSession(deps.db, deps.box, sessionId, deps.config.adminToken);
    const role = session && (session.user ? consoleRole(session.user.roles) : 'admin');
    if (!session || !role || !sessionId) {
      // An operator who lost their role keeps no session: the sign-in page then shows its form.
      if (session) await closeConsoleSession(deps.db, deps.box, sessionId, deps.config.adminToken);
      if (sessionId) cookies.clearSession(reply);
      return reply.redirect(`${base}/sign-in`, 303);
    }
    request.consoleOperator = { userId: session.user?.id ?? null, name: session.user?.name ?? 'ADMIN_TOKEN', role, sessionId };
    if (role === 'auditor' && !request.routeOptions.config.consoleAuditor) throw HttpProblem.forbidden('an auditor reads the audit trail and the grants and changes nothing: this needs the admin role');
  });

  // Every change is a POST carrying the session's CSRF token (read once the form is parsed).
  app.addHook('preValidation', async (request) => {
    const operator = request.consoleOperator;
    if (request.method !== 'POST' || !operator) return;
    if (!cookies.verifyCsrf(operator.sessionId, (request.body as { csrf?: unknown } | undefined)?.csrf)) throw HttpProblem.forbidden('this form has expired or did not come from the console: reload the page and try again');
  });

  // As the admin API does: every request of a signed-in operator is audited.
  app.addHook('onResponse', async (request, reply) => {
    if (!request.consoleOperator) return;
    deps.audit.recordQuietly({
      ...operatorEvent(request),
      type: 'admin.request',
      outcome: reply.statusCode < 400 ? 'success' : 'failure',
      details: { method: request.method, path: redactUrl(request.url), status: reply.statusCode, console: true },
    });
  });

  // The console's own error page (with its navigation) for what the operator asked wrongly; anything else
  // goes to the server's error handler, which logs it and answers without internals.
  app.setErrorHandler(async (error: FastifyError | HttpProblem, request: FastifyRequest, reply: FastifyReply) => {
    const status = error.statusCode ?? 500;
    if (status < 400 || status >= 500) throw error;
    return ctx.render(request, reply, 'error', { title: TITLES[status] ?? 'This cannot be done', message: error.message, requestId: request.id }, status);
  });

  await app.register(signInPages, ctx);
  await app.register(dashboardPage, ctx);
  await app.register(clientPages, ctx);
  await app.register(userPages, ctx);
  await app.register(directoryPages, ctx);
  await app.register(launchPages, ctx);
  await app.register(grantPages, ctx);
  await app.register(auditPages, ctx);
  await app.register(keyPages, ctx);
  await app.register(payerPages, ctx);
  await app.register(apiDocsPage, ctx);
}

const TITLES: Record<number, string> = {
  400: 'This cannot be done',
  403: 'Not allowed',
  404: 'Not found',
  409: 'This cannot be done now',
  413: 'Too large',
  429: 'Too many attempts',
};
