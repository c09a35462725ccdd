import type { ServerOptions, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import fp from 'fastify-plugin';

import type { Config } from '../config/config.js';

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
export function connectionOptions(config: Config): ConnectionOptions {
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
    clientErrorHandler: clientErrorHandler(config),
  };
}

/** Node reports what went wrong before a request reached us (a timeout, a malformed request) here. */
function clientErrorHandler(config: Config): ClientErrorHandler {
  return (error, socket) => {
    if (error.code === 'ECONNRESET' || socket.destroyed) return;
    const [status, reason, description] =
      error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'Request Timeout', `the request was not received in time: its headers must arrive within ${config.headersTimeoutSeconds} s, all of it within ${config.requestTimeoutSeconds} s`]
        : error.code === 'HPE_HEADER_OVERFLOW'
          ? [431, 'Request Header Fields Too Large', 'the request headers are too large']
          : [400, 'Bad Request', 'the request is not valid HTTP/1.1'];
    // Once a response has begun on this connection, a second one cannot follow it.
    const response = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage;
    if (socket.writable && !response?.headersSent) {
      const body = JSON.stringify({ error: 'invalid_request', error_description: description });
      socket.write(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n${body}`);
    }
    socket.destroy();
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
