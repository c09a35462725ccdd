import type { KoaContextWithOIDC } from 'oidc-provider';

/**
 * `ctx.oidc` exists only once a provider route matched (lib/helpers/initialize_app.js), although the types
 * declare it always present; middleware that runs for every request must not assume it.
 */
export function oidcOf(ctx: object): KoaContextWithOIDC['oidc'] | undefined {
  return (ctx as { oidc?: KoaContextWithOIDC['oidc'] }).oidc;
}
