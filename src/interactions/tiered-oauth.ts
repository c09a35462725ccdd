import { timingSafeEqual } from 'node:crypto';

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { InteractionResults } from 'oidc-provider';

import type { AuditEvent, AuditLog } from '../audit/audit.js';
import { cleanText } from '../audit/sanitize.js';
import type { Config } from '../config/config.js';
import { persistUndecided } from '../oidc/adapters/payload.js';
import type { ProviderHost } from '../oidc/provider-host.js';
import { authenticationRequest, discoverIdp, idpClientId, parseState, redeemCode, requestedIdp, TIERED_CALLBACK_PATH, tieredBrowserCookie, TieredOAuthError, type IdpIdentity, type TieredAttempt, type TieredOAuthDeps } from '../udap/tiered-oauth.js';
import { readCookie } from '../users/device-cookie.js';
import { createLinkedUser, findLinkedUser } from '../users/tiered-links.js';

/**
 * UDAP Tiered OAuth in the interaction (HL7 UDAP Security IG §6): the sign-in step of an authorization that
 * names an `idp` with the `udap` scope is satisfied by that identity provider instead of the sign-in page.
 *
 * 1. The sign-in step ({@link TieredSignIn.step}) checks the IdP and registers at it (src/udap/tiered-oauth.ts),
 *    keeps the attempt (state, nonce, PKCE verifier) in the interaction and sends the browser to the IdP. An IdP
 *    that cannot be used ends the authorization with `invalid_idp` at the app's redirect_uri.
 * 2. The IdP sends the browser to {@link TIERED_CALLBACK_PATH}, whose `state` names the interaction. The callback
 *    checks `state`, redeems the code, validates the id_token, resolves (iss, sub) to a local user under the
 *    community's link policy and records the outcome in the interaction, then sends the browser back to it.
 * 3. The sign-in step, again, finishes the login with that user (the launch then goes on: patient picker,
 *    consent), or ends the authorization with the outcome's error, or shows the person that their account is
 *    not linked (IG §6: `access_denied` when the data holder cannot resolve the user, which the page's one
 *    button sends). An IdP that refused the code with `invalid_client` no longer knows our client_id: the step
 *    registers again and sends the person back there, once.
 *
 * The callback cannot finish the interaction itself: the interaction cookie is scoped to the interaction's
 * path, and the step that reads it is what binds the outcome to the browser that started the authorization.
 */
export type TieredOutcome =
  | { readonly kind: 'signed-in'; readonly userId: string; readonly idp: string; readonly linked: 'existing' | 'created' }
  /** The IdP no longer knew our client_id: register again and send the person there once more. */
  | { readonly kind: 'retry' }
  | { readonly kind: 'error'; readonly error: string; readonly description: string }
  | { readonly kind: 'unlinked'; readonly idp: string; readonly sub: string };

/** What the interaction keeps of a Tiered OAuth sign-in: the attempt in flight, then its outcome. */
export interface TieredState {
  readonly attempt?: TieredAttempt;
  readonly outcome?: TieredOutcome;
}

/** What the step needs of the interaction pages (src/interactions/routes.ts). */
export interface StepHelpers {
  finish(result: InteractionResults): Promise<FastifyReply>;
  remember(tiered: TieredState): Promise<void>;
  unlinkedPage(idp: string, sub: string): Promise<FastifyReply>;
  audit(event: Omit<AuditEvent, 'actorType' | 'sourceIp' | 'requestId' | 'clientId'>): Promise<void>;
}

export interface TieredSignInDeps {
  readonly config: Config;
  readonly host: ProviderHost;
  readonly audit: AuditLog;
  readonly tiered: TieredOAuthDeps;
}

export class TieredSignIn {
  readonly #deps: TieredSignInDeps;

  constructor(deps: TieredSignInDeps) {
    this.#deps = deps;
  }

  get #cookieAttributes(): string {
    const { config } = this.#deps;
    return `Path=${config.basePath}${TIERED_CALLBACK_PATH}; HttpOnly; SameSite=Lax${config.issuer.startsWith('https:') ? '; Secure' : ''}`;
  }

  /** Whether the authorization asks for Tiered OAuth (else the sign-in page follows). */
  asked(params: Record<string, unknown>): boolean {
    return requestedIdp(params.scope, params.idp) !== undefined;
  }

  /** The sign-in step of an authorization that asks for Tiered OAuth. */
  async step(reply: FastifyReply, params: Record<string, unknown>, uid: string, tiered: TieredState | undefined, helpers: StepHelpers): Promise<FastifyReply> {
    const idp = String(requestedIdp(params.scope, params.idp));
    const outcome = tiered?.outcome;
    if (outcome?.kind === 'signed-in') {
      await helpers.audit({ type: 'login.success', userId: outcome.userId, details: { via: 'tiered_oauth', idp: outcome.idp, link: outcome.linked } });
      return helpers.finish({ login: { accountId: outcome.userId } });
    }
    if (outcome?.kind === 'error') return helpers.finish({ error: outcome.error, error_description: outcome.description });
    if (outcome?.kind === 'unlinked') return helpers.unlinkedPage(outcome.idp, outcome.sub);
    let url: string;
    try {
      const trusted = await discoverIdp(this.#deps.tiered, idp);
      const { clientId, registered } = await idpClientId(this.#deps.tiered, trusted);
      if (registered) await helpers.audit({ type: 'tiered_oauth.registered', details: { idp, community: trusted.community.uri, client_id_at_idp: clientId } });
      const request = authenticationRequest(this.#deps.config, trusted, clientId, uid, outcome?.kind === 'retry');
      await helpers.remember({ attempt: request.attempt });
      await helpers.audit({ type: 'tiered_oauth.redirected', details: { idp, community: trusted.community.uri } });
      url = request.url;
      // The callback takes the IdP's answer from this browser only (TieredAttempt.browser). Lax: the IdP's
      // redirect back is a top-level GET from another site. Until the browser closes; the callback clears it.
      void reply.header('set-cookie', `${tieredBrowserCookie(uid)}=${request.attempt.browser}; ${this.#cookieAttributes}`);
    } catch (error) {
      if (!(error instanceof TieredOAuthError)) throw error;
      await helpers.audit({ type: 'tiered_oauth.failed', outcome: 'failure', details: { idp, step: error.step, error: error.code, reason: error.message } });
      return helpers.finish({ error: error.code, error_description: error.message });
    }
    return reply.redirect(url, 303);
  }

  /** The IdP's answer (OpenID Connect Core §3.1.2.5, §3.1.2.6) at {@link TIERED_CALLBACK_PATH}, under the interactions' prefix. */
  callbackRoute(app: FastifyInstance, basePath: string, errorPage: (request: FastifyRequest, reply: FastifyReply, status: number, error: string, description: string) => Promise<FastifyReply>): void {
    app.get<{ Querystring: { code?: string; state?: string; error?: string; error_description?: string; iss?: string } }>(
      TIERED_CALLBACK_PATH,
      {
        schema: {
          querystring: {
            type: 'object',
            properties: { code: { type: 'string', maxLength: 2048 }, state: { type: 'string', maxLength: 512 }, error: { type: 'string', maxLength: 256 }, error_description: { type: 'string', maxLength: 1024 }, iss: { type: 'string', maxLength: 2048 } },
          },
        },
      },
      async (request, reply) => {
        const lost = () => errorPage(request, reply, 400, 'invalid_request', 'This sign-in cannot be continued: the identity provider sent you back for a sign-in this server does not know, or one that is over. Go back to the app and start again.');
        const parsed = parseState(request.query.state);
        if (!parsed) return lost();
        const interaction = await this.#deps.host.provider.Interaction.find(parsed.uid);
        const smart = (interaction?.result as { smart?: { tiered?: TieredState } } | undefined)?.smart;
        const attempt = smart?.tiered?.attempt;
        if (!interaction || !smart || !attempt) return lost();
        // Another browser than the one sent to the IdP (a forwarded sign-in link): its sign-in is not for this
        // interaction, which stays as it was for the browser that started it.
        const cookie = readCookie(request.headers.cookie, tieredBrowserCookie(parsed.uid));
        if (!cookie || typeof attempt.browser !== 'string' || !sameText(cookie, attempt.browser)) {
          // In the trail: a forwarded IdP link is how one person's sign-in is aimed at another's authorization.
          await this.#deps.audit.record({
            type: 'tiered_oauth.failed', outcome: 'failure', actorType: 'anonymous', sourceIp: request.ip, requestId: request.id, clientId: String(interaction.params.client_id),
            details: { idp: attempt.idp, step: 'callback', error: 'invalid_request', reason: cookie ? 'answered to another browser than the one sent to the identity provider' : 'answered to a browser without the cookie set when it was sent to the identity provider' },
          });
          return errorPage(request, reply, 400, 'invalid_request', 'This sign-in was started in another browser: the identity provider sent you back to a browser that did not start it. Go back to the app and start again in this browser.');
        }
        void reply.header('set-cookie', `${tieredBrowserCookie(parsed.uid)}=; Max-Age=0; ${this.#cookieAttributes}`);
        const outcome = await this.#outcome(request, interaction.params, attempt, parsed.random);
        // The attempt is spent: a second answer with the same state finds none. Saved only while the interaction is
        // undecided: a Cancel from another tab meanwhile stays the decision (src/interactions/routes.ts decision).
        interaction.result = { ...interaction.result, smart: { ...smart, tiered: { outcome } } };
        await persistUndecided(this.#deps.tiered.db, interaction);
        return reply.redirect(`${basePath}/interaction/${parsed.uid}`, 303);
      },
    );
  }

  async #outcome(request: FastifyRequest<{ Querystring: { code?: string; error?: string; error_description?: string; iss?: string } }>, params: Record<string, unknown>, attempt: TieredAttempt, random: string): Promise<TieredOutcome> {
    const { idp } = attempt;
    const audit = (event: Omit<AuditEvent, 'actorType' | 'sourceIp' | 'requestId' | 'clientId'>) =>
      this.#deps.audit.record({ actorType: event.userId ? 'user' : 'anonymous', actorId: event.userId, sourceIp: request.ip, requestId: request.id, clientId: String(params.client_id), ...event });
    const failed = async (error: string, description: string, step: string): Promise<TieredOutcome> => {
      await audit({ type: 'tiered_oauth.failed', outcome: 'failure', details: { idp, step, error, reason: description } });
      return { kind: 'error', error, description };
    };
    // IG §6: a state that is not the one sent ends the workflow with server_error to the client app.
    if (!sameText(random, attempt.state)) return failed('server_error', `the identity provider ${idp} answered with a state that is not the one this server sent`, 'callback');
    const { code, error, error_description: errorDescription, iss } = request.query;
    // RFC 9207 §2.4: an authorization response that names its issuer must name the IdP it was sent to (mix-up).
    // Cut with cleanText, never inside a character: a lone surrogate in the outcome could not be saved.
    if (iss !== undefined && iss !== idp) return failed('invalid_idp', `the answer names the issuer ${cleanText(iss, 200)}, not ${idp}`, 'callback');
    if (error !== undefined) {
      // IG §6: an error from the IdP with a valid state ends the workflow with a suitable error to the client app.
      const description = `the identity provider ${idp} answered ${error}${errorDescription ? ` (${cleanText(errorDescription, 300)})` : ''}`;
      return failed(error === 'access_denied' ? 'access_denied' : 'invalid_idp', description, 'callback');
    }
    if (!code) return failed('invalid_idp', `the identity provider ${idp} answered without a code`, 'callback');
    let identity: IdpIdentity;
    try {
      identity = await redeemCode(this.#deps.tiered, attempt, code);
    } catch (caught) {
      if (!(caught instanceof TieredOAuthError)) throw caught;
      if (caught.clientUnknown && !attempt.retry) {
        await audit({ type: 'tiered_oauth.failed', outcome: 'failure', details: { idp, step: caught.step, error: caught.code, reason: caught.message, retry: true } });
        return { kind: 'retry' };
      }
      return failed(caught.code, caught.message, caught.step);
    }
    return this.#resolve(identity, attempt.community, audit);
  }

  /** IG §6 "Data holder interaction with user after authentication": (iss, sub) to a local user, by the community's policy. */
  async #resolve(identity: IdpIdentity, communityUri: string, audit: (event: Omit<AuditEvent, 'actorType' | 'sourceIp' | 'requestId' | 'clientId'>) => Promise<void>): Promise<TieredOutcome> {
    const { db, udap } = this.#deps.tiered;
    const disabled = async (): Promise<TieredOutcome> => {
      await audit({ type: 'tiered_oauth.failed', outcome: 'failure', details: { idp: identity.iss, sub: identity.sub, step: 'link', error: 'access_denied', reason: 'the linked user is disabled' } });
      return { kind: 'error', error: 'access_denied', description: `the user of this server linked to the person signed in at ${identity.iss} is disabled` };
    };
    const linked = await findLinkedUser(db, identity.iss, identity.sub);
    if (linked) return linked.user ? { kind: 'signed-in', userId: linked.user.id, idp: identity.iss, linked: 'existing' } : disabled();
    const policy = udap.communities.find((c) => c.uri === communityUri)?.tieredOAuth;
    if (policy?.link !== 'create') {
      await audit({ type: 'tiered_oauth.failed', outcome: 'failure', details: { idp: identity.iss, sub: identity.sub, step: 'link', error: 'access_denied', reason: 'not linked to a local user' } });
      return { kind: 'unlinked', idp: identity.iss, sub: identity.sub };
    }
    const { user, created } = await createLinkedUser(db, identity.iss, identity.sub, { fhirUserType: policy.createAs, name: identity.name ?? `${identity.sub} at ${new URL(identity.iss).host}` });
    if (!user) return disabled();
    if (created) {
      await audit({ type: 'user.created', userId: user.id, details: { by: 'tiered_oauth', username: user.username, fhirUser: user.fhirUser } });
      await audit({ type: 'tiered_oauth.linked', userId: user.id, details: { idp: identity.iss, sub: identity.sub, by: 'auto' } });
    }
    return { kind: 'signed-in', userId: user.id, idp: identity.iss, linked: created ? 'created' : 'existing' };
  }
}

function sameText(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}
