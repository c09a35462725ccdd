import { randomBytes } from 'node:crypto';

import type { FastifyReply, FastifyRequest } from 'fastify';

import type { Config } from '../../config/config.js';
import type { SecretBox } from '../../security/secret-box.js';
import { DEVICE_COOKIE, DEVICE_COOKIE_SECONDS, readCookie } from '../../users/device-cookie.js';
import { CONSOLE_MAX_SECONDS } from '../../users/console-sessions.js';
import { ADMIN_ROLE, AUDITOR_ROLE } from '../../users/users.js';
import type { Operator } from '../operations/operator.js';

/**
 * Who is using the console, and what they may do. People sign in with their user account and need the
 * `admin` role (everything) or `auditor` (reads the audit trail and the grants, changes nothing); a session
 * opened with ADMIN_TOKEN is an admin. Roles are read from the database at every request.
 */
export type ConsoleRole = 'admin' | 'auditor';

export interface ConsoleOperator {
  /** The user id, or null for a session opened with ADMIN_TOKEN. */
  readonly userId: string | null;
  readonly name: string;
  readonly role: ConsoleRole;
  /** The session id (the cookie's value): the CSRF token is bound to it. */
  readonly sessionId: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    consoleOperator?: ConsoleOperator;
  }
  interface FastifyContextConfig {
    /** The console page is open to auditors too (reads only); otherwise admins only. */
    consoleAuditor?: boolean;
    /** The console page needs no session (sign-in). */
    consolePublic?: boolean;
  }
}

/** The operator role a user's roles give, if any: admin wins over auditor. */
export function consoleRole(roles: readonly string[]): ConsoleRole | undefined {
  if (roles.includes(ADMIN_ROLE)) return 'admin';
  if (roles.includes(AUDITOR_ROLE)) return 'auditor';
  return undefined;
}

/** The operator as the audit trail names them: a person as a user, the token holder as `admin`. */
export function operatorEvent(request: FastifyRequest): Operator {
  const operator = request.consoleOperator;
  return { actorType: operator?.userId ? 'user' : 'admin', actorId: operator?.userId ?? 'admin-token', sourceIp: request.ip, requestId: request.id };
}

export const SESSION_COOKIE = 'smart_console';
/** A nonce for the sign-in form, before there is a session: the form's CSRF token is bound to it. */
export const SIGN_IN_COOKIE = 'smart_console_sign_in';

const CSRF_PURPOSE = 'console-csrf';
const SIGN_IN_PURPOSE = 'console-sign-in';

export class ConsoleCookies {
  readonly #box: SecretBox;
  readonly #path: string;
  readonly #secure: string;

  constructor(config: Config, box: SecretBox) {
    this.#box = box;
    this.#path = `${config.basePath}/admin`;
    this.#secure = config.issuer.startsWith('https:') ? '; Secure' : '';
  }

  /** The sign-in form's cookies (nonce, device) go to the sign-in form only. */
  get signInPath(): string {
    return `${this.#path}/sign-in`;
  }

  sessionOf(request: FastifyRequest): string | undefined {
    return readCookie(request.headers.cookie, SESSION_COOKIE);
  }

  /**
   * Lax, not Strict: a link to a console page from elsewhere (a ticket, a mail) opens it signed in; every
   * change is a POST, which Lax does not send cross-site, and carries a CSRF token besides.
   */
  setSession(reply: FastifyReply, sessionId: string): void {
    this.#append(reply, `${SESSION_COOKIE}=${sessionId}; Path=${this.#path}; Max-Age=${CONSOLE_MAX_SECONDS}; HttpOnly; SameSite=Lax${this.#secure}`);
  }

  clearSession(reply: FastifyReply): void {
    this.#append(reply, `${SESSION_COOKIE}=; Path=${this.#path}; Max-Age=0; HttpOnly; SameSite=Lax${this.#secure}`);
  }

  /** The CSRF token of a session's forms (the project's pattern: a MAC bound to the session). */
  csrfFor(sessionId: string): string {
    return this.#box.mac(CSRF_PURPOSE, sessionId);
  }

  verifyCsrf(sessionId: string, given: unknown): boolean {
    return typeof given === 'string' && this.#box.verifyMac(CSRF_PURPOSE, sessionId, given);
  }

  /**
   * The sign-in form's token: bound to a nonce cookie set with the form, so another site cannot sign a
   * browser in to an account of its choosing (login CSRF). Reuses the browser's nonce while it has one.
   */
  signInToken(request: FastifyRequest, reply: FastifyReply): string {
    let nonce = readCookie(request.headers.cookie, SIGN_IN_COOKIE);
    if (!nonce || !/^[A-Za-z0-9_-]{22}$/.test(nonce)) {
      nonce = randomBytes(16).toString('base64url');
      this.#append(reply, `${SIGN_IN_COOKIE}=${nonce}; Path=${this.signInPath}; HttpOnly; SameSite=Lax${this.#secure}`);
    }
    return this.#box.mac(SIGN_IN_PURPOSE, nonce);
  }

  verifySignInToken(request: FastifyRequest, given: unknown): boolean {
    const nonce = readCookie(request.headers.cookie, SIGN_IN_COOKIE);
    return !!nonce && typeof given === 'string' && this.#box.verifyMac(SIGN_IN_PURPOSE, nonce, given);
  }

  /** The sign-in throttle's device cookie (src/users/device-cookie.ts), kept to the console's sign-in form. */
  setDevice(reply: FastifyReply, value: string): void {
    this.#append(reply, `${DEVICE_COOKIE}=${value}; Path=${this.signInPath}; Max-Age=${DEVICE_COOKIE_SECONDS}; HttpOnly; SameSite=Lax${this.#secure}`);
  }

  #append(reply: FastifyReply, cookie: string): void {
    const current = reply.getHeader('set-cookie');
    const list = current === undefined ? [] : Array.isArray(current) ? current : [String(current)];
    void reply.header('set-cookie', [...list, cookie]);
  }
}
