import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';

import type { Config } from '../config/config.js';
import { RETRY_AFTER_SECONDS, unavailableReason } from '../db/faults.js';
import { HttpProblem } from '../errors.js';
import { CORS_HEADERS, FHIR_JSON, operationOutcome } from '../gateway/outcome.js';
import { recordOutcome } from '../observability/request-outcome.js';
import { TEMPORARILY_UNAVAILABLE } from '../oidc/unavailable.js';
import { shownPath } from './logger.js';
import type { ObserveUnrouted } from './observe-requests.js';
import { renderErrorPage, wantsHtml } from './pages.js';

/** What decides the form of an error's answer, besides the request. */
export interface ErrorForms {
  /** The issuer's path, which the error page's links start with. */
  readonly basePath: string;
  /** The paths of the FHIR bases the gateway fronts. */
  readonly fhirBasePaths: readonly string[];
}

export function errorForms(config: Config): ErrorForms {
  return { basePath: config.basePath, fhirBasePaths: config.fhirUpstreams.map((u) => new URL(u.base).pathname.replace(/\/$/, '')) };
}

/** An error as the client is told it. */
export interface Problem {
  readonly status: number;
  readonly error: string;
  readonly description: string;
  /** false: a person's page gives only the status's plain explanation, not the description. */
  readonly onPage?: boolean;
}

export interface ErrorAnswer {
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/**
 * An error answered in the form whoever asked reads. Under a FHIR base the gateway fronts, a FHIR
 * OperationOutcome that browser apps of any origin may read, as the gateway's own errors are (the discovery
 * documents served there, `/.well-known/…`, are OAuth's and keep its shape); for a person (Accept: text/html)
 * the error page; for a program the OAuth error shape.
 */
export async function errorAnswer(app: FastifyInstance, forms: ErrorForms, asked: { readonly url: string; readonly accept: string | undefined; readonly requestId?: string }, problem: Problem): Promise<ErrorAnswer> {
  const path = asked.url.split('?')[0] ?? '';
  const fhir = forms.fhirBasePaths.some((base) => (path === base || path.startsWith(`${base}/`)) && !path.startsWith(`${base}/.well-known/`));
  if (fhir) return { headers: { ...CORS_HEADERS, 'content-type': FHIR_JSON }, body: JSON.stringify(operationOutcome(problem.status, problem.description)) };
  if (wantsHtml(asked.accept)) {
    const page = problem.onPage === false ? { status: problem.status } : { status: problem.status, error: problem.error, description: problem.description, requestId: asked.requestId };
    return { headers: { 'content-type': 'text/html; charset=utf-8' }, body: await renderErrorPage(app, forms.basePath, page) };
  }
  return oauthAnswer(problem);
}

/** The OAuth error shape (RFC 6749 §5.2): for programs, and where a page cannot be rendered. */
export function oauthAnswer(problem: Problem): ErrorAnswer {
  return { headers: { 'content-type': 'application/json; charset=utf-8' }, body: JSON.stringify({ error: problem.error, error_description: problem.description }) };
}

export interface ErrorHandlingOptions extends ErrorForms {
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
    const answer = async (request: FastifyRequest, reply: FastifyReply, problem: Problem): Promise<FastifyReply> => {
      const { headers, body } = await errorAnswer(app, options, { url: request.url, accept: request.headers.accept, requestId: request.id }, problem);
      return reply.code(problem.status).headers(headers).send(body);
    };

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
      void reply.header('cache-control', 'no-store');
      return answer(request, reply, { status, error: body.error, description: body.error_description });
    });

    app.setNotFoundHandler(async (request, reply) => {
      const path = request.url.split('?')[0] ?? '';
      const allowed = options.methodsByPath.get(path);
      const shown = shownPath(path);
      if (allowed) void reply.header('allow', allowed.join(', '));
      const problem = allowed
        ? { status: 405, error: 'invalid_request', description: `${request.method} is not allowed on ${shown}; use ${allowed.join(' or ')}` }
        : { status: 404, error: 'not_found', description: `nothing at ${request.method} ${shown}` };
      return answer(request, reply, { ...problem, onPage: false });
    });
    done();
  },
  { name: 'error-handling', fastify: '5.x', dependencies: ['@fastify/view'] },
);

/**
 * Fastify's `frameworkErrors`: a URL it cannot route, for a bad percent-encoding or a path parameter longer
 * than `maxParamLength`. No hook runs for such a request, so the security headers are set here. The answer
 * never repeats the path, which may be kilobytes long.
 */
export function frameworkErrorHandler(forms: ErrorForms, securityHeaders: readonly (readonly [string, string])[], observe: ObserveUnrouted) {
  return (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void => {
    const problem =
      error.code === 'FST_ERR_BAD_URL'
        ? { status: 400, error: 'invalid_request', description: 'the path has an invalid percent-encoding' }
        : error.code === 'FST_ERR_MAX_PARAM_LENGTH'
          ? { status: 400, error: 'invalid_request', description: 'a segment of the path is longer than this server accepts' }
          : { status: 500, error: 'server_error', description: 'the server could not complete the request' };
    if (problem.status >= 500) request.log.error({ err: error }, 'request failed');
    observe(request.log, { method: request.method, url: request.url, ip: request.ip, status: problem.status, error: problem.error, description: problem.description, seconds: reply.elapsedTime / 1000 });
    for (const [name, value] of securityHeaders) void reply.header(name, value);
    void reply.header('x-request-id', request.id).header('cache-control', 'no-store').code(problem.status);
    void errorAnswer(request.server, forms, { url: request.url, accept: request.headers.accept, requestId: request.id }, problem).then(
      ({ headers, body }) => reply.headers(headers).send(body),
      (renderError: unknown) => {
        request.log.error({ err: renderError }, 'error page failed');
        const { headers, body } = oauthAnswer(problem);
        reply.headers(headers).send(body);
      },
    );
  };
}

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
