import type { LaunchContext } from '../launch/context.js';
import { needsPatient, requirePatientContext } from './scopes/grant.js';
import type { Scope } from './scopes/scope.js';

/**
 * The SMART launch as decisions (SMART App Launch 2.2 §EHR launch, §Standalone launch; ONC (g)(10) consent):
 * which step an authorization takes next, and whether a `launch` parameter may be used. Pure functions over
 * what is known so far; the interaction pages (src/interactions) gather the facts, show the page a step names
 * and record the answers, and oidc-provider's seams (src/oidc) check the `launch` parameter with the same rules.
 */

/** An EHR launch taken by an authorization: its context, and the user the EHR launched as (if it said). */
export interface TakenLaunch extends LaunchContext {
  readonly user?: string | undefined;
}

/** An EHR launch as it is stored: who and what it is for, and whether it can still be used. */
export interface LaunchFacts extends TakenLaunch {
  readonly client_id?: string | undefined;
  readonly fhir_base?: string | undefined;
  readonly expiresAt: Date;
  readonly consumedAt: Date | null;
}

/** The refusals a launch can end in, each with the one message that names it. */
export const LAUNCH_REFUSALS = {
  noLaunchScope: { error: 'invalid_scope', description: 'the launch parameter needs the launch scope' },
  unknownLaunch: { error: 'invalid_request', description: 'launch is unknown or expired: the EHR must create a new one' },
  usedLaunch: { error: 'invalid_request', description: 'launch was already used: the EHR must create a new one for each launch' },
  otherClient: { error: 'invalid_request', description: 'launch was issued for another client' },
  otherFhirServer: { error: 'invalid_request', description: 'launch was issued for another FHIR server (aud)' },
  launchGone: { error: 'invalid_request', description: 'launch was already used or has expired: the EHR must create a new one' },
  otherUser: { error: 'access_denied', description: 'the launch was created for another user than the one who signed in' },
  foreignPatient: { error: 'access_denied', description: "the signed-in user may not act for the launch's patient" },
  userGone: { error: 'login_required', description: 'the signed-in user no longer exists or was disabled' },
  noPatientRecord: { error: 'access_denied', description: 'the signed-in user has no patient record to share' },
} as const;
export type LaunchRefusal = (typeof LAUNCH_REFUSALS)[keyof typeof LAUNCH_REFUSALS];

/**
 * Whether a `launch` parameter may start an authorization (checked before any page is shown): asked for with
 * the `launch` scope, known, unexpired, unused, issued for this client and this FHIR server.
 */
export function launchParamRefusal(launch: LaunchFacts | undefined, request: { readonly scopes: readonly string[]; readonly clientId: string; readonly fhirBase: string | undefined; readonly now: Date }): LaunchRefusal | undefined {
  if (!request.scopes.includes('launch')) return LAUNCH_REFUSALS.noLaunchScope;
  if (!launch || launch.expiresAt.getTime() <= request.now.getTime()) return LAUNCH_REFUSALS.unknownLaunch;
  if (launch.consumedAt) return LAUNCH_REFUSALS.usedLaunch;
  if (launch.client_id && launch.client_id !== request.clientId) return LAUNCH_REFUSALS.otherClient;
  if (launch.fhir_base && launch.fhir_base !== request.fhirBase) return LAUNCH_REFUSALS.otherFhirServer;
  return undefined;
}

/** Who signed in, as far as the launch needs to know. */
export interface Signer {
  readonly id: string;
  /** The patients the user may act for; undefined for users who search the whole directory (clinicians). */
  readonly patients: readonly string[] | undefined;
}

/** What is known of an authorization in progress. */
export interface LaunchState {
  /** Whether oidc-provider still wants the user to sign in. */
  readonly signIn: boolean;
  /** The signed-in user; undefined when the session's user no longer exists or was disabled. */
  readonly user: Signer | undefined;
  /**
   * The EHR launch: none for a standalone launch; `requested` until it is taken (single use); `gone` when it
   * could not be taken; `taken` with its facts.
   */
  readonly launch: { readonly kind: 'none' } | { readonly kind: 'requested' } | { readonly kind: 'gone' } | { readonly kind: 'taken'; readonly launch: TakenLaunch };
  /** What may be granted: the requested scopes within what the client is registered for. */
  readonly grantable: readonly Scope[];
  /** The patient in context: the EHR's, or the one chosen. */
  readonly patient: string | undefined;
  /** The encounter in context; null when none was chosen or there is none; undefined while undecided. */
  readonly encounter: string | null | undefined;
  /** The patient's encounters, once looked up; undefined before. */
  readonly encounters: readonly string[] | undefined;
  /** The client is pre-approved by an operator: no consent page. */
  readonly preApproved: boolean;
}

export type LaunchStep =
  | { readonly kind: 'sign-in' }
  /** Take the EHR's launch (irreversible: a launch is single use), then decide again. */
  | { readonly kind: 'take-launch' }
  /** The patient follows without a question (the user may act for one patient only); record it, decide again. */
  | { readonly kind: 'set-patient'; readonly patient: string }
  | { readonly kind: 'pick-patient'; readonly among: readonly string[] | 'directory' }
  /** Look up the patient's encounters, then decide again. */
  | { readonly kind: 'look-up-encounters' }
  /** There is no encounter to choose: record none, decide again. */
  | { readonly kind: 'set-no-encounter' }
  | { readonly kind: 'pick-encounter' }
  /** Ask the user; `offered` is what the consent page offers. */
  | { readonly kind: 'consent'; readonly offered: readonly Scope[] }
  /** Grant `granted` without a page (a pre-approved client). */
  | { readonly kind: 'finish'; readonly granted: readonly Scope[] }
  | { readonly kind: 'refuse'; readonly refusal: LaunchRefusal };

const refuse = (refusal: LaunchRefusal): LaunchStep => ({ kind: 'refuse', refusal });

/** The next step of an authorization. */
export function nextStep(s: LaunchState): LaunchStep {
  if (s.signIn) return { kind: 'sign-in' };
  if (!s.user) return refuse(LAUNCH_REFUSALS.userGone);
  if (s.launch.kind === 'requested') return { kind: 'take-launch' };
  if (s.launch.kind === 'gone') return refuse(LAUNCH_REFUSALS.launchGone);
  if (s.launch.kind === 'taken') {
    const refusal = takenLaunchRefusal(s.launch.launch, s.user);
    if (refusal) return refuse(refusal);
  }
  // A patient is needed, by scope (patient/ scopes, launch/patient), and the EHR did not give one.
  if (needsPatient(s.grantable) && !s.patient) {
    const own = s.user.patients;
    if (own?.length === 1) return { kind: 'set-patient', patient: own[0]! };
    if (own?.length === 0) return refuse(LAUNCH_REFUSALS.noPatientRecord);
    return { kind: 'pick-patient', among: own ?? 'directory' };
  }
  // An encounter is asked for (launch/encounter), the EHR did not give one, and there is a patient to have one.
  if (asksForEncounter(s.grantable) && s.patient && s.encounter === undefined) {
    if (s.encounters === undefined) return { kind: 'look-up-encounters' };
    return s.encounters.length ? { kind: 'pick-encounter' } : { kind: 'set-no-encounter' };
  }
  const offered = requirePatientContext(s.grantable, !!s.patient).granted;
  return s.preApproved ? { kind: 'finish', granted: offered } : { kind: 'consent', offered };
}

/** A stand-in for the patient the picker will be answered with; never stored. */
const PICKED = '\u0000picked';

/**
 * What the consent page would offer for any patient the picker may be answered with, when nothing comes between
 * that answer and the consent page (no encounter to ask about, no pre-approval): the picker then asks for
 * consent on the same page, one request fewer. Undefined otherwise, and when the next step is not the picker.
 */
export function consentWithPicker(s: LaunchState): readonly Scope[] | undefined {
  if (nextStep(s).kind !== 'pick-patient') return undefined;
  // Which patient does not change what is offered (requirePatientContext asks only whether there is one).
  const picked = nextStep({ ...s, patient: PICKED, encounter: undefined, encounters: undefined });
  return picked.kind === 'consent' ? picked.offered : undefined;
}

/** Whether the user who signed in may go on with the launch the EHR made. */
export function takenLaunchRefusal(launch: TakenLaunch, user: Signer): LaunchRefusal | undefined {
  if (launch.user && launch.user !== user.id) return LAUNCH_REFUSALS.otherUser;
  // The EHR's patient is one the signed-in user may act for, as in the picker (clinicians: any).
  if (launch.patient && user.patients && !user.patients.includes(launch.patient)) return LAUNCH_REFUSALS.foreignPatient;
  return undefined;
}

function asksForEncounter(scopes: readonly Scope[]): boolean {
  return scopes.some((scope) => scope.kind === 'launch-context' && scope.resourceType === 'Encounter');
}

/** May the user choose this patient in the picker? Their own ones, or any in the directory for clinicians. */
export function mayChoosePatient(user: Signer, patient: string, inDirectory: boolean): boolean {
  return user.patients ? user.patients.includes(patient) : inDirectory;
}
