import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

import { HttpProblem } from '../errors.js';
import type { ProviderHost } from '../oidc/provider-host.js';
import { PROVIDER_ENDPOINTS } from '../oidc/routes.js';
import { forwardAsIssuer } from './forwarded.js';
import { recordOutcome } from '../observability/request-outcome.js';
import { ROUTES } from '../smart/profile.js';
import { describeInputProblem, inputProblem } from '../security/text.js';

export interface ProviderRoutesOptions {
  readonly host: ProviderHost;
  /** The issuer's public URL: the only origin oidc-provider builds URLs for. */
  readonly issuer: string;
  /** The issuer's path, where oidc-provider is mounted. */
  readonly basePath: string;
  readonly registration: boolean;
  /**
   * Counts a dynamic registration against its source's allowance; the seconds to wait when over it. Checked
   * before oidc-provider reads the request, so a flood costs one statement per request.
   */
  readonly admitRegistration?: ((request: FastifyRequest) => Promise<number | undefined>) | undefined;
  /**
   * UDAP trusted registration (src/udap/registration.ts): given the body of a registration request, its
   * answer when the body is a UDAP one (it carries `software_statement`), undefined otherwise.
   */
  readonly udapRegistration?: ((request: FastifyRequest, body: unknown) => Promise<{ status: number; body: Record<string, unknown> } | undefined>) | undefined;
}

/**
 * Hands oidc-provider's endpoints to its Koa callback from ordinary Fastify routes, so that request ids,
 * logging, security headers and 404s stay Fastify's. Registered with the issuer's path as prefix.
 *
 * Bodies are left unread (oidc-provider reads at most 56 KiB itself), and the forwarded headers are the
 * configured issuer's (forwarded.ts).
 */
export async function providerRoutes(app: FastifyInstance, options: ProviderRoutesOptions): Promise<void> {
  const issuer = new URL(options.issuer);
  const mountPath = options.basePath;

  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => done(null, undefined));

  const handler = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    let raw = request.raw as FastifyRequest['raw'] & { originalUrl?: string };
    if (options.udapRegistration && raw.method === 'POST' && request.routeOptions.url === `${mountPath}${ROUTES.registration}`) {
      const read = await readBody(raw);
      if (read === undefined) throw HttpProblem.invalid('a registration request must be a JSON body of at most 56 KiB');
      const answer = await options.udapRegistration(request, parseJson(raw, read));
      if (answer) {
        const { error, error_description: description } = answer.body;
        if (typeof error === 'string') recordOutcome(raw, { error, description: typeof description === 'string' ? description : undefined });
        void reply.code(answer.status).header('cache-control', 'no-store').header('pragma', 'no-cache').send(answer.body);
        return;
      }
      if (!options.registration) throw new HttpProblem(400, 'invalid_request', 'only UDAP registrations (with a software_statement) are accepted here');
      // Not UDAP: oidc-provider reads the body as it came, from a replay of the bytes already read.
      raw = replayOf(raw, read);
    }
    if (raw.method === 'POST' && request.routeOptions.url === `${mountPath}${ROUTES.authorization}`) {
      const query = await authorizationFormAsQuery(raw);
      if (query === undefined) {
        throw HttpProblem.invalid('an authorization request by POST must be an application/x-www-form-urlencoded form of at most 56 KiB');
      }
      // The form becomes a query, which the input guard saw only as an unread body.
      const unfit = inputProblem(Object.fromEntries(new URLSearchParams(query)), 'body');
      if (unfit) throw HttpProblem.invalid(describeInputProblem(unfit));
      raw.method = 'GET';
      raw.url = `${mountPath}${ROUTES.authorization}?${query}`;
      delete raw.headers['content-type'];
      delete raw.headers['content-length'];
      delete raw.headers['transfer-encoding'];
    }
    // The resume endpoint (/auth/:uid) takes its parameters from the interaction, never from a query string;
    // oidc-provider's error handler for it would read a client_id there and then fail on parameters that do
    // not exist (a 500), so none reaches it.
    if (request.routeOptions.url === `${mountPath}${ROUTES.authorization}/:uid`) raw.url = raw.url?.split('?')[0];
    forwardAsIssuer(raw, issuer, request.ip);
    // oidc-provider derives its mount path from originalUrl minus url (lib/helpers/oidc_context.js).
    raw.originalUrl = raw.url;
    raw.url = (raw.url ?? '/').slice(mountPath.length) || '/';
    reply.hijack();
    // Koa answers every error itself (oidc-provider's handlers, then Koa's own), so nothing rejects here.
    void options.host.callback(raw, reply.raw);
  };

  const admitRegistration = options.admitRegistration;
  const limited = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (!admitRegistration || request.method !== 'POST') return;
    const retryAfter = await admitRegistration(request);
    if (retryAfter === undefined) return;
    // RFC 6585 §4; RFC 7591 defines no error code for it.
    void reply.code(429).header('retry-after', String(retryAfter)).header('cache-control', 'no-store').send({ error: 'too_many_requests', error_description: `too many registrations from this address; try again in ${retryAfter} s` });
  };

  for (const { path, methods, feature, noHead } of PROVIDER_ENDPOINTS) {
    const udapOnly = path === ROUTES.registration && options.udapRegistration !== undefined;
    if (feature === 'registration' && !options.registration && !udapOnly) continue;
    app.route({ method: noHead ? [...methods] : withHead(methods), url: path, handler, exposeHeadRoute: false, ...(path === ROUTES.registration ? { onRequest: limited } : {}) });
  }
}

/**
 * RFC 9110 §9.3.2: a server answers HEAD wherever it answers GET. oidc-provider's router takes HEAD as GET
 * and Koa leaves the body out, so HEAD goes to it as it came: the same checks, the same answer's headers.
 */
export function withHead<M extends string>(methods: readonly M[]): (M | 'HEAD')[] {
  return methods.flatMap((method) => (method === 'GET' ? [method, 'HEAD' as const] : [method]));
}

/** The JSON of a registration body; undefined when it is not JSON (oidc-provider answers for those). */
function parseJson(raw: IncomingMessage, body: Buffer): unknown {
  if (!/^application\/json\b/i.test(raw.headers['content-type'] ?? '')) return undefined;
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
}

/** The body read in full, or undefined past {@link MAX_BODY_BYTES}. */
async function readBody(raw: IncomingMessage): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  // Not destroyed on the early return: the 400 must still reach the client (and closes the connection).
  for await (const chunk of raw.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** The bodies read here (a registration, an authorization form): what any real one needs, with room. */
const MAX_BODY_BYTES = 56 * 1024;

/**
 * A request that reads as `raw` did, body included, for oidc-provider after we read the body ourselves
 * (its fallback for a consumed body would warn on the console). Koa reads the request line, headers and
 * socket from it; the answer still goes to the original response.
 */
function replayOf(raw: IncomingMessage, body: Buffer): IncomingMessage & { originalUrl?: string } {
  const replay = Readable.from([body]) as Readable & Record<string, unknown>;
  for (const name of ['headers', 'rawHeaders', 'method', 'url', 'httpVersion', 'httpVersionMajor', 'httpVersionMinor', 'socket', 'trailers'] as const) replay[name] = raw[name];
  replay.connection = raw.socket;
  replay.complete = true;
  return replay as unknown as IncomingMessage;
}

/**
 * SMART's `authorize-post`: oidc-provider accepts POST at the authorization endpoint only with
 * `SameSite=None` cookies, which browsers refuse without https, so the sandbox and plain-http deployments
 * could not offer it. The form is the same parameters as the query of a GET, so it is handed to
 * oidc-provider as that GET. A cross-site POST carries no SameSite=Lax session cookie, which only means
 * the user signs in again rather than reusing a session.
 */
async function authorizationFormAsQuery(raw: IncomingMessage): Promise<string | undefined> {
  if (!/^application\/x-www-form-urlencoded\b/i.test(raw.headers['content-type'] ?? '')) return undefined;
  const body = await readBody(raw);
  return body && new URLSearchParams(body.toString('utf8')).toString();
}
