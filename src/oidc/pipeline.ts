import type { Kysely } from 'kysely';
import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Logger } from 'pino';

import type { AuditLog } from '../audit/audit.js';
import type { DB } from '../db/schema.js';
import { recordOutcome } from '../observability/request-outcome.js';
import { inSpan, SpanKind, tracingEnabled } from '../observability/tracing.js';
import { JWKS_MAX_AGE_SECONDS } from '../smart/profile.js';
import { writeDeferred } from './adapters/payload.js';
import { auditMiddleware } from './audit-hooks.js';
import { oidcOf, type ErrorPage } from './context.js';
import { recordErrorDetails, withErrorDetails } from './error-details.js';
import { bearerIntrospection, inactiveForForeignTokens } from './introspection.js';
import { registrationResponse } from './registration.js';
import { offlineAccessPrompt, tokenResponseMiddleware } from './smart-launch.js';
import { databaseFaultResponses } from './unavailable.js';

type Middleware = (ctx: KoaContextWithOIDC, next: () => Promise<void>) => Promise<void>;

export interface PipelineDeps {
  readonly log: Logger;
  readonly audit: AuditLog;
  readonly db: Kysely<DB>;
  /** A refresh token's period and a grant's, in seconds (config.ts, grantLifetimeSeconds). */
  readonly lifetime: { readonly refresh: number; readonly grant: number };
  /** Introspections alike are audited as one row per this many seconds, with their count (audit-hooks.ts). */
  readonly introspectionAuditWindowSeconds: number;
  /** Sandbox mode: the launcher's simulated errors apply. */
  readonly sandbox: boolean;
  /** The Authorization header Bearer-token introspection continues with (introspection.ts). */
  readonly bearerAuthorization: string;
  readonly renderErrorPage: (page: ErrorPage) => Promise<string>;
}

/**
 * Everything of ours that runs around oidc-provider's own handling of a request, in the order it runs.
 * Koa runs middleware as an onion: each `use` wraps the ones after it, so the code before `await next()`
 * runs top to bottom and the code after it bottom to top. Routes are oidc-provider's route names
 * (`ctx.oidc.route`); a middleware that acts before routing matches on the method and path instead.
 *
 *  0. recordRefusal              every route, after: an OAuth error in the answer is kept for the request's
 *                                 log line (errors rendered as pages or redirects: the error events below).
 *  1. closeAfterUnreadBody        every route, after: a body left unread (refused) closes the connection.
 *  2. databaseFaultResponses      every route, around: a database fault anywhere inside, ours included,
 *                                 becomes 503 `temporarily_unavailable`. Outermost but for 1, so that it
 *                                 catches what the middlewares below throw after oidc-provider answered.
 *  3. writeDeferredWrites        authorization, resume, after: writes that waited for a session save that did
 *                                 not come are made (they go with it, src/oidc/adapters/payload.ts). Inside
 *                                 2, so that a fault here becomes 503.
 *  4. cachingHeaders              jwks, discovery: public for JWKS_MAX_AGE_SECONDS; token, introspection:
 *                                 `Pragma: no-cache` besides oidc-provider's `Cache-Control: no-store`.
 *  5. auditMiddleware             token, introspection, revocation, after: one audit event per answer,
 *                                 committed before the answer leaves. Above 6–10, so it sees their final
 *                                 body (the launch context added, an inactive answer rewritten).
 *  6. withErrorDetails            every route, after: oidc-provider's fixed descriptions get their reason.
 *  7. bearerIntrospection         POST /introspect, before: a Bearer token with `introspect` authenticates;
 *                                 before routing, since oidc-provider authenticates the client itself.
 *  8. inactiveForForeignTokens    introspection, after: a JWT that is no access token is `{"active": false}`.
 *  9. offlineAccessPrompt         GET /auth, before: `offline_access` survives (prompt=consent added).
 * 10. tokenResponseMiddleware     token, after: the launch context joins the token response; the grant's
 *                                 use (a refresh renews it) is kept for 5 to write with the event.
 * 11. registrationResponse        registration and its management, after: RFC 7591 names in the answer,
 *                                 and the registration audited.
 *
 * With tracing on, each step runs in a span of its own (`oidc <step>`), nested as the onion nests; the
 * innermost holds oidc-provider's own handling.
 */
export function installPipeline(provider: Provider, deps: PipelineDeps): void {
  const middleware: Record<string, Middleware> = {
    recordRefusal,
    closeAfterUnreadBody,
    databaseFaultResponses: databaseFaultResponses(deps.log, deps.renderErrorPage),
    writeDeferredWrites,
    cachingHeaders,
    auditMiddleware: auditMiddleware(deps.db, deps.audit, deps.introspectionAuditWindowSeconds),
    withErrorDetails,
    bearerIntrospection: bearerIntrospection(provider, deps.bearerAuthorization),
    inactiveForForeignTokens: inactiveForForeignTokens(),
    offlineAccessPrompt: offlineAccessPrompt(),
    tokenResponseMiddleware: tokenResponseMiddleware(deps.db, deps.lifetime, deps.sandbox),
    registrationResponse: registrationResponse(deps.audit),
  };
  const tracing = tracingEnabled();
  for (const [name, m] of Object.entries(middleware)) provider.use(tracing ? traced(name, m) : m);

  recordErrorDetails(provider);
  // Errors oidc-provider renders as a page or sends back by redirect leave no OAuth error body behind.
  for (const event of ERROR_EVENTS) {
    (provider as unknown as NodeJS.EventEmitter).on(event, (ctx: KoaContextWithOIDC, error: { error?: string; error_description?: string; error_detail?: string }) => {
      if (!error.error) return;
      recordOutcome(ctx.req, { error: error.error, description: error.error_detail ? `${error.error_description ?? ''}: ${error.error_detail}` : error.error_description });
    });
  }
  provider.on('server_error', (ctx: KoaContextWithOIDC, error: Error) => {
    deps.log.error({ err: error, route: oidcOf(ctx)?.route }, 'oidc-provider server error');
  });
  // Koa's own error channel: whatever oidc-provider's handlers did not answer themselves, answered by Koa. A
  // request Koa refuses as malformed (bad percent-encoding, say) is the client's error, not ours.
  (provider as unknown as NodeJS.EventEmitter).on('error', (error: Error & { status?: number; expose?: boolean; code?: string }) => {
    if (error.expose || (error.status !== undefined && error.status < 500) || CLIENT_GONE.has(error.code ?? '')) {
      deps.log.info({ err: { type: error.name, code: error.code, message: error.message }, status: error.status }, 'request refused or abandoned: a client error');
    } else {
      deps.log.error({ err: error }, 'unhandled error in the OAuth core');
    }
  });
}

/** oidc-provider's error events of the endpoints it serves here (lib/actions). */
const ERROR_EVENTS = [
  'authorization.error', 'grant.error', 'introspection.error', 'revocation.error', 'jwks.error', 'discovery.error',
  'registration_create.error', 'registration_read.error', 'registration_update.error', 'registration_delete.error',
  'end_session.error', 'end_session_confirm.error', 'end_session_success.error',
];

async function recordRefusal(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
  await next();
  const body = ctx.body as { error?: unknown; error_description?: unknown } | undefined;
  if (ctx.status >= 400 && typeof body?.error === 'string') {
    recordOutcome(ctx.req, { error: body.error, description: typeof body.error_description === 'string' ? body.error_description : undefined });
  }
}

/** The step in a span of its own, named after it, with the oidc-provider route it served. */
function traced(name: string, step: Middleware): Middleware {
  return (ctx, next) =>
    inSpan(`oidc ${name}`, SpanKind.INTERNAL, {}, async (span) => {
      await step(ctx, next);
      const route = oidcOf(ctx)?.route;
      if (route) span.setAttribute('oidc.route', route);
    });
}

/** Errors that mean the client went away mid-request: nothing for an operator to fix. */
const CLIENT_GONE = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE', 'ERR_STREAM_DESTROYED']);

/** oidc-provider's most for a request body (lib/shared/selective_body.js), and its words when a body is not read. */
const BODY_LIMIT_KIB = 56;
const UNPARSED = 'failed to parse the request body';

/**
 * A body oidc-provider refused (over its 56 KiB, of a type the endpoint does not take) is left partly
 * unread: the rest would stall the connection until its keep-alive timeout, so the answer closes it. One
 * it stopped reading at the limit it answers "failed to parse the request body", as for a malformed one:
 * that answer becomes 413 naming the limit (a malformed body is read whole, so `complete` tells them apart).
 */
async function closeAfterUnreadBody(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
  try {
    await next();
  } finally {
    // `complete` is undefined on requests injected without a connection (light-my-request).
    const { complete } = ctx.req as { complete?: boolean };
    if (complete === false && !ctx.headerSent) {
      ctx.set('connection', 'close');
      ctx.req.resume();
      const body = ctx.body as { error?: unknown; error_description?: unknown } | undefined;
      if (body?.error === 'invalid_request' && body.error_description === UNPARSED) {
        ctx.status = 413;
        body.error_description = `the request body is larger than ${BODY_LIMIT_KIB} KiB, the most this endpoint reads`;
      }
    }
  }
}

async function writeDeferredWrites(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
  await next();
  await writeDeferred(ctx);
}

async function cachingHeaders(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
  await next();
  const route = oidcOf(ctx)?.route;
  if (route === 'jwks' || route === 'discovery') ctx.set('cache-control', `public, max-age=${JWKS_MAX_AGE_SECONDS}`);
  // SMART App Launch 2.2 §Token response (and Inferno) want both; oidc-provider sets only Cache-Control.
  if (route === 'token' || route === 'introspection') ctx.set('pragma', 'no-cache');
}
