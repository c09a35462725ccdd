import type { FastifyInstance } from 'fastify';

import { EHR_LAUNCH_SCOPE } from './auth.js';
import type { AdminDeps } from './deps.js';
import { newLaunch, NEW_LAUNCH_SCHEMA, type NewLaunch } from './operations/launches.js';
import { adminEvent, errorResponses, tagged } from './schemas.js';

/**
 * EHR launch contexts (SMART App Launch 2.2 §EHR launch): the EHR creates one server-to-server, then opens
 * the app with `launch=<id>`. With ADMIN_TOKEN, or the EHR's own backend client with the ehr-launch scope.
 */
export async function launchRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  app.post<{ Body: NewLaunch }>(
    '/launches',
    {
      config: { adminScope: EHR_LAUNCH_SCOPE },
      schema: {
        ...tagged,
        summary: 'Create an EHR launch context (single use, five minutes)',
        body: NEW_LAUNCH_SCHEMA,
        response: { 201: { type: 'object', required: ['launch', 'expires_in'], properties: { launch: { type: 'string' }, expires_in: { type: 'integer' } } }, ...errorResponses },
      },
    },
    async (request, reply) => reply.code(201).send(await newLaunch(deps, adminEvent(request), request.body)),
  );
}
