import type { FhirContextItem } from '../../db/tables/launches.js';
import { launchInput } from '../../http/launch-input.js';
import { createLaunch } from '../../launch/context.js';
import type { AdminDeps } from '../deps.js';
import { inputChecker } from './input.js';
import type { Operator } from './operator.js';

const fhirContextItem = {
  type: 'object',
  additionalProperties: false,
  properties: {
    reference: { type: 'string', minLength: 1, maxLength: 1024 },
    canonical: { type: 'string', minLength: 1, maxLength: 1024 },
    identifier: { type: 'object', additionalProperties: true, properties: { system: { type: 'string' }, value: { type: 'string' } } },
    type: { type: 'string', pattern: '^[A-Z][A-Za-z]{1,63}$' },
    role: { type: 'string', minLength: 1, maxLength: 1024, description: 'absent means "launch"; never empty' },
  },
  anyOf: [{ required: ['reference'] }, { required: ['canonical'] }, { required: ['identifier'] }],
} as const;

export interface NewLaunch {
  patient?: string;
  encounter?: string;
  fhirContext?: FhirContextItem[];
  intent?: string;
  need_patient_banner?: boolean;
  smart_style_url?: string;
  tenant?: string;
  client_id?: string;
  user?: string;
  aud?: string;
}

export const NEW_LAUNCH_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  properties: {
    patient: { type: 'string', pattern: '^[A-Za-z0-9\\-.]{1,64}$', description: 'a FHIR id: 1–64 of A–Z a–z 0–9 - .' },
    encounter: { type: 'string', pattern: '^[A-Za-z0-9\\-.]{1,64}$', description: 'a FHIR id: 1–64 of A–Z a–z 0–9 - .' },
    fhirContext: { type: 'array', maxItems: 50, items: fhirContextItem },
    intent: { type: 'string', minLength: 1, maxLength: 256 },
    need_patient_banner: { type: 'boolean' },
    smart_style_url: { type: 'string', pattern: '^https?://', maxLength: 2048, description: 'an http(s) URL' },
    tenant: { type: 'string', minLength: 1, maxLength: 256 },
    client_id: { type: 'string', maxLength: 256, description: 'only this client may use the launch' },
    user: { type: 'string', maxLength: 256, description: 'only this user may sign in with the launch' },
    aud: { type: 'string', maxLength: 2048, description: 'only for this FHIR base URL' },
  },
} as const;

export const checkNewLaunch = inputChecker<NewLaunch>(NEW_LAUNCH_SCHEMA);

/**
 * Creates an EHR launch context (SMART App Launch 2.2 §EHR launch): single use, five minutes. The launch id
 * is returned once; only its keyed hash is stored.
 */
export async function newLaunch(deps: AdminDeps, by: Operator, request: NewLaunch): Promise<{ launch: string; expires_in: number }> {
  const input = await launchInput(deps.db, deps.config, request, { inDirectory: false });
  const created = await createLaunch(deps.db, deps.box, input);
  await deps.audit.record({ ...by, type: 'launch.created', clientId: input.client_id, userId: input.user, patientId: input.patient, details: { encounter: input.encounter, intent: input.intent, fhir_base: input.fhir_base } });
  return created;
}
