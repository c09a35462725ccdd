import type Provider from 'oidc-provider';
import type { errors, KoaContextWithOIDC } from 'oidc-provider';

import { oidcOf, stateOf, type AuditFailure } from './context.js';

/** The errors whose reason oidc-provider hides behind a fixed description. */
const DETAILED: Record<string, string> = { invalid_client: 'client authentication failed', invalid_grant: 'grant request is invalid' };

/**
 * oidc-provider's own words for the reuse of a single-use value (lib/helpers/grant_source.js,
 * lib/actions/grants/refresh_token.js), which the audit trail records as attacks rather than plain failures.
 * Our adapters name the concurrent cases themselves (adapter.ts).
 */
const REUSE: Readonly<Record<string, AuditFailure>> = {
  'authorization code already consumed': 'code.reused',
  'refresh token already used': 'refresh_token.reused',
};

/**
 * oidc-provider answers every client authentication failure with `client authentication failed`, and every
 * unusable code or refresh token with `grant request is invalid`, keeping the reason in `error_detail`,
 * which only its error events see. Those events record the reason for the request (and, for a reuse, its
 * audit type).
 */
export function recordErrorDetails(provider: Provider): void {
  for (const event of ['grant.error', 'introspection.error', 'revocation.error']) {
    (provider as unknown as NodeJS.EventEmitter).on(event, (ctx: KoaContextWithOIDC, error: { error?: string; error_detail?: string }) => {
      if (!error.error || !(error.error in DETAILED) || !error.error_detail) return;
      const state = stateOf(ctx);
      state.errorDetail = error.error_detail;
      state.auditFailure ??= REUSE[error.error_detail];
    });
  }
}

const GRANT_TYPE_NOT_ALLOWED = 'requested grant type is not allowed for this client';

/**
 * A client developer needs the reason to fix their assertion, their registration or their token handling,
 * so it is added to the response's `error_description`. The reasons are about the request's own credentials
 * (a wrong secret says so, never what the right one is).
 */
export async function withErrorDetails(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
  await next();
  const body = ctx.body as { error?: string; error_description?: string; extensions?: Record<string, unknown> } | undefined;
  // RFC 6749 §5.2: a client authenticated but not allowed this grant type is `unauthorized_client`;
  // oidc-provider says `invalid_request` (lib/actions/token.js, allowedGrantTypeCheck).
  if (body?.error === 'invalid_request' && body.error_description === GRANT_TYPE_NOT_ALLOWED && oidcOf(ctx)?.route === 'token') body.error = 'unauthorized_client';
  const extensions = stateOf(ctx).errorExtensions;
  if (extensions && body?.error !== undefined) body.extensions = extensions;
  const prefix = body?.error === undefined ? undefined : DETAILED[body.error];
  if (!oidcOf(ctx) || !body || !prefix || body.error_description !== prefix) return;
  const state = stateOf(ctx);
  const detail = body.error === 'invalid_client' ? (state.clientAuthProblem ?? state.errorDetail) : state.errorDetail;
  if (detail) body.error_description = `${prefix}: ${detail}`;
}

/**
 * Answers a grant refusal our code raises after oidc-provider has answered (a code or refresh token another
 * request used first), as oidc-provider and {@link withErrorDetails} answer one: its description with the reason,
 * which the request's audit event records too.
 */
export function answerGrantRefusal(ctx: KoaContextWithOIDC, refusal: InstanceType<typeof errors.InvalidGrant>): void {
  ctx.status = refusal.statusCode;
  ctx.body = { error: refusal.error, error_description: `${refusal.error_description}: ${refusal.error_detail}` };
  stateOf(ctx).errorDetail = refusal.error_detail;
}
