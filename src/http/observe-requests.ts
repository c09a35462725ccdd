import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { Logger } from 'pino';

import type { Metrics } from '../observability/metrics.js';
import { outcomeOf } from '../observability/request-outcome.js';
import { ROUTES } from '../smart/profile.js';

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
