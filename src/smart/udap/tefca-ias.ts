import { Ajv, type ErrorObject } from 'ajv';

/**
 * The TEFCA IAS Authorization Extension Object, `tefca_ias` (RCE, SOP: Facilitated FHIR Implementation v2.0,
 * §6.11 Individual Access Services, Table 4): what an IAS Provider's client sends, next to `hl7-b2b`, in the
 * `extensions` claim of its authentication token when it asks for an individual's own records:
 *
 * - `version`: "1";
 * - `id_token`: the OpenID Connect id_token a credential service provider (CSP) issued after proofing the
 *   user's identity (the XP Implementation SOP: IAS);
 * - `user_information`: a FHIR RelatedPerson of the user (relationship ONESELF when the user is the patient);
 * - `patient_information`: a FHIR (US Core) Patient with the patient's known demographics;
 * - `consent_policy`: the access consent policies (URIs) standing for the identity proofing level;
 * - `consent_reference` (optional): absolute URLs of Consent or DocumentReference resources.
 *
 * Pure: the id_token's signature and the patient match are the caller's (src/oidc/tefca-ias.ts).
 */
export const TEFCA_IAS_KEY = 'tefca_ias';

/** The TEFCA exchange purpose code of Individual Access Services (Exchange Purposes SOP, Table 1). */
export const IAS_EXCHANGE_PURPOSE_CODE = 'T-IAS';

/** A registered exchange purpose is IAS when its code is T-IAS, bare or as `{code system URI}#T-IAS` (IG §5.2.1.3). */
export function isIasExchangePurpose(purpose: string | undefined): boolean {
  return purpose === IAS_EXCHANGE_PURPOSE_CODE || (purpose?.endsWith(`#${IAS_EXCHANGE_PURPOSE_CODE}`) ?? false);
}

export class TefcaIasError extends Error {
  override name = 'TefcaIasError';
  constructor(message: string) {
    super(`${TEFCA_IAS_KEY}: ${message}`);
  }
}

/** What the directory is searched with: the patient's name and birth date. */
export interface IasDemographics {
  readonly family: string;
  readonly given: string;
  readonly birthDate: string;
}

export interface IasRequest {
  readonly idToken: string;
  readonly demographics: IasDemographics;
  /** The user says they are the patient (RelatedPerson.relationship ONESELF). */
  readonly userIsPatient: boolean;
  /**
   * The members the token carries: all but `id_token`, the person's credential at the CSP, which is checked
   * here and not kept (stored tokens hold no one's credentials).
   */
  readonly carried: Record<string, unknown>;
}

const URI = '^[A-Za-z][A-Za-z0-9+.-]*:\\S+$';
const NAME = { type: 'string', minLength: 1, maxLength: 200 } as const;
const schema = {
  type: 'object',
  required: ['version', 'id_token', 'user_information', 'patient_information', 'consent_policy'],
  properties: {
    version: { const: '1' },
    // A compact JWS; 16 KiB is far above any id_token and below the 56 KiB body oidc-provider accepts.
    id_token: { type: 'string', maxLength: 16384, pattern: '^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$' },
    user_information: {
      type: 'object',
      required: ['resourceType'],
      properties: {
        resourceType: { const: 'RelatedPerson' },
        relationship: { type: 'array', items: { type: 'object', properties: { coding: { type: 'array', items: { type: 'object', properties: { code: { type: 'string' } } } } } } },
      },
    },
    patient_information: {
      type: 'object',
      required: ['resourceType', 'name', 'birthDate'],
      properties: {
        resourceType: { const: 'Patient' },
        name: { type: 'array', minItems: 1, maxItems: 10, items: { type: 'object', required: ['family', 'given'], properties: { family: NAME, given: { type: 'array', minItems: 1, maxItems: 10, items: NAME } } } },
        // A full date: a year or a month cannot single out a patient.
        birthDate: { type: 'string', pattern: '^\\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])$' },
      },
    },
    consent_policy: { type: 'array', minItems: 1, maxItems: 20, items: { type: 'string', maxLength: 1024, pattern: URI } },
    consent_reference: { type: 'array', minItems: 1, maxItems: 20, items: { type: 'string', maxLength: 2048, pattern: '^https?://\\S+$' } },
  },
} as const;

interface NameJson {
  use?: string;
  family: string;
  given: string[];
}
interface TefcaIasJson {
  id_token: string;
  user_information: { relationship?: { coding?: { code?: string }[] }[] };
  patient_information: { name: NameJson[]; birthDate: string };
}

const validate = new Ajv({ allErrors: false, strict: false }).compile<TefcaIasJson>(schema);

/** Members of Table 4 the token carries (id_token excepted: see {@link IasRequest.carried}). */
const CARRIED = ['version', 'user_information', 'patient_information', 'consent_policy', 'consent_reference'];

/**
 * Checks the `tefca_ias` member of an authentication token's `extensions` claim.
 * @throws {TefcaIasError} naming the member at fault.
 */
export function checkTefcaIasExtension(extensions: Record<string, unknown>): IasRequest {
  const ias = extensions[TEFCA_IAS_KEY];
  if (ias === undefined) throw new TefcaIasError(`the extensions claim of the client assertion must carry the ${TEFCA_IAS_KEY} object for Individual Access Services (with the CSP's id_token and the patient's demographics)`);
  if (!validate(ias)) throw new TefcaIasError(describe(validate.errors?.[0]));
  const name = ias.patient_information.name.find((n) => n.use === 'official') ?? ias.patient_information.name[0]!;
  // RelatedPerson.relationship: v3-RoleCode ONESELF when the user is the patient (Table 4).
  const userIsPatient = (ias.user_information.relationship ?? []).some((r) => (r.coding ?? []).some((c) => c.code === 'ONESELF'));
  const record = ias as unknown as Record<string, unknown>;
  return {
    idToken: ias.id_token,
    demographics: { family: name.family, given: name.given[0]!, birthDate: ias.patient_information.birthDate },
    userIsPatient,
    carried: Object.fromEntries(CARRIED.filter((k) => record[k] !== undefined).map((k) => [k, record[k]])),
  };
}

function describe(error: ErrorObject | undefined): string {
  if (!error) return 'is not valid';
  const path = error.instancePath.replace(/\/(\d+)/g, '[$1]').replace(/\//g, '.').replace(/^\./, '');
  const at = (member: string) => [path, member].filter(Boolean).join('.');
  switch (error.keyword) {
    case 'required':
      return `${at(String(error.params.missingProperty))} is required`;
    case 'const':
      return `${at('')} must be ${JSON.stringify(error.params.allowedValue)}`;
    case 'pattern':
      if (path === 'id_token') return 'id_token must be a signed JWT (compact serialization)';
      if (path === 'patient_information.birthDate') return 'patient_information.birthDate must be a full date (YYYY-MM-DD)';
      return `${path} must be ${path.startsWith('consent_reference') ? 'an absolute URL' : 'a URI'}`;
    case 'type':
      return `${path || 'the object'} must be ${error.params.type === 'object' ? 'a JSON object' : `of type ${String(error.params.type)}`}`;
    default:
      return `${path || 'the object'} ${error.message ?? 'is not valid'}`;
  }
}
