import type { FastifyReply, FastifyRequest } from 'fastify';

import { HttpProblem } from '../../errors.js';
import type { AdminDeps } from '../deps.js';
import type { ConsoleCookies } from './session.js';

/** What every console page module works with. */
export interface ConsoleContext {
  readonly deps: AdminDeps;
  readonly cookies: ConsoleCookies;
  /** The console's root path: `<basePath>/admin`. */
  readonly base: string;
  /** Renders views/console/<view>.ejs inside the console's layout. */
  render(request: FastifyRequest, reply: FastifyReply, view: string, data: Record<string, unknown>, status?: number): Promise<FastifyReply>;
  /** 303 to a console page, with one of the fixed notices (NOTICES) to show there. */
  redirect(reply: FastifyReply, path: string, notice?: keyof typeof NOTICES): FastifyReply;
}

/** What a page may say after a redirect: fixed texts, so the query string carries no text of its own. */
export const NOTICES = {
  'client-created': 'The client was created.',
  'client-updated': 'The client was saved.',
  'client-approved': 'The registration was approved: the client is active.',
  'client-rejected': 'The registration was rejected: the client is suspended.',
  'client-suspended': 'The client is suspended: it can no longer get tokens.',
  'client-activated': 'The client is active.',
  'client-deleted': 'The client and everything issued to it were deleted.',
  'user-created': 'The user was created.',
  'user-updated': 'The user was saved.',
  'user-disabled': 'The user is disabled: their grants were revoked and their sessions ended.',
  'user-enabled': 'The user can sign in again.',
  'password-set': 'The new password is set.',
  'patient-deleted': 'The patient was removed from the directory.',
  'grant-revoked': 'The grant and every token issued under it were revoked.',
  'signed-out': 'You are signed out.',
} as const;
export type Notice = keyof typeof NOTICES;

export function noticeOf(value: unknown): string | null {
  return typeof value === 'string' && Object.hasOwn(NOTICES, value) ? NOTICES[value as Notice] : null;
}

/** Form fields as @fastify/formbody gives them: a string, or an array for a repeated name. */
export type FormValue = string | string[] | undefined;

/** A single text field, trimmed; undefined when empty. Repeated fields are a malformed form. */
export function text(value: FormValue, name: string): string | undefined {
  if (Array.isArray(value)) throw HttpProblem.invalid(`${name} is given more than once`);
  const trimmed = value?.trim();
  return trimmed ? trimmed : undefined;
}

/** One value per line of a text area, blank lines left out. */
export function lines(value: FormValue, name: string): string[] {
  return (text(value, name) ?? '')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter(Boolean);
}

/** The values of a group of checkboxes. */
export function checked(value: FormValue): string[] {
  return value === undefined ? [] : ([] as string[]).concat(value);
}

/** Whitespace-separated words, such as scopes or patient ids. */
export function words(value: FormValue, name: string): string[] {
  return (text(value, name) ?? '').split(/\s+/).filter(Boolean);
}

/** Up to `max` characters of a query string value, or undefined. */
export function queryText(value: unknown, max = 256): string | undefined {
  return typeof value === 'string' && value.trim() ? value.trim().slice(0, max) : undefined;
}
