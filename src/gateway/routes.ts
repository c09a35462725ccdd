import { parse as parseQueryString } from 'node:querystring';

import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';

import type { AuditLog } from '../audit/audit.js';
import type { Config, FhirUpstream } from '../config/config.js';
import type { DB } from '../db/schema.js';
import { HttpProblem } from '../errors.js';
import type { ProviderHost } from '../oidc/provider-host.js';
import type { SecretBox } from '../security/secret-box.js';
import { fhirR4Model } from '../smart/fhir/model.js';
import { Door } from './door.js';
import { FhirGateway, type GatewayResponse } from './gateway.js';
import { CORS_HEADERS, FHIR_JSON, GatewayProblem, operationOutcome } from './outcome.js';

/** Request bodies larger than this are refused (413): the gateway reads every body it checks. */
export const MAX_FHIR_BODY_BYTES = 16 * 1024 * 1024;

const PREFLIGHT_HEADERS = {
  ...CORS_HEADERS,
  'access-control-allow-methods': 'GET, POST, PUT, PATCH, DELETE',
  'access-control-allow-headers': 'Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Match, If-None-Exist, If-Modified-Since, X-Request-Id',
  'access-control-max-age': '600',
};

export interface GatewayRoutesOptions {
  readonly config: Config;
  readonly db: Kysely<DB>;
  readonly box: SecretBox;
  readonly host: ProviderHost;
  readonly audit: AuditLog;
  readonly log: Logger;
  /** The fronted bases with their upstreams, the embedded one resolved to where it listens. */
  readonly upstreams: readonly FhirUpstream[];
}

/**
 * Every path under each fronted FHIR base (FHIR_UPSTREAMS) goes to its gateway. Bodies are read here as
 * JSON (FHIR's media types and JSON Patch) or a form (a POST `_search`); anything else is refused with 415.
 * Every answer, refusals included, is a FHIR resource, readable by browser apps from any origin.
 */
export async function gatewayRoutes(app: FastifyInstance, options: GatewayRoutesOptions): Promise<void> {
  const { config } = options;
  if (!options.upstreams.length) return;
  const door = new Door({ db: options.db, box: options.box, issuer: config.issuer, clockSkewSeconds: config.clockSkewSeconds, verificationKeys: () => options.host.verificationKeys, sensitiveLabels: config.sensitiveSecurityLabels });
  const gateways = options.upstreams.map((upstream) => new FhirGateway(upstream, { config, door, model: fhirR4Model(), audit: options.audit, log: options.log }));
  app.addHook('onClose', async () => {
    await Promise.all(gateways.map((g) => g.close()));
  });

  app.removeAllContentTypeParsers();
  const jsonParser = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: MAX_FHIR_BODY_BYTES }, (request, body, done) => {
    const buffer = body as Buffer;
    const type = mediaType(request.headers['content-type']);
    if (!buffer.length) return done(null, undefined);
    if (type === 'application/x-www-form-urlencoded') return done(null, parseQueryString(buffer.toString('utf8')));
    if (type === undefined || type.endsWith('json') || type.endsWith('+json')) return jsonParser(request, buffer.toString('utf8'), done as never);
    done(new GatewayProblem(415, `Content-Type ${type} is not accepted: send application/fhir+json`), undefined);
  });

  app.setErrorHandler(async (error: FastifyError | HttpProblem | GatewayProblem, request, reply) => {
    const status = error instanceof GatewayProblem ? error.status : error instanceof HttpProblem ? error.statusCode : error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500;
    if (status >= 500) request.log.error({ err: error }, 'FHIR request failed');
    const message = status >= 500 ? 'the gateway could not complete the request' : 'code' in error && error.code === 'FST_ERR_CTP_BODY_TOO_LARGE' ? `the body is larger than ${MAX_FHIR_BODY_BYTES} bytes` : error.message;
    return send(reply, { status, headers: { 'cache-control': 'no-store' }, body: JSON.stringify(operationOutcome(status, message)) }, FHIR_JSON);
  });

  for (const gateway of gateways) {
    const basePath = new URL(gateway.base).pathname.replace(/\/$/, '');
    const handler = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
      if (request.method === 'OPTIONS') return reply.code(204).headers(PREFLIGHT_HEADERS).send();
      const url = request.url;
      const at = url.indexOf('?');
      const answer = await gateway.handle({
        // RFC 9110 §9.3.2: HEAD is a GET whose answer has no body. It is handled as the GET (the same token
        // check, access rules, filtering and audit event: what it tells, the status, ETag and length, is a
        // read); Node leaves the body out.
        method: request.method === 'HEAD' ? 'GET' : request.method,
        path: (at === -1 ? url : url.slice(0, at)).slice(basePath.length),
        query: at === -1 ? '' : url.slice(at + 1),
        headers: request.headers,
        body: request.body,
        contentType: mediaType(request.headers['content-type']),
        requestId: request.id,
        ip: request.ip,
      });
      return send(reply, answer);
    };
    app.all(basePath, handler);
    app.all(`${basePath}/*`, handler);
  }
}

function send(reply: FastifyReply, answer: GatewayResponse, type?: string): FastifyReply {
  void reply.code(answer.status).headers({ ...CORS_HEADERS, ...answer.headers });
  if (type) void reply.type(type);
  return answer.body === undefined ? reply.send() : reply.send(answer.body);
}

function mediaType(header: string | undefined): string | undefined {
  const type = header?.split(';')[0]?.trim().toLowerCase();
  return type ? type : undefined;
}
