import { METHODS, type ServerOptions, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import fp from 'fastify-plugin';

import type { Config } from '../config/config.js';
import { errorAnswer, errorForms, oauthAnswer } from './errors.js';
import type { ObserveUnrouted } from './observe-requests.js';
import { securityHeaderList } from './security-headers.js';

/**
 * How often Node looks for requests past their headers or request timeout (its default, 30 s, would let a
 * 30 s timeout run to 60 s). One pass over the open connections per second costs next to nothing.
 */
const TIMEOUT_CHECK_INTERVAL_MS = 1000;

type ClientErrorHandler = NonNullable<FastifyServerOptions['clientErrorHandler']>;

export interface ConnectionOptions {
  readonly requestTimeout: number;
  readonly keepAliveTimeout: number;
  readonly http: ServerOptions;
  readonly clientErrorHandler: ClientErrorHandler;
}

/**
 * The limits that keep slow and broken clients from holding connections: the headers and the whole
 * request must arrive within their timeouts (Node answers 408 and closes), and an idle keep-alive
 * connection closes after its timeout. `connectionTimeout` (socket inactivity) stays off: its clock also
 * runs while a handler works (an import), and the request timeout already bounds what a client sends.
 */
export function connectionOptions(config: Config, observe: ObserveUnrouted): ConnectionOptions {
  const requestTimeout = config.requestTimeoutSeconds * 1000;
  const http: ServerOptions = {
    headersTimeout: config.headersTimeoutSeconds * 1000,
    requestTimeout,
    connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS,
  };
  return {
    requestTimeout,
    keepAliveTimeout: config.keepAliveTimeoutSeconds * 1000,
    http,
    clientErrorHandler: clientErrorHandler(config, observe),
  };
}

/**
 * Node reports what went wrong before a request reached us (a timeout, a malformed request, a URL and headers
 * over its limit) here, with the bytes it had read. When those show the request line and the Accept header,
 * the answer takes the form any other error does (src/http/errors.ts): a page for a person, an
 * OperationOutcome under a FHIR base; otherwise the OAuth error shape.
 */
function clientErrorHandler(config: Config, observe: ObserveUnrouted): ClientErrorHandler {
  const forms = errorForms(config);
  const securityHeaders = securityHeaderList({ https: config.issuer.startsWith('https:') });
  // Fastify calls it with the app as `this` (fastify.js: clientErrorHandler.bind(fastify)).
  return function (this: FastifyInstance, error, socket) {
    if (error.code === 'ECONNRESET' || socket.destroyed) return;
    const [status, reason, description] =
      error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'Request Timeout', `the request was not received in time: its headers must arrive within ${config.headersTimeoutSeconds} s, all of it within ${config.requestTimeoutSeconds} s`]
        : error.code === 'HPE_HEADER_OVERFLOW'
          ? [431, 'Request Header Fields Too Large', 'the URL and headers of the request are larger than this server accepts']
          : [400, 'Bad Request', 'the request is not valid HTTP/1.1'];
    const problem = { status, error: 'invalid_request', description };
    const seen = requestSeen((error as { rawPacket?: unknown }).rawPacket);
    observe(this.log, { method: seen.method, url: seen.url, ip: socket.remoteAddress, status, error: problem.error, description, seconds: 0 });
    void errorAnswer(this, forms, seen, problem)
      .catch(() => oauthAnswer(problem))
      .then(({ headers, body }) => {
        // Once a response has begun on this connection, a second one cannot follow it.
        const response = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage;
        if (socket.writable && !response?.headersSent) {
          const lines = [...securityHeaders, ...Object.entries(headers), ['content-length', String(Buffer.byteLength(body))], ['cache-control', 'no-store'], ['connection', 'close']].map(([name, value]) => `${name}: ${value}\r\n`);
          socket.write(`HTTP/1.1 ${status} ${reason}\r\n${lines.join('')}\r\n${body}`);
        }
        socket.destroy();
      });
  };
}

/**
 * The path and Accept header of the request Node gave up on, as far as the bytes it read show them (the
 * first 64 KiB of a request whose URL is too long hold its request line, and usually its headers).
 */
function requestSeen(packet: unknown): { method: string | undefined; url: string; accept: string | undefined } {
  const text = Buffer.isBuffer(packet) ? packet.toString('latin1') : '';
  const end = text.indexOf('\r\n\r\n');
  const head = end === -1 ? text : text.slice(0, end + 2);
  const line = /^([A-Z]{1,16}) (\/[^ ?#\r\n]*)/.exec(head);
  return {
    // Only a method Node knows: the log line names no word a client made up.
    method: line && METHODS.includes(line[1]!) ? line[1] : undefined,
    url: line?.[2] ?? '',
    accept: /\r\naccept:[ \t]*([^\r\n]*)\r\n/i.exec(head)?.[1],
  };
}

/**
 * A response sent before its request's body was read to the end (a refused body) closes the connection:
 * the rest of the body would otherwise be read as the next request, or, unread, stall the connection
 * until its keep-alive timeout. Fastify does this for the bodies its parsers refuse; this covers every
 * other early answer (a wrong content type, an authorization form over its limit).
 */
export const closeAfterUnreadBody = fp(
  (app: FastifyInstance, _options: object, done: (err?: Error) => void) => {
    app.addHook('onSend', async (request, reply) => {
      // `complete` is undefined on requests injected without a connection (light-my-request).
      const { complete } = request.raw as { complete?: boolean };
      if (complete === false) {
        void reply.header('connection', 'close');
        request.raw.resume();
      }
    });
    done();
  },
  { name: 'close-after-unread-body', fastify: '5.x' },
);
