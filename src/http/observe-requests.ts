import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { Logger } from 'pino';

import type { Metrics } from '../observability/metrics.js';
import { outcomeOf } from '../observability/request-outcome.js';
import { ROUTES } from '../smart/profile.js';
import { redactUrl, shownPath } from './logger.js';

export interface ObserveRequestsOptions {
  readonly basePath: string;
  readonly metrics: Metrics;
}

/**
 * One log line per answered request, and its metrics. Health probes, `/metrics` and the token and
 * introspection endpoints are logged at debug when they succeed: they are the bulk of the traffic, and the
 * audit trail and the metrics already record each of them. A refused request (an OAuth error, whatever its
 * status) is logged at info with the error and its description, so that a client developer's mistake
 * (unknown client, redirect URI mismatch, invalid scope) can be found in the log by its request id.
 */
export const observeRequests = fp(
  (app: FastifyInstance, { basePath, metrics }: ObserveRequestsOptions, done: (err?: Error) => void) => {
    const quiet = new Set(['/healthz', '/readyz', '/metrics', ROUTES.token, ROUTES.introspection].map((path) => `${basePath}${path}`));
    app.addHook('onResponse', async (request, reply) => {
      const route = request.routeOptions.url;
      const status = reply.statusCode;
      metrics.httpRequest(route ?? '(unmatched)', request.method, status, reply.elapsedTime / 1000);
      const outcome = outcomeOf(request.raw);
      const level = outcome || status >= 400 || route === undefined || !quiet.has(route) ? 'info' : 'debug';
      // Fastify's logger is the pino logger the app was built with (src/app.ts).
      if (!(request.log as unknown as Logger).isLevelEnabled(level)) return;
      request.log[level](
        {
          req: request,
          res: { statusCode: status },
          responseTime: Math.round(reply.elapsedTime * 10) / 10,
          ...(outcome ? { error: outcome.error, reason: outcome.description } : {}),
        },
        'request completed',
      );
    });
    done();
  },
  { name: 'observe-requests', fastify: '5.x' },
);

/** What the route label of a request answered before routing says (no route pattern exists for it). */
export const UNROUTED = '(unrouted)';

/** A request answered before any route or hook saw it; see {@link observeUnrouted}. */
export interface Unrouted {
  /** The method, where it is known (Node refuses some requests before it has read one). */
  readonly method: string | undefined;
  readonly url: string;
  readonly ip: string | undefined;
  readonly status: number;
  readonly error: string;
  readonly description: string;
  readonly seconds: number;
}

/**
 * The log line and metrics of a request answered before routing: a URL Fastify cannot route (frameworkErrors)
 * or a request Node refused (malformed, headers too large, too slow). No hook runs for those, so without this
 * they would leave no trace. Logged at info as any refused request is, with at most 200 characters of the URL
 * (it may be kilobytes long) and its secret query values redacted; counted under the route `(unrouted)`.
 */
export type ObserveUnrouted = (log: FastifyBaseLogger, request: Unrouted) => void;

export function observeUnrouted(metrics: Metrics): ObserveUnrouted {
  return (log, { method, url, ip, status, error, description, seconds }) => {
    metrics.httpRequest(UNROUTED, method ?? 'OTHER', status, seconds);
    log.info({ req: { method, url: redactUrl(shownPath(url)), ip }, res: { statusCode: status }, error, reason: description }, 'request completed');
  };
}
