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
        err: pino.stdSerializers.err,
      },
    },
    destination ?? (process.stdout.isTTY ? forPeople() : undefined),
  );
}

function forPeople(): pino.DestinationStream {
  const pretty = createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
  return pretty({ sync: true, ignore: 'pid,hostname,service', translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l' });
}
