import type { IncomingMessage } from 'node:http';

/**
 * oidc-provider builds every URL it returns, and decides the cookies' Secure flag, from the request's
 * X-Forwarded-* headers (we set `provider.proxy`). They are overwritten here with the configured issuer's
 * scheme and host, and the client address Fastify determined under TRUST_PROXY: a spoofed Host or
 * X-Forwarded-Host must never change the endpoints we advertise.
 */
export function forwardAsIssuer(raw: IncomingMessage, issuer: URL, clientIp?: string): void {
  raw.headers['x-forwarded-proto'] = issuer.protocol.slice(0, -1);
  raw.headers['x-forwarded-host'] = issuer.host;
  if (clientIp !== undefined) raw.headers['x-forwarded-for'] = clientIp;
}
