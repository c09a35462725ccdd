import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';

import { oidcOf } from './context.js';

interface DetailState {
  clientAuthProblem?: string;
  errorDetail?: string;
}

/**
 * oidc-provider answers every client authentication failure with the same `client authentication failed`
 * and keeps the reason in `error_detail`, which only its error events see. SMART clients need the reason to
 * fix their assertion or registration, so it is added to the response's `error_description`. The reasons
 * are about the request's own credentials (a wrong secret says so, never what the right one is).
 */
export function exposeClientAuthDetails(provider: Provider): void {
  for (const event of ['grant.error', 'introspection.error', 'revocation.error', 'userinfo.error']) {
    (provider as unknown as NodeJS.EventEmitter).on(event, (ctx: KoaContextWithOIDC, error: { error?: string; error_detail?: string }) => {
      if (error.error === 'invalid_client' && error.error_detail) (ctx.state as DetailState).errorDetail = error.error_detail;
    });
  }
  provider.use(async (ctx, next) => {
    await next();
    const body = ctx.body as { error?: string; error_description?: string } | undefined;
    if (!oidcOf(ctx) || body?.error !== 'invalid_client') return;
    const state = ctx.state as DetailState;
    const detail = state.clientAuthProblem ?? state.errorDetail;
    if (detail) body.error_description = `client authentication failed: ${detail}`;
  });
}
