import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

/**
 * A browser that opens the server by another loopback name than the issuer's (http://127.0.0.1:3000 when
 * ISSUER is http://localhost:3000, as the listening address reads) is sent to the issuer's origin: cookies,
 * the sample app's redirect URI and the CORS origin are the issuer's, and an authorization started on the
 * other name ends in invalid_redirect_uri. Page navigations only (GET or HEAD that accept HTML); an API
 * client's request is answered where it is sent.
 */
export const loopbackOrigin = fp(
  async (app: FastifyInstance, options: { issuer: string }) => {
    const issuer = new URL(options.issuer);
    if (!LOOPBACK.has(issuer.hostname)) return;
    app.addHook('onRequest', async (request, reply) => {
      if (request.method !== 'GET' && request.method !== 'HEAD') return;
      if (!(request.headers.accept ?? '').includes('text/html')) return;
      const host = URL.parse(`http://${request.headers.host ?? ''}`);
      if (!host || !LOOPBACK.has(host.hostname) || host.hostname === issuer.hostname || host.port !== issuer.port) return;
      return reply.redirect(`${issuer.origin}${request.url}`, 307);
    });
  },
  { name: 'loopback-origin' },
);
