import type { AdapterPayload, KoaContextWithOIDC } from 'oidc-provider';

import type { GrantUse, PayloadConsume, PayloadRowWrite } from '../db/payload-rows.js';
import type { PayloadWrite } from './adapters/grouped-writes.js';
import type { GrantContext } from '../launch/context.js';
import type { User } from '../users/users.js';
import type { UdapCommunity } from '../config/udap-config.js';
import type { B2bPolicy } from '../smart/udap/b2b.js';

/**
 * `ctx.oidc` exists only once a provider route matched (lib/helpers/initialize_app.js), although the types
 * declare it always present; middleware that runs for every request must not assume it.
 */
export function oidcOf(ctx: object): KoaContextWithOIDC['oidc'] | undefined {
  return (ctx as { oidc?: KoaContextWithOIDC['oidc'] }).oidc;
}

/** What our code at oidc-provider's seams learns during one request and hands on to a later step. */
export interface ProviderState {
  /** Why client authentication failed, when we know better than oidc-provider's fixed description. */
  clientAuthProblem?: string;
  /** oidc-provider's `error_detail` of the request's error (seen by its error events only). */
  errorDetail?: string;
  /** A grant's SMART context, read once per request (context null: read, and there is none). */
  grantContext?: { readonly grantId: string; readonly context: GrantContext | null };
  /** The grant read along with the token this request presented, for the Grant lookup that follows. */
  prefetchedGrant?: { readonly id: string; readonly payload: unknown };
  /**
   * At the resume: the interaction its cookie names, taken (removed) in the session's own statement (its
   * consent's grant goes to prefetchedGrant); payload undefined: there was none. For the Interaction lookup
   * that follows.
   */
  claimedInteraction?: { readonly id: string; readonly payload: AdapterPayload | undefined };
  /** Interactions this request took (removed as it read them, at the resume): their destroy has nothing left to remove. */
  takenInteractions?: string[];
  /** The user the token this request presented was issued to, read along with it (user undefined: disabled or gone). */
  prefetchedUser?: {
    readonly id: string;
    readonly user: User | undefined;
    /** Whether an operator's link or an active designation joins the user to the patient of the token's grant context, read along too. */
    readonly linkedTo?: { readonly patient: string; readonly linked: boolean } | undefined;
  };
  /**
   * Token rows a token request issued, not written yet: its audit event writes them in the same statement,
   * before the answer leaves (src/oidc/adapters/payload.ts, takeDeferredTokens).
   */
  deferredTokens?: { readonly rows: PayloadRowWrite[]; readonly writes: { save(row: PayloadRowWrite): Promise<void> } };
  /**
   * The code or refresh token a token request used, not marked used yet: its audit event marks it in the same
   * statement as it stores what was issued, all of it or none (src/oidc/adapters/payload.ts, takeDeferredConsumes).
   * `consumes` marks it on its own instead, when a step needs it marked sooner.
   */
  deferredConsumes?: { readonly items: PayloadConsume[]; readonly consumes: { consume(model: string, ids: readonly string[]): Promise<boolean> } };
  /**
   * Writes an authorization request or its resume made, in order, not written yet: written in one statement
   * with the session's save, which comes last (src/oidc/adapters/payload.ts, WRITES_WITH_SESSION).
   */
  deferredWrites?: { readonly writes: PayloadWrite[]; readonly to: { apply(writes: readonly PayloadWrite[]): Promise<unknown> } };
  /** The grant a token request issued tokens under, for its audit event to record (src/oidc/smart-launch.ts). */
  grantUse?: GrantUse;
  /** An RFC 7592 update: what it widened, and the client's status after it. */
  clientUpdate?: { readonly widened: readonly string[]; readonly status: string };
  /** Why the database failed this request, when it did (src/oidc/unavailable.ts). */
  databaseFault?: string;
  /** A failure the audit trail names by its own type rather than as a plain token failure. */
  auditFailure?: AuditFailure;
  /** A UDAP client's authentication token, verified with its certificate chain (the client adapter). */
  udapAssertion?: { readonly claims: Record<string, unknown>; readonly policy: B2bPolicy; readonly community: UdapCommunity };
  /** Members of an error response's `extensions` (UDAP: hl7-b2b's consent_required). */
  errorExtensions?: Record<string, unknown>;
  /** TEFCA IAS: the patient the demographics matched, for the token response (src/oidc/tefca-ias.ts). */
  iasPatient?: string;
  /** What the token request's audit event records besides the outcome (TEFCA IAS: the match decision). */
  auditDetails?: Record<string, unknown>;
}

/** Failures that are attacks or their traces: a single-use value used again, an assertion replayed. */
export type AuditFailure = 'code.reused' | 'refresh_token.reused' | 'client_assertion.replayed';

export function stateOf(ctx: { state: unknown }): ProviderState {
  return ctx.state as ProviderState;
}

/** An error page oidc-provider (or our middleware in front of it) shows a person. */
export interface ErrorPage {
  readonly status: number;
  readonly error: string;
  readonly description: string | undefined;
}
