import { errors, type KoaContextWithOIDC } from 'oidc-provider';

import type { Config } from '../config/config.js';
import { idpParamProblem, requestedIdp, tieredCommunities } from '../udap/tiered-oauth.js';

/**
 * `extraParams.idp` (HL7 UDAP Security IG §6, Client Authorization Request to Data Holder): with the `udap`
 * scope, the base URL of the identity provider the app prefers. Where Tiered OAuth is on, a value that is no
 * such URL is refused before any page (`invalid_request`, by redirect); whether the IdP is trusted is decided
 * by the interaction (src/interactions/tiered-oauth.ts), which answers `invalid_idp`. Where it is off, `idp`
 * is ignored and the person signs in here, as the IG allows ("authenticate the user with … its own IdP").
 */
export function validateIdpParam(config: Config, ctx: KoaContextWithOIDC, value: string | undefined): void {
  if (ctx.oidc.route !== 'authorization' || !tieredCommunities(config.udap).length) return;
  const idp = requestedIdp(ctx.oidc.params?.scope, value);
  if (idp === undefined) return;
  const problem = idpParamProblem(idp, config.outboundAllowPrivate);
  if (problem) throw new errors.InvalidRequest(problem);
}
