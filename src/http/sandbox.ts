import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import formbody from '@fastify/formbody';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';
import type { Kysely } from 'kysely';

import type { AuditLog } from '../audit/audit.js';
import type { ClientCache } from '../clients/client-cache.js';
import type { Config } from '../config/config.js';
import type { ReplicaReads } from '../db/replica.js';
import type { DB } from '../db/schema.js';
import { PUBLIC_DIR } from '../paths.js';
import type { SecretBox } from '../security/secret-box.js';
import { launcherRoutes } from './launcher.js';

/**
 * What an app developer needs on day one besides the server: a sample SMART app (fhirclient, the SMART
 * JavaScript client, served from our origin at the demo client's redirect URI), and a launcher page that
 * plays the EHR. The launcher is on only in sandbox mode (SANDBOX; by default on the embedded database).
 */
export async function sandboxRoutes(app: FastifyInstance, options: { config: Config; db: Kysely<DB>; replica: ReplicaReads; box: SecretBox; audit: AuditLog; clients: ClientCache<unknown> }): Promise<void> {
  const { config, db, replica, box, audit, clients } = options;

  const fhirClientJs = await readFile(createRequire(import.meta.url).resolve('fhirclient/build/fhir-client.min.js'), 'utf8');
  app.get('/sample-app/fhir-client.js', async (_request, reply) => {
    void reply.type('text/javascript; charset=utf-8').header('cache-control', 'public, max-age=3600');
    return fhirClientJs;
  });
  await app.register(fastifyStatic, { root: join(PUBLIC_DIR, 'sample-app'), prefix: '/sample-app/', decorateReply: false, index: 'index.html', redirect: true });

  if (!config.sandbox) return;
  await app.register(formbody, { bodyLimit: 64 * 1024 });
  await app.register(launcherRoutes, { config, db, replica, box, audit, clients });
}
