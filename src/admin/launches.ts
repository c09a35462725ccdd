import type { FastifyInstance } from 'fastify';

import { createLaunch } from '../launch/context.js';
import { launchInput } from '../http/launch-input.js';
import type { FhirContextItem } from '../db/tables/launches.js';
import { EHR_LAUNCH_SCOPE } from './auth.js';
import type { AdminDeps } from './deps.js';
import { adminEvent, errorResponses, tagged } from './schemas.js';

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

interface LaunchBody {
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

/**
 * EHR launch contexts (SMART App Launch 2.2 §EHR launch): the EHR creates one server-to-server, then opens
 * the app with `launch=<id>`. With ADMIN_TOKEN, or the EHR's own backend client with the ehr-launch scope.
 */
export async function launchRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const { config, db, audit } = deps;
  app.post<{ Body: LaunchBody }>(
    '/launches',
    {
      config: { adminScope: EHR_LAUNCH_SCOPE },
      schema: {
        ...tagged,
        summary: 'Create an EHR launch context (single use, five minutes)',
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            patient: { type: 'string', pattern: '^[A-Za-z0-9\\-.]{1,64}$' },
            encounter: { type: 'string', pattern: '^[A-Za-z0-9\\-.]{1,64}$' },
            fhirContext: { type: 'array', maxItems: 50, items: fhirContextItem },
            intent: { type: 'string', minLength: 1, maxLength: 256 },
            need_patient_banner: { type: 'boolean' },
            smart_style_url: { type: 'string', pattern: '^https?://', maxLength: 2048 },
            tenant: { type: 'string', minLength: 1, maxLength: 256 },
            client_id: { type: 'string', maxLength: 256, description: 'only this client may use the launch' },
            user: { type: 'string', maxLength: 256, description: 'only this user may sign in with the launch' },
            aud: { type: 'string', maxLength: 2048, description: 'only for this FHIR base URL' },
          },
        },
        response: { 201: { type: 'object', required: ['launch', 'expires_in'], properties: { launch: { type: 'string' }, expires_in: { type: 'integer' } } }, ...errorResponses },
      },
    },
    async (request, reply) => {
      const input = await launchInput(db, config, request.body, { inDirectory: false });
      const created = await createLaunch(db, deps.box, input);
      await audit.record({ ...adminEvent(request), type: 'launch.created', clientId: input.client_id, userId: input.user, patientId: input.patient, details: { encounter: input.encounter, intent: input.intent, fhir_base: input.fhir_base } });
      return reply.code(201).send(created);
    },
  );
}
