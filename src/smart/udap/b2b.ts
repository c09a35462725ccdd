/**
 * The B2B Authorization Extension Object, `hl7-b2b` (HL7 UDAP Security IG §5.2.1.1): what a client using
 * client_credentials says about the request (which organization, for what purpose, for which person), in the
 * `extensions` claim of its authentication token. Pure. Failures are `invalid_grant`. A missing consent policy
 * the community requires also names the policies in `extensions: {"hl7-b2b": {"consent_required": [...]}}`:
 * this server's own hint, which the IG (FAST Security 3.0.0-ballot and every earlier version) does not define;
 * clients that do not know it read the same list in `error_description`.
 */
export interface B2bPolicy {
  /** The purpose_of_use codes the community allows; undefined: any code. */
  readonly purposesOfUse: readonly string[] | undefined;
  /** One of these must be among consent_policy (undefined: none required). */
  readonly consentPolicies: readonly string[] | undefined;
  /** TEFCA: exactly one purpose_of_use. */
  readonly singlePurpose: boolean;
  /** TEFCA: the exchange purpose the client registered for, which purpose_of_use must be. */
  readonly exchangePurpose?: string | undefined;
}

export class B2bError extends Error {
  override name = 'B2bError';
  constructor(
    message: string,
    /** Members of the token error response's `extensions` (this server's `consent_required` hint). */
    readonly extensions?: Record<string, unknown>,
  ) {
    super(message);
  }
}

export const B2B_KEY = 'hl7-b2b';

const isUri = (value: unknown): value is string => typeof value === 'string' && /^[A-Za-z][A-Za-z0-9+.-]*:\S+$/.test(value);
const isText = (value: unknown): value is string => typeof value === 'string' && value.trim() !== '' && value.length <= 1024;
/**
 * IG §5.2.1.1: each consent_reference is "an absolute URL consistent with a literal reference to a FHIR Consent
 * or DocumentReference resource" (FHIR R4 §2.3.0.1: `{base}/{type}/{id}`, optionally `/_history/{vid}`).
 */
const isConsentReference = (value: unknown): boolean =>
  typeof value === 'string' && value.length <= 2048 && /^https?:\/\/[^\s/]+(\/\S*)?\/(Consent|DocumentReference)\/[A-Za-z0-9\-.]{1,64}(\/_history\/[A-Za-z0-9\-.]{1,64})?$/.test(value);

/**
 * Checks the `hl7-b2b` member of an authentication token's `extensions` claim.
 * @returns the object to carry with the token (the members the IG defines, as sent).
 * @throws {B2bError} naming the member at fault.
 */
export function checkB2bExtension(extensions: unknown, policy: B2bPolicy): Record<string, unknown> {
  const fail = (message: string, extra?: Record<string, unknown>): never => {
    throw new B2bError(`hl7-b2b: ${message}`, extra);
  };
  if (extensions === undefined) return fail('the extensions claim of the client assertion must carry the hl7-b2b object for client_credentials (IG §5.2.1.1)');
  if (extensions === null || typeof extensions !== 'object' || Array.isArray(extensions)) return fail('the extensions claim must be a JSON object');
  const b2b = (extensions as Record<string, unknown>)[B2B_KEY];
  if (b2b === undefined) return fail('the extensions claim of the client assertion must carry the hl7-b2b object for client_credentials (IG §5.2.1.1)');
  if (b2b === null || typeof b2b !== 'object' || Array.isArray(b2b)) return fail('must be a JSON object');
  const o = b2b as Record<string, unknown>;
  if (o.version !== '1') fail('version must be "1"');
  if (!isUri(o.organization_id)) fail('organization_id is required: a URI identifying the requesting organization');
  if (o.organization_name !== undefined && !isText(o.organization_name)) fail('organization_name must be a non-empty string');
  const purposes = o.purpose_of_use;
  if (!Array.isArray(purposes) || purposes.length === 0 || !purposes.every(isText)) return fail('purpose_of_use is required: a non-empty array of codes');
  if (policy.singlePurpose && purposes.length !== 1) fail(`purpose_of_use must hold exactly one code in this community; it holds ${purposes.length}`);
  if (policy.exchangePurpose !== undefined && purposes[0] !== policy.exchangePurpose) fail(`purpose_of_use must be ${policy.exchangePurpose}, the exchange purpose this client registered for`);
  const allowed = policy.purposesOfUse;
  if (allowed) for (const code of purposes) if (!allowed.includes(code)) fail(`purpose_of_use ${code} is not one this community allows (${allowed.join(', ')})`);
  // A person acting: subject_id and subject_role describe the person subject_name names.
  if (o.subject_name !== undefined && !isText(o.subject_name)) fail('subject_name must be a non-empty string');
  for (const name of ['subject_id', 'subject_role'] as const) {
    if (o[name] === undefined) continue;
    if (!isText(o[name])) fail(`${name} must be a non-empty string`);
    if (o.subject_name === undefined) fail(`${name} is given for a person acting, who must then be named in subject_name`);
  }
  const policies = o.consent_policy;
  if (policies !== undefined && (!Array.isArray(policies) || policies.length === 0 || !policies.every(isUri))) fail('consent_policy must be a non-empty array of URIs');
  const references = o.consent_reference;
  if (references !== undefined) {
    if (!Array.isArray(references) || references.length === 0 || !references.every(isConsentReference)) fail('consent_reference must be a non-empty array of absolute URLs of FHIR Consent or DocumentReference resources ({base}/Consent/{id} or {base}/DocumentReference/{id})');
    if (policies === undefined) fail('consent_reference is given only with the consent_policy it relates to');
  }
  const required = policy.consentPolicies;
  if (required?.length && !(policies as string[] | undefined)?.some((p) => required.includes(p))) {
    fail(`consent under one of these policies is required: ${required.join(', ')}`, { [B2B_KEY]: { consent_required: [...required] } });
  }
  const kept = ['version', 'subject_name', 'subject_id', 'subject_role', 'organization_name', 'organization_id', 'purpose_of_use', 'consent_policy', 'consent_reference'];
  return Object.fromEntries(kept.filter((k) => o[k] !== undefined).map((k) => [k, o[k]]));
}
