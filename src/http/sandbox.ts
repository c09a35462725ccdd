import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import formbody from '@fastify/formbody';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';

import { HttpProblem } from '../errors.js';
import { launchableClients } from '../clients/registry.js';
import type { Config } from '../config/config.js';
import type { DB } from '../db/schema.js';
import { searchPatients } from '../directory/patients.js';
import { createLaunch } from '../launch/context.js';
import { launchInput } from './launch-input.js';
import { PUBLIC_DIR } from '../paths.js';
import type { SecretBox } from '../security/secret-box.js';
import { pageHeaders } from './page-headers.js';

/**
 * What an app developer needs on day one besides the server: a sample SMART app (fhirclient, the SMART
 * JavaScript client, served from our origin at the demo client's redirect URI), and a launcher page that
 * plays the EHR. The launcher is on only in sandbox mode (SANDBOX; by default on the embedded database).
 */
export async function sandboxRoutes(app: FastifyInstance, options: { config: Config; db: Kysely<DB>; box: SecretBox }): Promise<void> {
  const { config, db, box } = options;
  const basePath = config.basePath;

  const fhirClientJs = await readFile(createRequire(import.meta.url).resolve('fhirclient/build/fhir-client.min.js'), 'utf8');
  app.get('/sample-app/fhir-client.js', async (_request, reply) => {
    void reply.type('text/javascript; charset=utf-8').header('cache-control', 'public, max-age=3600');
    return fhirClientJs;
  });
  await app.register(fastifyStatic, { root: join(PUBLIC_DIR, 'sample-app'), prefix: '/sample-app/', decorateReply: false, index: 'index.html', redirect: true });

  if (!config.sandbox) return;
  await app.register(formbody, { bodyLimit: 16 * 1024 });
  // The launcher is open to whoever can load it; the token keeps other sites from submitting it.
  const csrf = box.mac('launcher', 'v1');

  app.get('/launcher', async (_request, reply) => {
    const clients = await launchableClients(db);
    pageHeaders(reply, config);
    return reply.view('launcher.ejs', {
      basePath,
      action: `${basePath}/launcher`,
      csrf,
      clients,
      fhirBases: config.fhirBaseUrls,
      patients: await searchPatients(db, '', 100),
    });
  });

  app.post<{ Body: Record<string, string | undefined> }>(
    '/launcher',
    {
      schema: {
        body: {
          type: 'object',
          required: ['csrf', 'client_id', 'fhir_base'],
          properties: {
            csrf: { type: 'string', maxLength: 128 },
            client_id: { type: 'string', maxLength: 256 },
            fhir_base: { type: 'string', maxLength: 2048 },
            patient: { type: 'string', maxLength: 256 },
            encounter: { type: 'string', maxLength: 256 },
            intent: { type: 'string', maxLength: 256 },
            need_patient_banner: { type: 'string', enum: ['true'] },
          },
        },
      },
    },
    async (request, reply) => {
      const body = request.body;
      if (!box.verifyMac('launcher', 'v1', body.csrf ?? '')) throw HttpProblem.forbidden('the launcher form has expired; reload it');
      const client = (await launchableClients(db)).find((c) => c.id === body.client_id);
      if (!client) throw HttpProblem.invalid('that app has no launch_uri');
      const input = await launchInput(
        db,
        config,
        { aud: body.fhir_base, client_id: client.id, patient: body.patient || undefined, encounter: body.encounter?.trim() || undefined, intent: body.intent?.trim() || undefined, need_patient_banner: body.need_patient_banner === 'true' },
        { inDirectory: true },
      );
      const { launch } = await createLaunch(db, box, input);
      const target = new URL(client.launchUri);
      target.searchParams.set('iss', input.fhir_base!); // fhir_base is required by the form's schema
      target.searchParams.set('launch', launch);
      return reply.redirect(target.href, 303);
    },
  );
}
