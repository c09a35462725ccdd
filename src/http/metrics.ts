import { createServer, type Server } from 'node:http';

import type { FastifyInstance } from 'fastify';

import type { Metrics } from '../observability/metrics.js';
import { bearerToken, sameSecret } from '../security/bearer.js';

/**
 * `/metrics` on the server's own port, for whoever presents METRICS_TOKEN as a Bearer token (RFC 6750 §3
 * for the refusal): the counts say which clients get tokens and how often, which is not for everyone.
 */
export async function metricsRoute(app: FastifyInstance, { metrics, token }: { readonly metrics: Metrics; readonly token: string }): Promise<void> {
  app.get('/metrics', { schema: { hide: true } }, async (request, reply) => {
    void reply.header('cache-control', 'no-store');
    const presented = bearerToken(request.headers.authorization);
    if (!presented || !sameSecret(presented, token)) {
      return reply
        .code(401)
        .header('www-authenticate', `Bearer realm="metrics"${presented ? ', error="invalid_token"' : ''}`)
        .send({ error: 'invalid_token', error_description: 'send Authorization: Bearer with METRICS_TOKEN' });
    }
    return reply.type(metrics.contentType).send(await metrics.render());
  });
}

/**
 * `/metrics` on a port of its own (METRICS_PORT), without a token: that port is meant to be reachable by the
 * scraper only (a private interface, a network policy). Anything else there is 404.
 */
export async function listenForMetrics(metrics: Metrics, host: string, port: number): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('metrics are at GET /metrics\n');
      return;
    }
    metrics.render().then(
      (text) => res.writeHead(200, { 'content-type': metrics.contentType, 'cache-control': 'no-store' }).end(text),
      () => res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics could not be collected\n'),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host }, resolve);
  });
  return server;
}
