import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

import { closeConsoleSession, findConsoleSession, openConsoleSession } from '../../users/console-sessions.js';
import { DEVICE_COOKIE, readCookie } from '../../users/device-cookie.js';
import { countAttempt, sourceOf, throttleKey, uncountAttempt } from '../../users/login-throttle.js';
import { signIn } from '../../users/sign-in.js';
import { sameSecret } from '../../security/bearer.js';
import { noticeOf, type ConsoleContext } from './context.js';
import { consoleRole } from './session.js';

const signInBody = {
  type: 'object',
  required: ['csrf'],
  properties: { csrf: { type: 'string', maxLength: 128 }, username: { type: 'string', maxLength: 256 }, password: { type: 'string', maxLength: 1024 }, admin_token: { type: 'string', maxLength: 1024 } },
} as const;

interface SignInBody {
  csrf: string;
  username?: string;
  password?: string;
  admin_token?: string;
}

/**
 * Signing in to the console: a user name and password under the same throttle as the sign-in page
 * (src/users/sign-in.ts: per source, per device, per user name), or ADMIN_TOKEN, whose attempts count against
 * the source like any failed password. Both are audited as login.success / login.failure with
 * `details.console`. The session id is new at every sign-in (no fixation).
 */
export async function signInPages(app: FastifyInstance, ctx: ConsoleContext): Promise<void> {
  const { deps, cookies, base } = ctx;
  const { db, box, audit, config } = deps;

  function page(request: FastifyRequest, reply: FastifyReply, status: number, extra: { error?: string; username?: string; notice?: string | null } = {}): Promise<FastifyReply> {
    return ctx.render(request, reply, 'sign-in', {
      csrf: cookies.signInToken(request, reply),
      action: `${base}/sign-in`,
      tokenAction: `${base}/sign-in/token`,
      tokenEnabled: !!config.adminToken,
      error: extra.error ?? null,
      username: extra.username ?? '',
      notice: extra.notice ?? null,
    }, status);
  }

  const expired = (request: FastifyRequest, reply: FastifyReply) => page(request, reply, 403, { error: 'This form has expired. Try again.' });

  async function start(request: FastifyRequest, reply: FastifyReply, userId: string | null): Promise<FastifyReply> {
    await closeConsoleSession(db, box, cookies.sessionOf(request), config.adminToken);
    cookies.setSession(reply, await openConsoleSession(db, box, userId, config.adminToken));
    return reply.redirect(base, 303);
  }

  app.get<{ Querystring: { notice?: string } }>(
    '/admin/sign-in',
    { config: { consolePublic: true }, schema: { querystring: { type: 'object', properties: { notice: { type: 'string', maxLength: 64 } } } } },
    async (request, reply) => {
      const session = await findConsoleSession(db, box, cookies.sessionOf(request), config.adminToken);
      if (session && (!session.user || consoleRole(session.user.roles))) return reply.redirect(base, 303);
      return page(request, reply, 200, { notice: noticeOf(request.query.notice) });
    },
  );

  app.post<{ Body: SignInBody }>('/admin/sign-in', { config: { consolePublic: true }, schema: { body: signInBody } }, async (request, reply) => {
    if (!cookies.verifySignInToken(request, request.body.csrf)) return expired(request, reply);
    const username = (request.body.username ?? '').trim();
    const event = { sourceIp: request.ip, requestId: request.id };
    const result = await signIn(db, box, { username, password: request.body.password ?? '', ip: request.ip, deviceCookie: readCookie(request.headers.cookie, DEVICE_COOKIE) });
    if (!result.ok) {
      await audit.record({ ...event, type: 'login.failure', outcome: 'failure', actorType: result.userId ? 'user' : 'anonymous', actorId: result.userId, userId: result.userId, details: { reason: result.reason, console: true } });
      if (result.reason === 'invalid') return page(request, reply, 401, { error: 'Wrong user name or password.', username });
      // RFC 6585 §4. The same answer whichever limit was reached and whether or not the user exists.
      void reply.header('retry-after', String(result.retryAfterSeconds));
      return page(request, reply, 429, { error: `Too many failed attempts. Try again in ${Math.ceil(result.retryAfterSeconds / 60)} minute(s).`, username });
    }
    cookies.setDevice(reply, result.deviceCookie);
    const user = { ...event, actorType: 'user' as const, actorId: result.user.id, userId: result.user.id };
    if (!consoleRole(result.user.roles)) {
      await audit.record({ ...user, type: 'login.failure', outcome: 'failure', details: { reason: 'not_operator', console: true } });
      return page(request, reply, 403, { error: 'This account has neither the admin nor the auditor role: it cannot use the operator console.', username });
    }
    await audit.record({ ...user, type: 'login.success', details: { console: true } });
    return start(request, reply, result.user.id);
  });

  app.post<{ Body: SignInBody }>('/admin/sign-in/token', { config: { consolePublic: true }, schema: { body: signInBody } }, async (request, reply) => {
    if (!cookies.verifySignInToken(request, request.body.csrf)) return expired(request, reply);
    const event = { sourceIp: request.ip, requestId: request.id };
    const source = throttleKey(box, 'source', sourceOf(request.ip));
    const admission = await countAttempt(db, source);
    if (!admission.admitted) {
      await audit.record({ ...event, type: 'login.failure', outcome: 'failure', actorType: 'anonymous', details: { reason: 'throttled_source', with: 'admin-token', console: true } });
      void reply.header('retry-after', String(admission.retryAfterSeconds));
      return page(request, reply, 429, { error: `Too many failed attempts. Try again in ${Math.ceil(admission.retryAfterSeconds / 60)} minute(s).` });
    }
    if (!config.adminToken || !sameSecret(request.body.admin_token ?? '', config.adminToken)) {
      await audit.record({ ...event, type: 'login.failure', outcome: 'failure', actorType: 'anonymous', details: { reason: 'invalid', with: 'admin-token', console: true } });
      return page(request, reply, 401, { error: config.adminToken ? 'That is not the admin token.' : 'This server has no ADMIN_TOKEN: sign in with an operator account.' });
    }
    await uncountAttempt(db, source);
    await audit.record({ ...event, type: 'login.success', actorType: 'admin', actorId: 'admin-token', details: { with: 'admin-token', console: true } });
    return start(request, reply, null);
  });

  app.post('/admin/sign-out', { config: { consoleAuditor: true } }, async (request, reply) => {
    await closeConsoleSession(db, box, cookies.sessionOf(request), config.adminToken);
    cookies.clearSession(reply);
    return reply.redirect(`${base}/sign-in?notice=signed-out`, 303);
  });
}
