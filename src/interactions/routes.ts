import { randomUUID } from 'node:crypto';

import formbody from '@fastify/formbody';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import { errors, type Client, type InteractionResults } from 'oidc-provider';

import type { AuditEvent, AuditLog, EventWrites } from '../audit/audit.js';
import { grantLifetimeSeconds, type Config } from '../config/config.js';
import type { ReplicaReads } from '../db/replica.js';
import { isDecidedAlready } from '../db/faults.js';
import type { DB } from '../db/schema.js';
import { encountersOf, findPatients, SEARCH_LIMIT, searchPatients, type PatientSummary } from '../directory/patients.js';
import { consumeLaunch, findLaunch, grantContextWrite } from '../launch/context.js';
import { findLauncherOptions } from '../launch/launcher-options.js';
import { SIMULATED_ERRORS } from '../smart/simulated-errors.js';
import { consentWithPicker, mayChoosePatient, nextStep, takenLaunchRefusal, type LaunchState, type TakenLaunch } from '../smart/launch-policy.js';
import { grantContextOf, launchContextOf } from '../smart/token-context.js';
import type { GrantContextWrite, PayloadRowWrite } from '../db/payload-rows.js';
import { deferSaves, interactionRows, persistUndecided, withSessionReadAhead } from '../oidc/adapters/payload.js';
import type { ProviderHost } from '../oidc/provider-host.js';
import { CONSENT_PROPERTY } from '../smart/client-rules.js';
import { STATIC_SCOPES } from '../smart/profile.js';
import { registeredScopes } from '../oidc/resource-server.js';
import type { SecretBox } from '../security/secret-box.js';
import { applyConsent, ConsentError, consentOptions, type ConsentOption } from '../smart/scopes/consent.js';
import { DATA_CLASSES } from '../smart/scopes/data-classes.js';
import { grantableScopes, needsPatient, requirePatientContext } from '../smart/scopes/grant.js';
import { formatScope, parseScopes, type Scope } from '../smart/scopes/scope.js';
import { DEVICE_COOKIE, DEVICE_COOKIE_SECONDS, readCookie } from '../users/device-cookie.js';
import { signIn } from '../users/sign-in.js';
import type { UserCache } from '../users/user-cache.js';
import { findUser, operatorRolesOf, patientsNamedOf, type NamedPatients, type User } from '../users/users.js';
import { renderErrorPage } from '../http/pages.js';
import { pageHeaders } from '../http/page-headers.js';
import type { TieredSignIn, TieredState } from './tiered-oauth.js';

/**
 * The pages between the authorization request and the code: sign-in, patient picker, encounter picker
 * and consent (SMART App Launch 2.2 §EHR launch and §Standalone launch; ONC (g)(10) consent). oidc-provider
 * sends the browser to GET /interaction/:uid whenever it needs a decision; each step here either shows a
 * page or records its answer in the interaction and shows the next, until the authorization is decided and
 * oidc-provider resumes. A sign-in on the sign-in page is kept in the interaction (`signedIn`) and goes to
 * oidc-provider with the decision that ends it: one resume, not one for the sign-in and one for the consent.
 *
 * Every page works without JavaScript. Field names are fixed so that any client can drive the forms:
 * `username`, `password`; `patient` / `encounter` (radio); `scope` (one checkbox per scope, the scope string
 * its value) and `decision` = approve | deny; `csrf` on every form. Where nothing comes between the patient's
 * choice and the consent (consentWithPicker), the picker's form is the consent form: `patient` goes to
 * …/consent with the scopes and the decision.
 */

export interface InteractionDeps {
  readonly config: Config;
  readonly db: Kysely<DB>;
  /** Where the patient picker searches the directory (a replica when configured). */
  readonly replica: ReplicaReads;
  readonly box: SecretBox;
  readonly host: ProviderHost;
  readonly audit: AuditLog;
  /** The signed-in user, read at each step: cached per process (see UserCache). */
  readonly users: UserCache;
  /** UDAP Tiered OAuth, where a trust community has it on (tiered-oauth.ts). */
  readonly tiered?: TieredSignIn | undefined;
}

/** What the steps have decided so far, kept in the interaction between them. */
interface SmartState {
  resolved?: boolean;
  launchId?: string;
  launch?: TakenLaunch;
  patient?: string;
  /** The chosen encounter; null when the user chose none, or there is none to choose. */
  encounter?: string | null;
  /** What the sandbox launcher asked of the launch taken (src/http/launcher.ts). */
  launcher?: { skipConsent: boolean; simulate?: string | undefined; patients?: readonly string[] | undefined };
  /** A sign-in at the person's identity provider (UDAP Tiered OAuth): in flight, then its outcome. */
  tiered?: TieredState;
  /**
   * The user who signed in on this interaction's sign-in page, and when (seconds since the epoch): the login
   * oidc-provider is given with the decision, whose pages are for this user. `id` is the sign-in's own: of two
   * sign-ins on one interaction at once, the database keeps the first (decideInteractionsSql).
   */
  signedIn?: { accountId: string; ts: number; id: string };
}

type Details = Awaited<ReturnType<ProviderHost['provider']['interactionDetails']>>;

const bodySchema = {
  type: 'object',
  required: ['csrf'],
  properties: {
    csrf: { type: 'string', maxLength: 128 },
    username: { type: 'string', maxLength: 256 },
    password: { type: 'string', maxLength: 1024 },
    patient: { type: 'string', maxLength: 256 },
    patient_mac: { type: 'string', maxLength: 128 },
    encounter: { type: 'string', maxLength: 256 },
    scope: { anyOf: [{ type: 'string', maxLength: 4096 }, { type: 'array', maxItems: 2000, items: { type: 'string', maxLength: 4096 } }] },
    decision: { type: 'string', enum: ['approve', 'deny'] },
    q: { type: 'string', maxLength: 200 },
    search: { type: 'string', enum: ['1'] },
    change: { type: 'string', enum: ['1'] },
  },
} as const;

interface Body {
  csrf: string;
  username?: string;
  password?: string;
  patient?: string;
  patient_mac?: string;
  encounter?: string;
  scope?: string | string[];
  decision?: 'approve' | 'deny';
  /** The directory search of the picker that asks for consent, sent by its Search button (`search`). */
  q?: string;
  search?: '1';
  /** The encounter picker's "Choose another patient". */
  change?: '1';
}

/** What a step's page is shown with, beyond the interaction. */
interface StepExtra {
  loginError?: string;
  status?: number;
  username?: string;
  chosen?: PatientSummary | undefined;
  named?: NamedPatients | undefined;
  patientUnsaved?: boolean;
  /** A search sent by the picker that asks for consent: the words, and the scopes and patient chosen then. */
  search?: { query: string; scopes: readonly string[]; patient: string | undefined };
}

type Req = FastifyRequest<{ Params: { uid: string }; Body: Body; Querystring: { q?: string } }>;

export async function interactionRoutes(app: FastifyInstance, deps: InteractionDeps): Promise<void> {
  const { config, db, replica, box, host, audit, users } = deps;
  /** Records the event; with `writes`, what the step changed (the payload rows deferSaves kept) is written in the same statement. */
  const auditFor = (request: FastifyRequest, details: Details, event: Omit<AuditEvent, 'actorType' | 'sourceIp' | 'requestId' | 'clientId'>, writes?: EventWrites): Promise<void> =>
    audit.record({ actorType: event.userId ? 'user' : 'anonymous', actorId: event.userId, sourceIp: request.ip, requestId: request.id, clientId: String(details.params.client_id), ...event }, writes);
  const basePath = config.basePath;
  await app.register(formbody, { bodyLimit: 64 * 1024 });

  /**
   * The CSRF token of the forms shown for `details`. After a sign-in on its sign-in page it names the user too: a
   * page shown for one user cannot decide for another who signed in on the same interaction from another tab.
   */
  const csrfFor = (details: Details): string => box.mac('csrf', csrfSubject(details));
  const csrfSubject = (details: Details): string => {
    const signedIn = smartOf(details).signedIn;
    return signedIn ? `${details.uid}\n${signedIn.accountId}` : details.uid;
  };
  const urls = (uid: string) => ({
    self: `${basePath}/interaction/${uid}`,
    login: `${basePath}/interaction/${uid}/login`,
    patient: `${basePath}/interaction/${uid}/patient`,
    encounter: `${basePath}/interaction/${uid}/encounter`,
    consent: `${basePath}/interaction/${uid}/consent`,
    abort: `${basePath}/interaction/${uid}/abort`,
  });

  /** The interaction of this browser, or a page saying why there is none. */
  async function load(request: Req, reply: FastifyReply): Promise<Details | undefined> {
    let details: Details;
    try {
      // The interaction and its session in one statement (oidc-provider reads them one after the other).
      details = await withSessionReadAhead(() => host.provider.interactionDetails(request.raw, reply.raw));
    } catch (error) {
      if (!(error instanceof errors.SessionNotFound)) throw error;
      await errorPage(request, reply, 400, 'interaction_expired', 'This sign-in has expired, or was started in another browser. Go back to the app and start again.');
      return undefined;
    }
    if (details.uid !== request.params.uid) {
      await errorPage(request, reply, 400, 'invalid_request', 'This page belongs to another sign-in. Go back to the app and start again.');
      return undefined;
    }
    // Decided already (a sign-in, a consent, a refusal): only its resume is left. A page shown again or a form
    // sent again (a reload, Back, a replay) goes there rather than decide a second time: a second consent would
    // make a second grant, a cancel after Allow would leave the grant made.
    if (isConcluded(details.result)) {
      await reply.redirect(details.returnTo, 303);
      return undefined;
    }
    return details;
  }

  async function errorPage(request: FastifyRequest, reply: FastifyReply, status: number, error: string, description: string): Promise<FastifyReply> {
    pageHeaders(reply, config);
    const html = await renderErrorPage(app, basePath, { status, error, description, requestId: request.id });
    return reply.code(status).type('text/html; charset=utf-8').send(html);
  }

  async function page(reply: FastifyReply, status: number, view: string, data: Record<string, unknown>): Promise<FastifyReply> {
    pageHeaders(reply, config);
    return reply.code(status).view(`${view}.ejs`, { basePath, ...data });
  }

  const appGone = (request: FastifyRequest, reply: FastifyReply) =>
    errorPage(request, reply, 400, 'invalid_client', 'This app is no longer available here: an administrator suspended or removed it while you were signing in. Nothing was shared with it.');

  /**
   * The form was shown for this interaction as it stands. The forms of the sign-in page (sign in, Cancel) were shown
   * before any sign-in, with the interaction's own token: that one still holds for them after it.
   */
  function checkCsrf(request: Req, details: Details, path: string): boolean {
    return box.verifyMac('csrf', csrfSubject(details), request.body.csrf) || (SIGN_IN_PAGE_FORMS.has(path) && box.verifyMac('csrf', details.uid, request.body.csrf));
  }

  const alteredForm = (request: FastifyRequest, reply: FastifyReply) => errorPage(request, reply, 400, 'invalid_request', 'This form was altered. Go back to the app and start again.');
  const notChoosable = (request: FastifyRequest, reply: FastifyReply) => errorPage(request, reply, 400, 'invalid_request', 'That patient cannot be chosen here.');

  /**
   * Whether `chosen` may answer this interaction's picker, whichever form sends it: a patient the user may act
   * for (a clinician: any in the directory, read here, for the page that follows to name), among those the
   * sandbox launcher offered when it offered some. Undefined when it may not.
   */
  async function pickable(user: User, named: NamedPatients | undefined, smart: SmartState, chosen: string): Promise<{ inDirectory: PatientSummary | undefined } | undefined> {
    const [inDirectory] = named?.ids ? [] : await findPatients(db, [chosen]);
    if (!mayChoosePatient({ id: user.id, patients: named?.ids }, chosen, inDirectory !== undefined)) return undefined;
    if (smart.launcher?.patients && !smart.launcher.patients.includes(chosen)) return undefined;
    return { inDirectory };
  }

  /** The seal of the patient the consent page of interaction `uid` was shown for, when the interaction does not hold it yet. */
  const patientMac = (uid: string, patient: string): string => box.mac('consent-patient', `${uid}\n${patient}`);

  /**
   * The patient of the decision a consent form answers: the one the page carried sealed for this very interaction
   * (chosen by the request that showed it, not saved then: what the person was asked about), or else the
   * interaction's. A form with a patient or a seal that do not match each other and this interaction was
   * altered: null.
   */
  function consentPatient(request: Req, smart: SmartState): string | undefined | null {
    const { patient, patient_mac: mac } = request.body;
    if (patient === undefined && mac === undefined) return smart.patient;
    return patient && mac && box.verifyMac('consent-patient', `${request.params.uid}\n${patient}`, mac) ? patient : null;
  }

  /**
   * Sets the result oidc-provider resumes with (a decision, or an error for the app) on the interaction this request
   * already loaded: what its interactionResult does, without loading it (and its session) a second time. Saved only
   * while the interaction is undecided (persistUndecided, or an audit event's `decisions`), so that of two requests
   * deciding it at once (a form sent twice, Allow and Deny from two tabs) one decides, and the other makes nothing:
   * no second grant.
   */
  function withDecision(details: Details, result: InteractionResults, merge = true): Details {
    details.result = merge && !('error' in result) ? { ...details.lastSubmission, ...result } : result;
    return details;
  }

  /**
   * Ends the interaction with `result` and sends the browser to its resume: one write, no read. When another
   * request decided it first, the resume goes on with that decision.
   */
  async function finish(reply: FastifyReply, details: Details, result: InteractionResults, merge = true): Promise<FastifyReply> {
    await persistUndecided(db, withDecision(details, result, merge));
    return reply.redirect(details.returnTo, 303);
  }

  /**
   * Ends the interaction with `result` and records `event` with it, and `writes` (a consent's grant and launch
   * context), in one statement: all or none (a failure leaves the interaction waiting for a decision). False when
   * another request decided the interaction first: then nothing of this one is written, event included.
   */
  async function decideWith(request: FastifyRequest, details: Details, result: InteractionResults, merge: boolean, event: Parameters<typeof auditFor>[2], writes: EventWrites = {}): Promise<boolean> {
    return saveWith(request, withDecision(details, result, merge), event, writes);
  }

  /** Saves the interaction as `details` has it with `event` and `writes`, in one statement, while it is undecided. False once decided. */
  async function saveWith(request: FastifyRequest, details: Details, event: Parameters<typeof auditFor>[2], writes: EventWrites = {}): Promise<boolean> {
    const decisions = await interactionRows(details);
    try {
      await auditFor(request, details, event, { ...writes, decisions });
      return true;
    } catch (error) {
      if (isDecidedAlready(error)) return false;
      throw error;
    }
  }

  const smartOf = (details: Details): SmartState => ({ ...((details.result as { smart?: SmartState } | undefined)?.smart ?? {}) });

  /**
   * The user the interaction is for: the one who signed in on its sign-in page, or else the session's, once no
   * sign-in is asked (a sign-in asked of a session's user, prompt=login or max_age, may sign in another).
   */
  const accountOf = (details: Details): string | undefined => smartOf(details).signedIn?.accountId ?? (details.prompt.name === 'login' ? undefined : details.session?.accountId);

  /** The user {@link accountOf} names, while enabled. */
  const userOf = async (details: Details): Promise<User | undefined> => {
    const account = accountOf(details);
    return account ? users.find(db, account) : undefined;
  };

  /** Whether the interaction still asks for a sign-in: oidc-provider asks, and none was made on its sign-in page. */
  const signInAsked = (details: Details): boolean => details.prompt.name === 'login' && !smartOf(details).signedIn;

  /**
   * Saves what the steps so far chose, while the interaction is undecided: a page answered from another tab after
   * the decision changes nothing, and its next form goes to the resume (load).
   */
  async function remember(details: Details, smart: SmartState): Promise<void> {
    await persistUndecided(db, withSmart(details, smart));
  }

  /** `details` with the steps' state `smart` in its result, unsaved. */
  function withSmart(details: Details, smart: SmartState): Details {
    details.result = { ...details.result, smart };
    return details;
  }

  /** The app asking, as the pages show it; undefined once it was suspended or removed mid-way. */
  async function clientView(details: Details): Promise<{ client: Client; view: Record<string, string | null> } | undefined> {
    const client = await host.provider.Client.find(String(details.params.client_id));
    if (!client) return undefined;
    const meta = client.metadata();
    return {
      client,
      view: {
        name: meta.client_name ?? client.clientId,
        logo: typeof meta.logo_uri === 'string' && meta.logo_uri.startsWith('https://') ? meta.logo_uri : null,
        uri: typeof meta.client_uri === 'string' && /^https?:\/\//.test(meta.client_uri) ? meta.client_uri : null,
        policyUri: typeof meta.policy_uri === 'string' && /^https?:\/\//.test(meta.policy_uri) ? meta.policy_uri : null,
      },
    };
  }

  /** What the launch policy decides on (src/smart/launch-policy.ts), as far as the interaction and its user tell. */
  function launchState(details: Details, client: Client, user: User | undefined, named: NamedPatients | undefined, smart: SmartState): { -readonly [K in keyof LaunchState]: LaunchState[K] } {
    const launchId = typeof details.params.launch === 'string' ? details.params.launch : undefined;
    return {
      signIn: signInAsked(details),
      user: user && { id: user.id, patients: named?.ids },
      launch: smart.launch ? { kind: 'taken', launch: smart.launch } : launchId ? { kind: 'requested' } : { kind: 'none' },
      grantable: grantableOf(details, client),
      patient: smart.patient,
      encounter: smart.encounter,
      encounters: undefined,
      preApproved: (client.metadata() as Record<string, unknown>)[CONSENT_PROPERTY] === 'pre-approved' || smart.launcher?.skipConsent === true,
    };
  }

  const grantableOf = (details: Details, client: Client): Scope[] =>
    grantableScopes(parseScopes(typeof details.params.scope === 'string' ? details.params.scope : undefined).scopes, registeredScopes(client)).granted;

  /** The patient a page names: one already read (the picker's answer, the user's own patients), or read now. */
  const shownPatient = async (id: string | undefined, known: readonly PatientSummary[]): Promise<PatientSummary | undefined> =>
    id === undefined ? undefined : (known.find((p) => p.id === id) ?? (await findPatients(db, [id]))[0]);

  /**
   * Shows the page the authorization needs next, or decides it when no page is needed: the launch policy
   * (src/smart/launch-policy.ts) names each step; this gathers the facts it asks for and records the answers.
   * `patientUnsaved`: the interaction's patient was chosen by this request and is not saved yet (the picker's answer).
   */
  async function step(request: Req, reply: FastifyReply, details: Details, extra: StepExtra = {}): Promise<FastifyReply> {
    const { uid } = details;
    const csrf = csrfFor(details);
    const asking = await clientView(details);
    if (!asking) return appGone(request, reply);
    const { client, view: clientInfo } = asking;
    const status = extra.status ?? 200;

    const user = await userOf(details);
    const smart = smartOf(details);
    const launchId = typeof details.params.launch === 'string' ? details.params.launch : undefined;
    // The user's patients, with the names the consent page shows for them (none to read for a clinician).
    const named = extra.named ?? (user && (await patientsNamedOf(db, user)));
    const known = [...(extra.chosen ? [extra.chosen] : []), ...(named?.summaries ?? [])];
    const state = launchState(details, client, user, named, smart);
    // A patient chosen here or by the picker's answer is saved before a page whose answer needs it (the
    // encounter picker); the consent page carries it instead, sealed for this interaction (patientSeal), and its
    // answer saves it with the decision: one write fewer per launch.
    let patientUnsaved = extra.patientUnsaved ?? false;
    const save = async () => {
      await remember(details, smart);
      patientUnsaved = false;
    };
    for (;;) {
      const next = nextStep(state);
      switch (next.kind) {
        case 'sign-in': {
          if (deps.tiered?.asked(details.params)) {
            return deps.tiered.step(reply, details.params, uid, smart.tiered, {
              finish: (result) => finish(reply, details, result, false),
              remember: (value) => remember(details, { ...smart, tiered: value }),
              unlinkedPage: (idp, sub) => page(reply, 403, 'tiered-unlinked', { client: clientInfo, csrf, abortAction: urls(uid).abort, idp, sub }),
              audit: (event) => auditFor(request, details, event),
            });
          }
          const launcherUser = await launcherSignIn(launchId);
          if (launcherUser) return signInAs(request, reply, details, launcherUser, { type: 'login.success', userId: launcherUser, details: { via: 'sandbox launcher: sign-in skipped' } });
          return page(reply, status, 'login', { client: clientInfo, csrf, action: urls(uid).login, abortAction: urls(uid).abort, error: extra.loginError ?? null, username: extra.username ?? '' });
        }
        case 'refuse':
          return finish(reply, details, { error: next.refusal.error, error_description: next.refusal.description }, false);
        case 'take-launch': {
          // Irreversible: the launch is spent whatever happens next; the EHR makes a new one for a new try.
          const launch = await consumeLaunch(db, box, launchId!);
          const taken = launch && { ...launchContextOf(launch), user: launch.user };
          state.launch = taken ? { kind: 'taken', launch: taken } : { kind: 'gone' };
          if (!launch || !taken || takenLaunchRefusal(taken, state.user!)) continue;
          await auditFor(request, details, { type: 'launch.used', userId: user!.id, patientId: launch.patient, details: { launch_id: launch.id, encounter: launch.encounter } });
          smart.launchId = launch.id;
          smart.launch = taken;
          if (config.sandbox) {
            const options = await findLauncherOptions(db, launch.id);
            if (options) {
              smart.launcher = { skipConsent: options.skipConsent, simulate: options.simulate, patients: options.patients };
              state.preApproved ||= options.skipConsent;
            }
          }
          if (launch.patient) smart.patient = state.patient = launch.patient;
          if (launch.encounter) smart.encounter = state.encounter = launch.encounter;
          await save();
          continue;
        }
        case 'set-patient':
          smart.patient = state.patient = next.patient;
          details.result = { ...details.result, smart };
          patientUnsaved = true;
          continue;
        case 'pick-patient': {
          const query = (extra.search?.query ?? request.query.q ?? '').slice(0, 200);
          // The sandbox launcher may offer a few patients: those of them this user may choose.
          const launcherOffers = smart.launcher?.patients;
          const among = launcherOffers ? (next.among === 'directory' ? launcherOffers : launcherOffers.filter((p) => next.among.includes(p))) : next.among;
          const patients = among === 'directory' ? await searchPatients(replica.db('patient-search'), query) : await findPatients(db, among);
          // Consent on the same page where nothing comes between the two (see consentWithPicker): its answer is the decision.
          const asked = smart.launcher?.simulate ? undefined : consentWithPicker(state);
          let options = asked && consentOptions(asked);
          if (options && extra.search) {
            // A search from this page keeps what the person chose: only what the page offers.
            const chosen = new Set(extra.search.scopes);
            const unknown = [...chosen].find((scope) => !options!.some((o) => o.scope === scope));
            if (unknown !== undefined) return errorPage(request, reply, 400, 'invalid_request', `${unknown} was not offered on this consent page.`);
            options = options.map((o) => ({ ...o, checked: chosen.has(o.scope) }));
          }
          const consent = options && {
            headline: consentHeadline(clientInfo.name ?? client.clientId, { picking: state.user!.patients ? 'own' : 'any' }, options, state.user!.patients),
            userName: user!.name,
            groups: groupOptions(options),
            data: dataOptions(options),
            appsPage: `${basePath}/account/apps`,
          };
          return page(reply, status, 'pick-patient', { client: clientInfo, csrf, action: consent ? urls(uid).consent : urls(uid).patient, searchAction: urls(uid).self, abortAction: urls(uid).abort, searchable: among === 'directory', query, patients, searchLimit: SEARCH_LIMIT, picked: extra.search?.patient ?? null, consent: consent ?? null });
        }
        case 'look-up-encounters':
          state.encounters = (await encountersOf(db, state.patient!)).map((e) => e.id);
          continue;
        case 'set-no-encounter':
          smart.encounter = state.encounter = null;
          await save();
          continue;
        case 'pick-encounter': {
          if (patientUnsaved) await save();
          const patient = await shownPatient(state.patient, known);
          // The patient was the picker's answer (not the EHR's): another may be chosen from here (Back leads nowhere).
          const changeable = !smart.launch?.patient && nextStep({ ...state, patient: undefined, encounter: undefined, encounters: undefined }).kind === 'pick-patient';
          return page(reply, status, 'pick-encounter', { client: clientInfo, csrf, action: urls(uid).encounter, abortAction: urls(uid).abort, changeAction: changeable ? urls(uid).patient : null, encounters: await encountersOf(db, state.patient!), patientName: patient?.name ?? state.patient });
        }
        case 'finish':
          if (smart.launcher?.simulate === 'consent_denied') return simulatedDenial(request, reply, details);
          return decide(request, reply, details, client, user!, smart, next.granted);
        case 'consent': {
          if (smart.launcher?.simulate === 'consent_denied') return simulatedDenial(request, reply, details);
          const patient = await shownPatient(state.patient, known);
          const options = consentOptions(next.offered);
          const patientName = patient?.name ?? (state.patient ? `patient ${state.patient}` : null);
          return page(reply, status, 'consent', {
            client: clientInfo,
            csrf,
            patientSeal: patientUnsaved && state.patient ? { patient: state.patient, mac: patientMac(uid, state.patient) } : null,
            action: urls(uid).consent,
            userName: user!.name,
            headline: consentHeadline(clientInfo.name ?? client.clientId, patientName === null ? null : { name: patientName }, options, state.user!.patients),
            groups: groupOptions(options),
            data: dataOptions(options),
            appsPage: `${basePath}/account/apps`,
          });
        }
      }
    }
  }

  /**
   * The user the sandbox launcher signs in for a launch that skips sign-in: the launch's user, while the
   * launch can still be taken. Sandbox mode only.
   */
  async function launcherSignIn(launchId: string | undefined): Promise<string | undefined> {
    if (!config.sandbox || !launchId || launchId.length > 200) return undefined;
    const launch = await findLaunch(db, box, launchId);
    if (!launch?.user || launch.consumedAt || launch.expiresAt.getTime() <= Date.now()) return undefined;
    if (!(await findLauncherOptions(db, launch.id))?.skipLogin) return undefined;
    // Never an operator (the launcher refuses to make such a launch; one may have become an operator since).
    const user = await findUser(db, launch.user);
    return user && !operatorRolesOf(user).length ? user.id : undefined;
  }

  /** consent_denied, simulated by the sandbox launcher: the authorization ends as if the user chose Deny. */
  async function simulatedDenial(request: Req, reply: FastifyReply, details: Details): Promise<FastifyReply> {
    const simulated = SIMULATED_ERRORS.consent_denied;
    const event = { type: 'consent.denied', outcome: 'failure', userId: accountOf(details), patientId: smartOf(details).patient, details: { requested: details.params.scope, simulated: 'consent_denied' } } as const;
    await decideWith(request, details, { error: simulated.error, error_description: simulated.description }, false, event);
    return reply.redirect(details.returnTo, 303);
  }

  /** Records the decision: a new grant with exactly the granted scopes, and its launch context. */
  async function decide(request: Req, reply: FastifyReply, details: Details, client: Client, user: User, smart: SmartState, granted: readonly Scope[]): Promise<FastifyReply> {
    // No resource: a sign-in here as a UDAP Tiered OAuth identity provider (oidc/resource-server.ts), for the id_token only.
    const fhirBase = typeof details.params.resource === 'string' ? details.params.resource : undefined;
    const texts = granted.map(formatScope);
    const grant = new host.provider.Grant({ accountId: user.id, clientId: client.clientId });
    for (const text of texts) {
      if (fhirBase) grant.addResourceScope(fhirBase, text);
      if (STATIC_SCOPES.includes(text)) grant.addOIDCScope(text);
    }
    // The grant, its launch context and the decision are written with the consent's audit event, in one
    // statement: all of them or none (decideWith).
    const rows: PayloadRowWrite[] = [];
    const grantId = await deferSaves(rows, () => grant.save());
    const patient = smart.patient;
    let contexts: GrantContextWrite[] | undefined;
    if (fhirBase) {
      const context = grantContextOf({
        fhirBase,
        launch: smart.launch,
        launchId: smart.launchId,
        patient,
        encounter: smart.encounter ?? undefined,
        userFhirResource: user.fhirUser,
        grantedScopes: texts,
        defaultStyleUrl: `${config.issuer}/smart-style.json`,
      });
      contexts = [grantContextWrite(grantId, context, { clientId: client.clientId, accountId: user.id, scope: texts.join(' ') }, new Date(Date.now() + grantLifetimeSeconds(config).grant * 1000))];
    }
    const event = {
      type: 'consent.granted',
      userId: user.id,
      patientId: patient,
      grantId,
      scope: texts.join(' '),
      details: { requested: details.params.scope, pre_approved: (client.metadata() as Record<string, unknown>)[CONSENT_PROPERTY] === 'pre-approved' },
    } as const;
    // oidc-provider issues what was both requested and granted; the request now says what was granted, so
    // that narrowed scopes (a category chosen instead of all Observations) are issued too.
    details.params.scope = texts.join(' ');
    // The sign-in on this interaction's sign-in page, if any, goes with the consent: one resume for both.
    const login = smart.signedIn && { login: { accountId: smart.signedIn.accountId, ts: smart.signedIn.ts } };
    await decideWith(request, details, { ...login, consent: { grantId }, smart: { ...smart, resolved: true } }, true, event, { payloads: rows, contexts });
    return reply.redirect(details.returnTo, 303);
  }

  app.get<{ Params: { uid: string }; Querystring: { q?: string } }>(
    '/interaction/:uid',
    { schema: { params: { type: 'object', properties: { uid: { type: 'string', maxLength: 64 } } }, querystring: { type: 'object', properties: { q: { type: 'string', maxLength: 200 } } } } },
    async (request, reply) => {
      const details = await load(request as Req, reply);
      return details ? step(request as Req, reply, details) : reply;
    },
  );

  // The address a form's answer leaves in the address bar, asked for again (Enter in it, a bookmark, a reload
  // after the answer's page): the interaction's page, which shows where it stands.
  app.get<{ Params: { uid: string; step: string } }>(
    '/interaction/:uid/:step',
    { schema: { params: { type: 'object', properties: { uid: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' } } } } },
    (request, reply) => (FORM_STEPS.has(request.params.step) ? reply.redirect(urls(request.params.uid).self, 303) : reply.callNotFound()),
  );

  const post = (path: string, handler: (request: Req, reply: FastifyReply, details: Details) => Promise<FastifyReply>) =>
    app.post<{ Params: { uid: string }; Body: Body }>(`/interaction/:uid/${path}`, { schema: { body: bodySchema } }, async (request, reply) => {
      const details = await load(request as Req, reply);
      if (!details) return reply;
      if (!checkCsrf(request as Req, details, path)) return errorPage(request, reply, 403, 'invalid_request', 'This form has expired. Go back to the app and start again.');
      return handler(request as Req, reply, details);
    });

  // Only the sign-in form reads the device cookie: its path keeps it to the interaction pages.
  const deviceCookieAttributes = `Path=${basePath}/interaction; Max-Age=${DEVICE_COOKIE_SECONDS}; HttpOnly; SameSite=Lax${config.issuer.startsWith('https:') ? '; Secure' : ''}`;

  post('login', async (request, reply, details) => {
    // The sign-in form sent again (a reload of its answer, Back) once the interaction has its user: where it stands.
    if (!signInAsked(details)) return reply.redirect(urls(details.uid).self, 303);
    const username = (request.body.username ?? '').trim();
    const readAt = users.generation;
    const result = await signIn(db, box, { username, password: request.body.password ?? '', ip: request.ip, deviceCookie: readCookie(request.headers.cookie, DEVICE_COOKIE) });
    if (!result.ok) {
      await auditFor(request, details, { type: 'login.failure', outcome: 'failure', userId: result.userId, details: { reason: result.reason } });
      if (result.reason === 'invalid') return step(request, reply, details, { loginError: 'Wrong user name or password.', status: 401, username });
      // RFC 6585 §4. The same answer whichever limit was reached and whether or not the user exists.
      void reply.header('retry-after', String(result.retryAfterSeconds));
      return step(request, reply, details, { loginError: `Too many failed attempts. Try again in ${Math.ceil(result.retryAfterSeconds / 60)} minute(s).`, status: 429, username });
    }
    // The next pages and the resume ask for this user by id: read already, with the password.
    users.prime(result.user, readAt);
    // The sign-in is kept in the interaction, with its login.success event, in one statement: both or neither (a
    // failure leaves the sign-in page to send again). It goes to oidc-provider with the decision (decide), and the
    // next page is this answer: no resume and no redirect in between (signInAs).
    return signInAs(request, reply, details, result.user.id, { type: 'login.success', userId: result.user.id }, () => {
      void reply.header('set-cookie', `${DEVICE_COOKIE}=${result.deviceCookie}; ${deviceCookieAttributes}`);
    });
  });

  /**
   * Signs `userId` in on this interaction, audited by `event` (`onSaved` runs once that is stored), and answers
   * with the next page (see the sign-in form). Unless the browser's session is another user's (prompt=login,
   * max_age): oidc-provider asks to end that session first, so the sign-in goes to it now, before any page is
   * shown for the new user or anything decided for them.
   */
  async function signInAs(request: Req, reply: FastifyReply, details: Details, userId: string, event: Parameters<typeof auditFor>[2], onSaved?: () => void): Promise<FastifyReply> {
    const switching = details.session?.accountId !== undefined && details.session.accountId !== userId;
    const saved = switching
      ? await decideWith(request, details, { login: { accountId: userId } }, false, event)
      : await saveWith(request, withSmart(details, { ...smartOf(details), signedIn: { accountId: userId, ts: Math.floor(Date.now() / 1000), id: randomUUID() } }), event);
    if (saved) onSaved?.();
    if (switching) return reply.redirect(details.returnTo, 303);
    // Another sign-in on this interaction was kept first (the form sent twice at once), or it was decided: the
    // interaction's page, where it stands (load sends a decided one on to its resume).
    if (!saved) return reply.redirect(urls(details.uid).self, 303);
    return step(request, reply, details);
  }

  post('patient', async (request, reply, details) => {
    const user = await userOf(details);
    const chosen = request.body.patient ?? '';
    const smart = smartOf(details);
    // The EHR's launch gave the patient: there is no picker to answer.
    if (smart.launch?.patient) return reply.redirect(urls(details.uid).self, 303);
    // "Choose another patient" from the encounter picker: the choice (and any visit) undone, the picker again.
    if (request.body.change !== undefined) {
      await remember(details, { ...smart, patient: undefined, encounter: undefined });
      return reply.redirect(urls(details.uid).self, 303);
    }
    const asking = await clientView(details);
    if (!asking) return appGone(request, reply);
    const named = user && (await patientsNamedOf(db, user));
    // Only where the interaction asks for a patient (the picker, which "Choose another patient" leads back to): sent
    // where none is asked (no patient scope, or an EHR launch that gave none), it would put a patient in the
    // token's context that neither the app nor the EHR asked for.
    const asked = user !== undefined && nextStep({ ...launchState(details, asking.client, user, named, smart), patient: undefined, encounter: undefined, encounters: undefined }).kind === 'pick-patient';
    const picked = asked && (await pickable(user, named, smart, chosen));
    if (!picked) return notChoosable(request, reply);
    details.result = { ...details.result, smart: { ...smart, patient: chosen, encounter: undefined } };
    // The next page (encounter or consent) in this answer, not behind a redirect: one request and one load
    // of the interaction fewer; the choice is saved by that page's answer (see step). Sending the form again (a
    // reload) chooses the same patient again.
    return step(request, reply, details, { chosen: picked.inDirectory, named, patientUnsaved: true });
  });

  post('encounter', async (request, reply, details) => {
    const smart = smartOf(details);
    const chosen = request.body.encounter ?? '';
    // The EHR's launch gave the encounter (as it gives a patient): the context is the EHR's, not the form's.
    if (!smart.patient || smart.launch?.encounter) return reply.redirect(urls(details.uid).self, 303);
    const valid = chosen === 'none' || (await encountersOf(db, smart.patient)).some((e) => e.id === chosen);
    if (!valid) return errorPage(request, reply, 400, 'invalid_request', 'That visit cannot be chosen here.');
    await remember(details, { ...smart, encounter: chosen === 'none' ? null : chosen });
    return step(request, reply, details);
  });

  post('consent', async (request, reply, details) => {
    const stored = smartOf(details);
    // The search of the picker that asks for consent: the page again, with the results and the choices made.
    if (request.body.search !== undefined) {
      if (stored.patient !== undefined || request.body.patient_mac !== undefined || request.body.decision !== undefined) return alteredForm(request, reply);
      const scopes = request.body.scope === undefined ? [] : ([] as string[]).concat(request.body.scope);
      return step(request, reply, details, { search: { query: request.body.q ?? '', scopes, patient: request.body.patient } });
    }
    // The picker that asks for consent on the same page: the patient is chosen by this answer, not sealed.
    const picking = stored.patient === undefined && request.body.patient !== undefined && request.body.patient_mac === undefined;
    const patient = picking ? undefined : consentPatient(request, stored);
    if (patient === null) return alteredForm(request, reply);
    if (request.body.decision === 'deny') {
      await decideWith(request, details, { error: 'access_denied', error_description: 'the user denied access' }, false, { type: 'consent.denied', outcome: 'failure', userId: accountOf(details), patientId: patient, details: { requested: details.params.scope } });
      return reply.redirect(details.returnTo, 303);
    }
    if (request.body.decision !== 'approve') return errorPage(request, reply, 400, 'invalid_request', 'Choose Allow or Deny.');
    const user = await userOf(details);
    if (!user) return finish(reply, details, { error: 'login_required', error_description: 'the signed-in user no longer exists or was disabled' }, false);
    const asking = await clientView(details);
    if (!asking) return appGone(request, reply);
    const { client } = asking;
    let smart: SmartState;
    if (picking) {
      // As the picker's own answer is checked (post 'patient'), and only where the page asked for consent too.
      const chosen = request.body.patient!;
      const named = await patientsNamedOf(db, user);
      // A patient sent where the page chose none (the record was set, or its seal taken off): an altered form.
      if (stored.launcher?.simulate || consentWithPicker(launchState(details, client, user, named, stored)) === undefined) return alteredForm(request, reply);
      if (!(await pickable(user, named, stored, chosen))) return notChoosable(request, reply);
      smart = { ...stored, patient: chosen, encounter: undefined };
    } else {
      // An encounter chosen for another patient (the picker answered again, from a page before) is not this one's.
      smart = patient === stored.patient ? stored : { ...stored, patient, encounter: undefined };
    }
    const grantable = grantableOf(details, client);
    // Allow on a picker that asks for consent, sent without a patient (a browser does not let it).
    if (!smart.patient && needsPatient(grantable)) return errorPage(request, reply, 400, 'invalid_request', 'Choose the patient whose record to share, then Allow.');
    const offered = requirePatientContext(grantable, !!smart.patient).granted;
    const chosen = request.body.scope === undefined ? [] : ([] as string[]).concat(request.body.scope);
    let granted: Scope[];
    try {
      granted = applyConsent(offered, chosen);
    } catch (error) {
      if (!(error instanceof ConsentError)) throw error;
      return errorPage(request, reply, 400, 'invalid_request', error.message);
    }
    const final = requirePatientContext(granted, !!smart.patient).granted;
    if (!final.length) return finish(reply, details, { error: 'access_denied', error_description: 'the user granted no access' }, false);
    return decide(request, reply, details, client, user, smart, final);
  });

  post('abort', async (_request, reply, details) => {
    const tiered = smartOf(details).tiered?.outcome;
    // HL7 UDAP Security IG §6: a person the data holder cannot resolve to a local user ends in access_denied.
    const description = tiered?.kind === 'unlinked' ? `the person signed in at ${tiered.idp} is not linked to a user of this server` : 'the user cancelled the request';
    return finish(reply, details, { error: 'access_denied', error_description: description }, false);
  });
  deps.tiered?.callbackRoute(app, basePath, errorPage);
}

/** The steps whose forms answer to `/interaction/:uid/<step>`. */
const FORM_STEPS: ReadonlySet<string> = new Set(['login', 'patient', 'encounter', 'consent', 'abort']);

/** The steps whose forms the sign-in page shows, before the interaction has its user (see csrfFor). */
const SIGN_IN_PAGE_FORMS: ReadonlySet<string> = new Set(['login', 'abort']);

/**
 * Whether an interaction's result ends it: what {@link withDecision} sets, as against the steps' own state (`smart`).
 * The database tells a decided interaction by the same keys (decideInteractionsSql in src/db/payload-rows.ts).
 */
function isConcluded(result: Details['result']): boolean {
  return result !== undefined && ('login' in result || 'consent' in result || 'error' in result);
}

const GROUPS: readonly { key: Exclude<ConsentOption['group'], 'data'>; title: string; hint?: string }[] = [
  { key: 'identity', title: 'About you' },
  { key: 'context', title: 'What is open now' },
  { key: 'refresh', title: 'How long' },
  { key: 'other', title: 'Other' },
];

/** The groups of scopes that are not health data, each a fieldset. */
function groupOptions(options: readonly ConsentOption[]) {
  return GROUPS.map((g) => ({ title: g.title, hint: g.hint ?? null, options: options.filter((o) => o.group === g.key) })).filter((g) => g.options.length);
}

/**
 * Health data by USCDI data class: what the app asked for, shown; and the narrower alternatives (share
 * less), folded away by class, so that a request for everything fits a screen.
 */
function dataOptions(options: readonly ConsentOption[]) {
  const data = options.filter((o) => o.group === 'data');
  const byClass = (list: readonly ConsentOption[]) =>
    DATA_CLASSES.map((name) => ({ name, options: list.filter((o) => o.dataClass === name) })).filter((c) => c.options.length);
  const alternatives = data.filter((o) => o.narrows !== undefined);
  return {
    requested: byClass(data.filter((o) => o.narrows === undefined)),
    alternatives: byClass(alternatives),
    alternativeCount: alternatives.length,
    // Unfolded where the person chose one already (the picker shown again by a search).
    alternativesChosen: alternatives.some((o) => o.checked),
  };
}

/**
 * The consent page's question. User-level scopes reach every patient the user may access, so with one
 * patient in context the question names that patient and the others.
 */
function consentHeadline(app: string, patient: { name: string } | { picking: 'any' | 'own' } | null, options: readonly ConsentOption[], userPatients: readonly string[] | undefined): string {
  const manyPatients = options.some((o) => o.checked && o.anyPatient) && (userPatients === undefined || userPatients.length > 1);
  const others = manyPatients ? ' and those of other patients you can access' : '';
  if (patient && 'name' in patient) return `Allow ${app} to access ${patient.name}'s record${others}?`;
  if (patient) return `Allow ${app} to access the record of the ${patient.picking === 'any' ? 'patient' : 'person'} you choose${others}?`;
  return manyPatients ? `Allow ${app} to access the records of the patients you can access?` : `Allow ${app} to access your information?`;
}
