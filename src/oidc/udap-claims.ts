import { errors, type KoaContextWithOIDC } from 'oidc-provider';

import { UDAP_ISS_PROPERTY } from '../smart/client-rules.js';
import { B2B_KEY, B2bError, checkB2bExtension } from '../smart/udap/b2b.js';
import { oidcOf, stateOf } from './context.js';

/**
 * HL7 UDAP Security IG §5.2.1.1: a UDAP client's client_credentials request carries the `hl7-b2b`
 * authorization extension in its authentication token; the validated object travels with the token as
 * `extensions: {"hl7-b2b": {…}}` among its extra claims, so introspection returns it and the gateway can read
 * it from the stored token. A missing or bad one is `invalid_grant` (with the `consent_required` hint, b2b.ts,
 * for a consent the community requires).
 */
export function udapTokenClaims(ctx: KoaContextWithOIDC, token: { kind: string }): { extensions: Record<string, unknown> } | undefined {
  if (token.kind !== 'ClientCredentials') return undefined;
  const client = oidcOf(ctx)?.client as unknown as Record<string, unknown> | undefined;
  if (typeof client?.[UDAP_ISS_PROPERTY] !== 'string') return undefined;
  const assertion = stateOf(ctx).udapAssertion;
  if (!assertion) throw new errors.InvalidGrant('a UDAP client authenticates with a certificate (x5c) for client_credentials');
  try {
    const b2b = checkB2bExtension(assertion.claims.extensions, assertion.policy);
    return { extensions: { [B2B_KEY]: b2b } };
  } catch (error) {
    if (!(error instanceof B2bError)) throw error;
    if (error.extensions) stateOf(ctx).errorExtensions = error.extensions;
    throw new errors.InvalidGrant(error.message);
  }
}
