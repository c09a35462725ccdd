import type { FastifyError, FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';

import { RETRY_AFTER_SECONDS, unavailableReason } from '../db/faults.js';
import { HttpProblem } from '../errors.js';
import { recordOutcome } from '../observability/request-outcome.js';
import { TEMPORARILY_UNAVAILABLE } from '../oidc/unavailable.js';
import { renderErrorPage, wantsHtml } from './pages.js';

export interface ErrorHandlingOptions {
  readonly basePath: string;
  /** Path patterns answered by some method; another method on them gets 405 instead of 404. */
  readonly methodsByPath: ReadonlyMap<string, readonly string[]>;
}

/**
 * One place that turns errors into responses. Client errors keep their message (it is ours or Fastify's and
 * says what to fix); anything else is logged with its stack and answered as `server_error` without internals.
 * JSON in the OAuth error shape for programs, a page for people (whoever sends Accept: text/html).
 */
export const errorHandling = fp(
  (app: FastifyInstance, options: ErrorHandlingOptions, done: (err?: Error) => void) => {
    app.setErrorHandler(async (error: FastifyError | HttpProblem, request, reply) => {
      const unavailable = unavailableReason(error);
      const status = unavailable ? 503 : error.statusCode && error.statusCode >= 400 && error.statusCode < 600 ? error.statusCode : 500;
      let body: { error: string; error_description: string };
      // Ours (HttpProblem), Fastify's (validation, body limits) or a bug: only the first two reach the client as they are.
      if (unavailable) {
        // RFC 6749 §4.1.2.1 and §5.2 name the condition; the reason stays in the log.
        request.log.warn({ reason: unavailable }, 'database unavailable');
        void reply.header('retry-after', String(RETRY_AFTER_SECONDS));
        body = { ...TEMPORARILY_UNAVAILABLE };
      } else if (error instanceof HttpProblem && status < 500) {
        body = { error: error.error, error_description: error.message };
      } else if (status >= 500) {
        request.log.error({ err: error }, 'request failed');
        body = { error: status === 503 ? 'temporarily_unavailable' : 'server_error', error_description: 'the server could not complete the request' };
      } else {
        body = { error: 'validation' in error && error.validation ? 'invalid_request' : clientErrorCode(status), error_description: error.message };
      }
      recordOutcome(request.raw, { error: body.error, description: body.error_description });
      void reply.code(status).header('cache-control', 'no-store');
      if (wantsHtml(request.headers.accept)) {
        return reply.type('text/html; charset=utf-8').send(await renderErrorPage(app, options.basePath, { status, error: body.error, description: body.error_description, requestId: request.id }));
      }
      return reply.send(body);
    });

    app.setNotFoundHandler(async (request, reply) => {
      const path = request.url.split('?')[0] ?? '';
      const allowed = options.methodsByPath.get(path);
      const status = allowed ? 405 : 404;
      if (allowed) void reply.header('allow', allowed.join(', '));
      const body = allowed
        ? { error: 'invalid_request', error_description: `${request.method} is not allowed on ${path}; use ${allowed.join(' or ')}` }
        : { error: 'not_found', error_description: `nothing at ${request.method} ${path}` };
      void reply.code(status);
      if (wantsHtml(request.headers.accept)) {
        return reply.type('text/html; charset=utf-8').send(await renderErrorPage(app, options.basePath, { status, requestId: request.id }));
      }
      return reply.send(body);
    });
    done();
  },
  { name: 'error-handling', fastify: '5.x', dependencies: ['@fastify/view'] },
);

function clientErrorCode(status: number): string {
  switch (status) {
    case 401:
      return 'unauthorized';
    case 403:
      return 'forbidden';
    case 404:
      return 'not_found';
    case 409:
      return 'conflict';
    case 413:
      return 'request_too_large';
    case 415:
      return 'unsupported_media_type';
    case 429:
      return 'too_many_requests';
    default:
      return 'invalid_request';
  }
}
