import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

import { HttpProblem } from '../../errors.js';
import { getClient, listClients } from '../../clients/registry.js';
import { checkNewLaunch, newLaunch } from '../operations/launches.js';
import { text, type ConsoleContext, type FormValue } from './context.js';
import { operatorEvent } from './session.js';

const FIELDS = ['client_id', 'aud', 'patient', 'encounter', 'user', 'intent', 'tenant', 'smart_style_url'] as const;
type Form = Partial<Record<(typeof FIELDS)[number] | 'need_patient_banner', FormValue>>;

/**
 * EHR launches: create a launch context as an EHR would (SMART App Launch 2.2 §EHR launch) and show its id
 * once, with the app's launch URL when the app registered one.
 */
export async function launchPages(app: FastifyInstance, ctx: ConsoleContext): Promise<void> {
  const { deps, base } = ctx;
  const { db, config } = deps;

  async function formPage(request: FastifyRequest, reply: FastifyReply, values: Record<string, string>, extra: { error?: string; status?: number; created?: Record<string, unknown> } = {}) {
    const clients = await listClients(db, { status: 'active', limit: 500 });
    return ctx.render(request, reply, 'launches', {
      section: 'launches',
      action: `${base}/launches`,
      clients: clients.map((c) => ({ id: c.client_id, name: typeof c.metadata.client_name === 'string' ? c.metadata.client_name : c.client_id })),
      fhirBases: config.fhirBaseUrls,
      values: { client_id: '', aud: config.fhirBaseUrls[0]!, patient: '', encounter: '', user: '', intent: '', tenant: '', smart_style_url: '', need_patient_banner: 'true', ...values },
      created: extra.created ?? null,
      error: extra.error ?? null,
    }, extra.status ?? 200);
  }

  app.get('/admin/launches', async (request, reply) => formPage(request, reply, {}));

  app.post<{ Body: Form }>(
    '/admin/launches',
    {
      schema: {
        body: {
          type: 'object',
          required: ['csrf'],
          additionalProperties: false,
          properties: { csrf: { type: 'string', maxLength: 128 }, need_patient_banner: { type: 'string', enum: ['true'] }, ...Object.fromEntries(FIELDS.map((f) => [f, { type: 'string', maxLength: 2048 }])) },
        },
      },
    },
    async (request, reply) => {
      const form = request.body;
      const given = Object.fromEntries(FIELDS.map((f) => [f, text(form[f], f)]).filter(([, v]) => v !== undefined)) as Record<string, string>;
      try {
        const input = checkNewLaunch({ ...given, need_patient_banner: form.need_patient_banner === 'true' });
        const created = await newLaunch(deps, operatorEvent(request), input);
        const client = input.client_id ? await getClient(db, input.client_id) : undefined;
        const launchUri = typeof client?.metadata.launch_uri === 'string' ? client.metadata.launch_uri : undefined;
        const iss = input.aud ?? config.fhirBaseUrls[0]!;
        let appUrl: string | null = null;
        if (launchUri && URL.canParse(launchUri)) {
          const url = new URL(launchUri);
          url.searchParams.set('iss', iss);
          url.searchParams.set('launch', created.launch);
          appUrl = url.href;
        }
        return await formPage(request, reply, {}, { created: { launch: created.launch, expiresIn: created.expires_in, iss, appUrl } });
      } catch (error) {
        if (!(error instanceof HttpProblem) || error.statusCode >= 500) throw error;
        return formPage(request, reply, { ...given, need_patient_banner: form.need_patient_banner === 'true' ? 'true' : '' }, { error: error.message, status: error.statusCode });
      }
    },
  );
}
