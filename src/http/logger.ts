import type { IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';

import { pino, type Logger } from 'pino';
import type PinoPretty from 'pino-pretty';

import type { LogLevel } from '../config/config.js';

/**
 * Query parameters whose values are secrets or bearer artifacts. Their values never reach a log line;
 * the name stays so the line is still useful.
 */
const SECRET_PARAMS = new Set([
  'code',
  'token',
  'access_token',
  'refresh_token',
  'id_token',
  'id_token_hint',
  'client_secret',
  'client_assertion',
  'code_verifier',
  'password',
  'launch',
  'request',
  'assertion',
  'logout_token',
]);

/** At most 200 characters of a path or URL, for an answer or a log line: a URL may be kilobytes long. */
export function shownPath(path: string): string {
  return path.length > 200 ? `${path.slice(0, 200)}…` : path;
}

/** The request URL with the values of secret-bearing query parameters replaced by `[redacted]`. */
export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  if (q === -1) return url;
  const params = url.slice(q + 1).split('&').map((pair) => {
    const eq = pair.indexOf('=');
    if (eq === -1) return pair;
    let name: string;
    try {
      name = decodeURIComponent(pair.slice(0, eq).replace(/\+/g, ' '));
    } catch {
      return `${pair.slice(0, eq)}=[redacted]`;
    }
    return SECRET_PARAMS.has(name) ? `${pair.slice(0, eq)}=[redacted]` : pair;
  });
  return `${url.slice(0, q)}?${params.join('&')}`;
}

/**
 * The server's logger: JSON lines with ISO times for log collectors, or, when stdout is a terminal and no
 * destination is given, the same lines laid out for a person (pino-pretty, loaded only then).
 */
export function createLogger(level: LogLevel, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'smart-auth-server' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      // Headers that carry credentials, whatever route logs them.
      redact: {
        paths: [
          'req.headers.authorization',
          'req.headers.cookie',
          'req.headers["dpop"]',
          'res.headers["set-cookie"]',
          'headers.authorization',
          'headers.cookie',
        ],
        censor: '[redacted]',
      },
      serializers: {
        req: (req: IncomingMessage & { id?: string; ip?: string; routeOptions?: { url?: string } }) => ({
          method: req.method,
          url: redactUrl(req.url ?? ''),
          remoteAddress: req.ip ?? req.socket.remoteAddress,
        }),
        err: serializeError,
      },
    },
    destination ?? (process.stdout.isTTY ? forPeople() : undefined),
  );
}

/**
 * Fields of a database error (node-postgres and PGlite alike) that quote the data a statement carried: the
 * `detail` of a constraint violation names the key's value (`Key (id)=(…) already exists.`), `where` quotes
 * JSON or a function's line, `internalQuery` a statement's text, and PGlite adds the statement's `params`. A
 * log line keeps what tells an operator what failed (`code`, `constraint`, `table`, `column`, `routine`) and
 * never a patient's id, a name or a token hash.
 */
const DATABASE_DATA_FIELDS = ['detail', 'where', 'internalQuery', 'params', 'parameters'] as const;

/** pino's error serializer, with what a database error quotes of the data left out (DATABASE_DATA_FIELDS). */
export function serializeError(error: unknown): unknown {
  const serialized = pino.stdSerializers.err(error as Error) as unknown;
  if (!isObject(error) || !isObject(serialized)) return serialized;
  // A database error anywhere in the chain: its message is in the message and stack of every error above it.
  const replacements: [string, string][] = [];
  for (let at: unknown = error, depth = 0; isObject(at) && depth < 10; at = at.cause, depth++) {
    if (!isDatabaseError(at)) continue;
    const message = String(at.message);
    const safe = safeDatabaseMessage(at);
    if (safe !== message) replacements.push([message, safe]);
  }
  return scrub(serialized, replacements, 0);
}

/** `value` (a serialized error, made for this line) with DATABASE_DATA_FIELDS gone; nested objects copied, not changed. */
function scrub(value: Record<string, unknown>, replacements: readonly [string, string][], depth: number): Record<string, unknown> {
  if (isDatabaseError(value)) for (const field of DATABASE_DATA_FIELDS) Reflect.deleteProperty(value, field);
  for (const key of ['message', 'stack'] as const) {
    if (typeof value[key] === 'string') value[key] = replacements.reduce((text, [from, to]) => text.split(from).join(to), value[key]);
  }
  if (depth >= 5) return value;
  const nested = (item: unknown): unknown => (isPlain(item) ? scrub({ ...item }, replacements, depth + 1) : item);
  for (const [key, item] of Object.entries(value)) value[key] = Array.isArray(item) ? item.map(nested) : nested(item);
  return value;
}

/** Postgres's own error fields: a five-character SQLSTATE and a severity (node-postgres and PGlite alike). */
function isDatabaseError(value: Record<string, unknown>): boolean {
  return typeof value.code === 'string' && /^[0-9A-Z]{5}$/.test(value.code) && typeof value.severity === 'string';
}

/**
 * The message of a database error, without the value it quotes: Postgres ends the messages of its data
 * exceptions (SQLSTATE class 22: invalid input syntax, a date out of range, an invalid enum value) with
 * `: "<the value>"`. Other messages name only objects of the schema (`… violates unique constraint "…"`).
 */
function safeDatabaseMessage(error: Record<string, unknown>): string {
  const message = String(error.message);
  if (!String(error.code).startsWith('22')) return message;
  const quoted = message.indexOf(': "');
  return quoted === -1 ? message : `${message.slice(0, quoted)}: [redacted]`;
}

/** An object made of fields (a serialized error, a record), not a Date, Buffer or other instance. */
function isPlain(value: unknown): value is Record<string, unknown> {
  if (!isObject(value) || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null || proto === SERIALIZED_ERROR;
}

/** The prototype of pino's serialized errors (nested ones: `aggregateErrors`, an error held in a field). */
const SERIALIZED_ERROR = Object.getPrototypeOf(pino.stdSerializers.err(new Error('probe'))) as unknown;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

function forPeople(): pino.DestinationStream {
  const pretty = createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
  return pretty({ sync: true, ignore: 'pid,hostname,service', translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l' });
}
