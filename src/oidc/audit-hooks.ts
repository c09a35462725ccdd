import type { Kysely } from 'kysely';
import { errors, type KoaContextWithOIDC } from 'oidc-provider';

import type { AuditEvent, AuditEventType, AuditLog } from '../audit/audit.js';
import { isUsedAlready } from '../db/faults.js';
import type { DB } from '../db/schema.js';
import { refuseReuse, takeDeferredConsumes, takeDeferredTokens } from './adapters/payload.js';
import { oidcOf, stateOf, type ProviderState } from './context.js';
import { answerGrantRefusal } from './error-details.js';

/**
 * Audit events for the token, introspection and revocation endpoints, written after oidc-provider has
 * answered and before the answer leaves: a token is not handed out without its record. Only identifiers,
 * scopes and reasons are recorded; never a token, code, secret or assertion. Introspections that repeat one
 * another (the same resource server and source, the same token's client and grant, the same answer) are one row
 * per `introspectionWindowSeconds` with their count (AuditLog.recordRepeating): a resource server asks about
 * the same token at each request it serves.
 */
export function auditMiddleware(db: Kysely<DB>, audit: AuditLog, introspectionWindowSeconds: number) {
  return async (ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> => {
    await next();
    const oidc = oidcOf(ctx);
    if (!oidc || (oidc.route !== 'token' && oidc.route !== 'introspection' && oidc.route !== 'revocation')) return;
    const body = (ctx.body ?? {}) as Record<string, unknown>;
    const clientId = oidc.client?.clientId ?? (typeof oidc.params?.client_id === 'string' ? oidc.params.client_id : undefined);
    const base = {
      actorType: clientId ? ('client' as const) : ('anonymous' as const),
      actorId: clientId,
      clientId,
      sourceIp: ctx.ip,
      requestId: ctx.response.get('x-request-id') || undefined,
    };
    const state = stateOf(ctx);
    const event = classify(oidc, ctx.status, body, state);
    // The tokens of an answer that hands them out are written with its event, and the use of their grant and of
    // the code or refresh token it took; a refused request's are dropped, and what it presented stays unused.
    const tokens = takeDeferredTokens(ctx);
    const consumes = takeDeferredConsumes(ctx);
    const ok = ctx.status === 200;
    if (!event) return;
    if (ok && oidc.route === 'introspection') return audit.recordRepeating({ ...base, ...event }, introspectionWindowSeconds);
    if (!ok) return audit.record({ ...base, ...event });
    try {
      await audit.record({ ...base, ...event }, { payloads: tokens, grantUse: state.grantUse, consumes });
    } catch (error) {
      // A token request uses one code or refresh token at most.
      const [used] = consumes;
      if (!isUsedAlready(error) || !used) throw error;
      // Another request used it first: nothing this one issued was stored, and it is answered and audited as
      // oidc-provider answers a reuse (its grant revoked), in place of the tokens.
      try {
        await refuseReuse(db, ctx, used);
      } catch (refusal) {
        if (!(refusal instanceof errors.InvalidGrant)) throw refusal;
        answerGrantRefusal(ctx, refusal);
      }
      await audit.record({ ...base, ...classify(oidc, ctx.status, ctx.body as Record<string, unknown>, state)! });
    }
  };
}

function classify(oidc: KoaContextWithOIDC['oidc'], status: number, body: Record<string, unknown>, state: ProviderState): Omit<AuditEvent, 'actorType'> | undefined {
  const grantType = typeof oidc.params?.grant_type === 'string' ? oidc.params.grant_type : undefined;
  if (status === 200) {
    if (oidc.route === 'token') {
      const token = oidc.entities.AccessToken;
      return {
        type: grantType === 'refresh_token' ? 'token.refreshed' : 'token.issued',
        userId: token?.accountId,
        grantId: token?.grantId,
        patientId: typeof body.patient === 'string' ? body.patient : undefined,
        scope: typeof body.scope === 'string' ? body.scope : undefined,
        details: { grant_type: grantType, ...state.auditDetails },
      };
    }
    if (oidc.route === 'introspection') {
      // The grant of the token asked about, when it is active and has one (a backend's token has none).
      const grantId = body.active === true ? (oidc.entities.AccessToken ?? oidc.entities.RefreshToken)?.grantId : undefined;
      return { type: 'token.introspected', grantId, details: { active: body.active === true, token_client_id: body.client_id } };
    }
    return { type: 'token.revoked', details: { token_type_hint: oidc.params?.token_type_hint } };
  }
  const error = typeof body.error === 'string' ? body.error : undefined;
  if (!error) return undefined;
  const detail = state.clientAuthProblem ?? state.errorDetail;
  let type: AuditEventType = state.auditFailure ?? 'token.failed';
  if (!state.auditFailure && error === 'invalid_client') type = typeof oidc.params?.client_assertion === 'string' ? 'client_assertion.failed' : 'client_auth.failed';
  return { type, outcome: 'failure', details: { route: oidc.route, grant_type: grantType, error, reason: detail, ...state.auditDetails } };
}
