import type { GrantContext, LaunchContext } from '../launch/context.js';

/**
 * The SMART context of an authorization (SMART App Launch 2.2 §Launch context arrives with your access_token):
 * what an EHR launch brings, what the authorization ends up with, and what of it the token response, every
 * refresh, introspection and the access token itself carry. One place decides each member and its default.
 */

/** The context members of anything that carries them, and nothing else. */
export function launchContextOf(from: LaunchContext): LaunchContext {
  const { patient, encounter, fhirContext, intent, need_patient_banner, smart_style_url, tenant } = from;
  return { patient, encounter, fhirContext, intent, need_patient_banner, smart_style_url, tenant };
}

/** How an authorization was decided: the launch it took (if any), what was chosen, by whom, what granted. */
export interface Decision {
  readonly fhirBase: string;
  readonly launch: LaunchContext | undefined;
  readonly launchId: string | undefined;
  readonly patient: string | undefined;
  readonly encounter: string | undefined;
  /** The user's FHIR resource, relative to the FHIR base (`Practitioner/123`). */
  readonly userFhirResource: string;
  readonly grantedScopes: readonly string[];
  /** The server's own style sheet, the default `smart_style_url`. */
  readonly defaultStyleUrl: string;
}

/** The context an authorization is granted with, its defaults applied. */
export function grantContextOf(d: Decision): GrantContext {
  const launch = d.launch ?? {};
  return {
    fhirBase: d.fhirBase,
    patient: d.patient,
    encounter: d.encounter,
    fhirContext: launch.fhirContext,
    intent: launch.intent,
    // The app shows a patient banner unless the EHR says it shows its own.
    need_patient_banner: launch.need_patient_banner ?? (d.patient ? true : undefined),
    smart_style_url: launch.smart_style_url ?? d.defaultStyleUrl,
    tenant: launch.tenant,
    launchId: d.launchId,
    // SMART App Launch 2.2 §fhirUser: an absolute URL, under the FHIR base the token is for.
    fhirUser: d.grantedScopes.includes('fhirUser') ? `${d.fhirBase}/${d.userFhirResource}` : undefined,
  };
}

/** The launch-context members of a token response (and of every refresh): SMART App Launch 2.2 §Token response. */
export function tokenResponseContext(context: GrantContext): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  // A bare id, "123", not "Patient/123".
  if (context.patient) out.patient = context.patient;
  if (context.encounter) out.encounter = context.encounter;
  if (context.fhirContext?.length) out.fhirContext = context.fhirContext;
  if (context.need_patient_banner !== undefined) out.need_patient_banner = context.need_patient_banner;
  if (context.smart_style_url) out.smart_style_url = context.smart_style_url;
  if (context.intent) out.intent = context.intent;
  if (context.tenant) out.tenant = context.tenant;
  return out;
}

/**
 * What an access token carries besides its scope, and so what introspection reports of it: the token
 * response's context, and `fhirUser` when the token's scope holds it.
 */
export function accessTokenContext(context: GrantContext, tokenScopes: readonly string[]): Record<string, unknown> {
  const claims = tokenResponseContext(context);
  if (context.fhirUser && tokenScopes.includes('fhirUser')) claims.fhirUser = context.fhirUser;
  return claims;
}
