import type { Span } from '@opentelemetry/api';
import { context, trace } from '@opentelemetry/api';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';

import { failSpan, SpanKind, startSpan, withRequestId } from '../observability/tracing.js';

/**
 * A server span per request (registered only with tracing on), active for everything the request runs:
 * our hooks and handlers, oidc-provider behind the bridge, the queries. Named after the route pattern; the
 * path is recorded without its query string, where secrets travel (a `code`, a `launch`).
 */
export const traceRequests = fp(
  (app: FastifyInstance, _options: object, done: (err?: Error) => void) => {
    const spans = new WeakMap<FastifyRequest, Span>();
    app.addHook('onRequest', (request, _reply, next) => {
      const parent = withRequestId(context.active(), request.id);
      const route = request.routeOptions.url;
      const span = startSpan(route ? `${request.method} ${route}` : request.method, SpanKind.SERVER, {
        'http.request.method': request.method,
        'url.path': request.url.split('?')[0] ?? '',
        'client.address': request.ip,
        ...(route ? { 'http.route': route } : {}),
      }, parent);
      spans.set(request, span);
      // Whatever runs after this hook (the next hooks, the handler) runs in the span's context.
      context.with(trace.setSpan(parent, span), next);
    });
    app.addHook('onResponse', async (request, reply) => {
      const span = spans.get(request);
      if (!span) return;
      span.setAttribute('http.response.status_code', reply.statusCode);
      if (reply.statusCode >= 500) failSpan(span, new Error(`status ${reply.statusCode}`));
      span.end();
    });
    done();
  },
  { name: 'trace-requests', fastify: '5.x' },
);
