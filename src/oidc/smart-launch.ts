import type { Kysely } from 'kysely';
import Provider, { errors, interactionPolicy, type KoaContextWithOIDC } from 'oidc-provider';

import { fhirBaseOf, type Config } from '../config/config.js';
import type { DB } from '../db/schema.js';
import type { SecretBox } from '../security/secret-box.js';
import { revokeGrants } from '../grants/grants.js';
import { findGrantContext, findLaunch, type GrantContext } from '../launch/context.js';
import { findLauncherOptions } from '../launch/launcher-options.js';
import { SIMULATED_ERRORS, simulatedTokenError } from '../smart/simulated-errors.js';
import { launchParamRefusal } from '../smart/launch-policy.js';
import { accessTokenContext, tokenResponseContext } from '../smart/token-context.js';
import { splitScopes } from '../smart/scopes/scope.js';
import { expireAccessTokens, writeDeferredTokens } from './adapters/payload.js';
import { oidcOf, stateOf } from './context.js';
import { answerGrantRefusal } from './error-details.js';
import { ROUTES } from '../smart/profile.js';
import { actsFor, mayActFor } from '../users/users.js';

/**
 * The SMART launch at oidc-provider's seams: the interaction policy, the `launch` parameter, refresh tokens,
 * and the launch context in token responses and introspection.
 */

/** What our interaction pages leave in the interaction result once an authorization is decided. */
export interface SmartResult {
  readonly resolved?: boolean;
}

/**
 * Every SMART authorization goes through our interaction (interactions/routes.ts), even when the session
 * already holds a grant for the client: the launch context has to be resolved for this launch, and a
 * patient-facing app asks for consent every time (ONC (g)(10)). Pre-approved clients pass through it
 * without a page.
 */
export function smartInteractionPolicy(): interactionPolicy.Prompt[] {
  const { base, Check } = interactionPolicy;
  const policy = base();
  policy.get('consent')!.checks.add(
    new Check('smart_authorization', 'the SMART authorization is decided and its launch context resolved', 'consent_required', (ctx) =>
      (ctx.oidc.result as { smart?: SmartResult } | undefined)?.smart?.resolved ? Check.NO_NEED_TO_PROMPT : Check.REQUEST_PROMPT,
    ),
  );
  return policy;
}

/**
 * `extraParams.launch` (SMART App Launch 2.2 §EHR launch), checked by the launch policy before any page:
 * refused by redirect with the policy's error.
 */
export async function validateLaunchParam(config: Config, db: Kysely<DB>, box: SecretBox, ctx: KoaContextWithOIDC, value: string | undefined, clientId: string): Promise<void> {
  if (value === undefined || (ctx.oidc.route !== 'authorization' && ctx.oidc.route !== 'pushed_authorization_request')) return;
  const launch = value.length <= 200 ? await findLaunch(db, box, value) : undefined;
  const aud = typeof ctx.oidc.params?.aud === 'string' ? fhirBaseOf(config, ctx.oidc.params.aud) : undefined;
  const refusal = launchParamRefusal(launch, { scopes: splitScopes(ctx.oidc.params?.scope as string | undefined), clientId, fhirBase: aud, now: new Date() });
  if (!refusal) {
    // bad_aud, simulated by the sandbox launcher: refused as a wrong aud is, before any page.
    if (config.sandbox && launch && (await findLauncherOptions(db, launch.id))?.simulate === 'bad_aud') throw new errors.InvalidRequest(SIMULATED_ERRORS.bad_aud.description);
    return;
  }
  if (refusal.error === 'invalid_scope') throw new errors.InvalidScope(refusal.description, 'launch');
  throw new errors.InvalidRequest(refusal.description);
}

/**
 * oidc-provider drops `offline_access` unless the request says `prompt=consent` (OpenID Connect Core §11);
 * SMART apps never send it, and SMART grants `offline_access` through its own consent. So a request for
 * `offline_access` gets `consent` added to its prompt before oidc-provider reads it. Runs on GET only: the
 * bridge turns POST authorization requests into GET ones (provider-routes.ts).
 */
export function offlineAccessPrompt() {
  return async (ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> => {
    if (ctx.method === 'GET' && ctx.path === ROUTES.authorization) {
      const query = new URLSearchParams(ctx.querystring);
      const scope = query.get('scope');
      const prompt = new Set((query.get('prompt') ?? '').split(' ').filter(Boolean));
      if (scope && splitScopes(scope).includes('offline_access') && !prompt.has('consent') && !prompt.has('none')) {
        prompt.add('consent');
        query.set('prompt', [...prompt].join(' '));
        const before = ctx.url;
        ctx.querystring = query.toString();
        // Keep oidc-provider's mount-path detection (originalUrl minus url) consistent.
        const raw = ctx.req as typeof ctx.req & { originalUrl?: string };
        if (raw.originalUrl) raw.originalUrl = raw.originalUrl.slice(0, raw.originalUrl.length - before.length) + ctx.url;
      }
    }
    await next();
  };
}

/** The grant's context, read once per request. */
async function contextFor(db: Kysely<DB>, ctx: KoaContextWithOIDC, grantId: string | undefined): Promise<GrantContext | undefined> {
  if (!grantId) return undefined;
  const state = stateOf(ctx);
  if (state.grantContext?.grantId !== grantId) state.grantContext = { grantId, context: (await findGrantContext(db, grantId)) ?? null };
  return state.grantContext.context ?? undefined;
}

/**
 * `extraTokenClaims`: what an access token carries besides its scope. Stored with opaque tokens (so
 * introspection reports it) and written into JWT access tokens: the launch context and fhirUser.
 */
export async function smartTokenClaims(db: Kysely<DB>, ctx: KoaContextWithOIDC, token: { kind: string; grantId?: string; scope?: string }): Promise<Record<string, unknown> | undefined> {
  if (token.kind !== 'AccessToken') return undefined;
  const context = await contextFor(db, ctx, token.grantId);
  if (!context) return undefined;
  const claims = accessTokenContext(context, splitScopes(token.scope));
  return Object.keys(claims).length ? claims : undefined;
}

/**
 * Post-middleware on the token endpoint: the launch context joins the token response (oidc-provider has
 * no hook for extra response members), on code exchange and on every refresh; and the grant's use is
 * recorded, with the request's audit event (src/oidc/audit-hooks.ts): a refresh renews the grant for another
 * period (oidc-provider never saves a grant again, so its expiry would cap the chain).
 */
export function tokenResponseMiddleware(db: Kysely<DB>, lifetime: { readonly refresh: number; readonly grant: number }, sandbox: boolean) {
  return async (ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> => {
    await next();
    const oidc = oidcOf(ctx);
    if (oidc?.route !== 'token' || ctx.status !== 200 || !ctx.body || typeof ctx.body !== 'object') return;
    const grantType = oidc.params?.grant_type;
    // TEFCA IAS (src/oidc/tefca-ias.ts): a client_credentials token for the one patient the demographics matched.
    const iasPatient = stateOf(ctx).iasPatient;
    if (grantType === 'client_credentials' && iasPatient) Object.assign(ctx.body, { patient: iasPatient });
    if (grantType !== 'authorization_code' && grantType !== 'refresh_token') return;
    const grant = oidc.entities.Grant;
    const context = await contextFor(db, ctx, grant?.jti);
    if (sandbox && grant && context?.launchId) {
      // Errors the sandbox launcher simulates for this launch (src/smart/simulated-errors.ts): the tokens just
      // issued are revoked and never reach the app; or its access token is expired at once.
      const simulate = (await findLauncherOptions(db, context.launchId))?.simulate;
      const simulated = simulatedTokenError(simulate, grantType);
      if (simulated) {
        await revokeGrants(db, [grant.jti]);
        ctx.status = simulated.status;
        ctx.body = { error: simulated.error, error_description: simulated.description };
        return;
      }
      if (simulate === 'expired_access_token') {
        try {
          await writeDeferredTokens(db, ctx); // the access token just issued must be in the database to be expired
        } catch (error) {
          if (!(error instanceof errors.InvalidGrant)) throw error;
          // Another request used the code or refresh token first (a reuse): answered as oidc-provider answers one.
          answerGrantRefusal(ctx, error);
          return;
        }
        await expireAccessTokens(db, grant.jti);
      }
    }
    if (context) Object.assign(ctx.body, tokenResponseContext(context));
    if (!grant) return;
    // A refresh token issued must not outlive its grant: a grant that ends before a full period from now is
    // renewed, for a period and the margin (config.ts, grantLifetimeSeconds), so the next refreshes need not.
    const now = Date.now();
    stateOf(ctx).grantUse = { grantId: grant.jti, renewal: grantType === 'refresh_token' ? { atLeast: new Date(now + lifetime.refresh * 1000), to: new Date(now + lifetime.grant * 1000) } : undefined };
  };
}

/**
 * oidc-provider checks the token request's `resource` only after it has consumed the code or refresh token
 * (lib/helpers/grant_source.js, then lib/helpers/resolve_resource.js): a wrong one would use it up, and the app's
 * next try with it would count as reuse and end the whole grant. The same test, run before anything is consumed
 * (rotateRefreshToken for a refresh token, refuseOtherResourceBeforeConsuming for a code), with the same answers.
 */
export function refuseOtherResource(ctx: KoaContextWithOIDC, token: { readonly resourceIndicators: ReadonlySet<unknown> }, label: 'authorization code' | 'refresh token'): void {
  const resource = ctx.oidc.params?.resource;
  if (Array.isArray(resource)) throw new errors.InvalidTarget('only a single resource indicator value must be requested/resolved during Access Token Request');
  if (typeof resource === 'string' && resource !== '' && !token.resourceIndicators.has(resource)) {
    throw new errors.InvalidTarget(`resource ${resource} is not the FHIR server this ${label} was issued for`);
  }
}

/**
 * The code exchange's `resource` check (refuseOtherResource), where oidc-provider has no hook between finding the
 * code and consuming it: in the code's own `consume`, which lib/actions/grants/authorization_code.js calls after
 * its PKCE and redirect_uri checks and before it issues anything.
 */
export function refuseOtherResourceBeforeConsuming(provider: Provider): void {
  const Code = provider.AuthorizationCode;
  // Called with the code as `this`, below.
  // eslint-disable-next-line @typescript-eslint/unbound-method
  const consume = Code.prototype.consume;
  Code.prototype.consume = function consumeForThisResource(this: InstanceType<typeof Code>) {
    const ctx = Provider.ctx;
    if (ctx?.oidc.route === 'token') refuseOtherResource(ctx, this, 'authorization code');
    return consume.call(this);
  };
}

/**
 * `rotateRefreshToken`: always rotate, so that a refresh token used twice reveals theft (oidc-provider then
 * revokes the grant). And an `online_access` refresh token works only while the user's session lasts
 * (SMART App Launch 2.2 §Scopes for requesting a refresh token).
 */
export async function rotateRefreshToken(provider: Provider, db: Kysely<DB>, ctx: KoaContextWithOIDC): Promise<boolean> {
  const token = ctx.oidc.entities.RefreshToken;
  if (token) {
    refuseOtherResource(ctx, token, 'refresh token');
    const scopes = splitScopes(token.scope);
    if (scopes.includes('online_access') && !scopes.includes('offline_access')) {
      const session = token.sessionUid ? await provider.Session.findByUid(token.sessionUid) : undefined;
      if (!session || session.accountId !== token.accountId) {
        throw new errors.InvalidGrant('the user has signed out: an online_access refresh token works only while the user is signed in');
      }
    }
    const patient = await patientNoLongerActedFor(db, ctx, token);
    if (patient) throw new errors.InvalidGrant(`the user may no longer act for patient ${patient} (a representative's designation ended, or the link to the record was removed): launch the app again`);
  }
  return true;
}

/**
 * The patient in the grant's context when the token's user may no longer act for them (a representative whose
 * designation ended, a record unlinked): the gateway then lets the grant reach no one through it
 * (src/grants/token-access.ts), and no new token (a refresh) nor introspection may say otherwise. What the
 * token's lookup read along with it answers it (src/oidc/adapters/payload.ts, FIND_TOKENS): no statement of its own.
 */
export async function patientNoLongerActedFor(db: Kysely<DB>, ctx: KoaContextWithOIDC, token: { accountId?: string | undefined; grantId?: string | undefined }): Promise<string | undefined> {
  if (!token.accountId || !token.grantId) return undefined;
  const patient = (await contextFor(db, ctx, token.grantId))?.patient;
  if (!patient) return undefined;
  const read = stateOf(ctx).prefetchedUser;
  if (read?.id === token.accountId && read.linkedTo?.patient === patient) {
    const user = read.user;
    const may = !!user && actsFor(user, patient, read.linkedTo.linked ? [patient] : []);
    return may ? undefined : patient;
  }
  return (await mayActFor(db, token.accountId, patient)) ? undefined : patient;
}
