import type { KoaContextWithOIDC } from 'oidc-provider';

import type { AuditLog } from '../audit/audit.js';
import { REGISTERED_JWKS_URI } from './client-auth.js';
import { oidcOf } from './context.js';
import { ALLOWED_SCOPE_PROPERTY } from './resource-server.js';

const ROUTES = new Set(['registration', 'client', 'client_update']);

/**
 * Dynamic registration answers in RFC 7591's names: `scope` (oidc-provider holds SMART scopes in our own
 * property) and `jwks_uri` (it sees the keys we fetched from it). New registrations are audited.
 */
export function registrationResponse(audit: AuditLog) {
  return async (ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> => {
    await next();
    const oidc = oidcOf(ctx);
    if (!oidc || !ROUTES.has(oidc.route) || !ctx.body || typeof ctx.body !== 'object' || 'error' in ctx.body) return;
    const { [ALLOWED_SCOPE_PROPERTY]: allowed, [REGISTERED_JWKS_URI]: registeredJwksUri, ...body } = ctx.body as Record<string, unknown>;
    if (typeof allowed === 'string') body.scope = allowed;
    if (typeof registeredJwksUri === 'string') {
      body.jwks_uri = registeredJwksUri;
      delete body.jwks;
    }
    ctx.body = body;
    if (oidc.route === 'registration' && ctx.status === 201) {
      await audit.record({
        type: 'client.registered',
        actorType: 'anonymous',
        clientId: typeof body.client_id === 'string' ? body.client_id : undefined,
        sourceIp: ctx.ip,
        requestId: ctx.response.get('x-request-id') || undefined,
        details: { client_name: body.client_name, token_endpoint_auth_method: body.token_endpoint_auth_method, scope: body.scope },
      });
    }
  };
}
