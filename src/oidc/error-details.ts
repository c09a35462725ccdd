import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';

import { oidcOf, stateOf } from './context.js';

/** The errors whose reason oidc-provider hides behind a fixed description. */
const DETAILED: Record<string, string> = { invalid_client: 'client authentication failed', invalid_grant: 'grant request is invalid' };

/**
 * oidc-provider answers every client authentication failure with `client authentication failed`, and every
 * unusable code or refresh token with `grant request is invalid`, keeping the reason in `error_detail`,
 * which only its error events see. A client developer needs the reason to fix their assertion, their
 * registration or their token handling, so it is added to the response's `error_description`. The reasons
 * are about the request's own credentials (a wrong secret says so, never what the right one is).
 */
export function exposeErrorDetails(provider: Provider): void {
  for (const event of ['grant.error', 'introspection.error', 'revocation.error']) {
    (provider as unknown as NodeJS.EventEmitter).on(event, (ctx: KoaContextWithOIDC, error: { error?: string; error_detail?: string }) => {
      if (error.error && error.error in DETAILED && error.error_detail) stateOf(ctx).errorDetail = error.error_detail;
    });
  }
  provider.use(async (ctx, next) => {
    await next();
    const body = ctx.body as { error?: string; error_description?: string } | undefined;
    const prefix = body?.error === undefined ? undefined : DETAILED[body.error];
    if (!oidcOf(ctx) || !body || !prefix || body.error_description !== prefix) return;
    const state = stateOf(ctx);
    const detail = body.error === 'invalid_client' ? (state.clientAuthProblem ?? state.errorDetail) : state.errorDetail;
    if (detail) body.error_description = `${prefix}: ${detail}`;
  });
}
