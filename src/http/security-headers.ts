import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';

export interface SecurityHeadersOptions {
  /** HSTS only makes sense when the public URL is https. */
  readonly https: boolean;
}

/**
 * Security headers on every response, including the ones oidc-provider writes itself: they are set on the
 * raw response before any handler runs, so they survive `reply.hijack()`. A route that needs another value
 * (a page an EHR may frame) sets its own header, which takes precedence.
 *
 * No `form-action` directive: Chromium applies it to the redirect chain after a form post, which would block
 * the redirect from our consent page back to the app's redirect_uri.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: https:",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** The headers themselves, for the answers written before any hook runs (src/http/errors.ts, connections.ts). */
export function securityHeaderList(options: SecurityHeadersOptions): readonly (readonly [string, string])[] {
  const headers: [string, string][] = [
    ['content-security-policy', CONTENT_SECURITY_POLICY],
    ['x-content-type-options', 'nosniff'],
    ['x-frame-options', 'DENY'],
    ['referrer-policy', 'no-referrer'],
  ];
  if (options.https) headers.push(['strict-transport-security', 'max-age=63072000; includeSubDomains']);
  return headers;
}

export const securityHeaders = fp(
  (app: FastifyInstance, options: SecurityHeadersOptions, done: (err?: Error) => void) => {
    const headers = securityHeaderList(options);
    app.addHook('onRequest', (request, reply, next) => {
      for (const [name, value] of headers) reply.raw.setHeader(name, value);
      reply.raw.setHeader('x-request-id', request.id);
      next();
    });
    done();
  },
  { name: 'security-headers', fastify: '5.x' },
);
