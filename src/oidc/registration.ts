import type { KoaContextWithOIDC } from 'oidc-provider';

import type { AuditLog } from '../audit/audit.js';
import { toRfc7591Metadata } from '../smart/client-rules.js';
import { oidcOf, stateOf } from './context.js';

const ROUTES = new Set(['registration', 'client', 'client_update', 'client_delete']);

/**
 * Dynamic registration answers in RFC 7591's names (`scope`, `jwks_uri`: oidc-provider holds them under ours),
 * and every change a client makes to its own registration is audited: created, updated (with what widened,
 * and whether that sent it back for approval), deleted.
 */
export function registrationResponse(audit: AuditLog) {
  return async (ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> => {
    await next();
    const oidc = oidcOf(ctx);
    if (!oidc || !ROUTES.has(oidc.route) || ctx.status >= 400) return;
    const param = (ctx.params as Record<string, unknown> | undefined)?.clientId;
    const clientId = oidc.client?.clientId ?? (typeof param === 'string' ? param : undefined);
    const base = { actorType: 'client' as const, actorId: clientId, clientId, sourceIp: ctx.ip, requestId: ctx.response.get('x-request-id') || undefined };
    if (oidc.route === 'client_delete') {
      await audit.record({ ...base, type: 'client.deleted', details: { by: 'registration management (RFC 7592)' } });
      return;
    }
    if (!ctx.body || typeof ctx.body !== 'object') return;
    const body = toRfc7591Metadata(ctx.body as Record<string, unknown>);
    ctx.body = body;
    if (oidc.route === 'registration' && ctx.status === 201) {
      const id = typeof body.client_id === 'string' ? body.client_id : undefined;
      await audit.record({
        ...base,
        actorType: 'anonymous',
        actorId: undefined,
        clientId: id,
        type: 'client.registered',
        details: { client_name: body.client_name, token_endpoint_auth_method: body.token_endpoint_auth_method, scope: body.scope },
      });
    } else if (oidc.route === 'client_update') {
      const update = stateOf(ctx).clientUpdate;
      await audit.record({ ...base, type: 'client.updated', details: { by: 'registration management (RFC 7592)', widened: update?.widened ?? [], status: update?.status } });
    }
  };
}
