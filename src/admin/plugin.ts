import swagger from '@fastify/swagger';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';

import { redactUrl } from '../http/logger.js';
import { auditRoutes } from './audit-routes.js';
import { adminAuthentication } from './auth.js';
import { clientRoutes } from './clients.js';
import { directoryRoutes } from './directory.js';
import { grantRoutes } from './grants.js';
import { keyRoutes } from './keys.js';
import { launchRoutes } from './launches.js';
import { payerRoutes } from './payer.js';
import { tieredOAuthRoutes } from './tiered-oauth.js';
import { userRoutes } from './users.js';
import type { AdminDeps } from './deps.js';

export const ADMIN_PREFIX = '/admin/api';

/**
 * The admin API (JSON under /admin/api): clients, users, the patient directory, launches, grants, the
 * audit trail and keys. Every route declares its request and response schemas; the OpenAPI 3 document is
 * generated from them and served without authentication at /admin/api/openapi.json. Every call is audited.
 */
export const adminApi = fp(
  async (app: FastifyInstance, deps: AdminDeps) => {
    const basePath = deps.config.basePath;
    await app.register(swagger, {
      openapi: {
        openapi: '3.0.3',
        info: { title: 'smart-auth-server admin API', version: '1', description: 'Administration of a SMART on FHIR authorization server. Authenticate with Authorization: Bearer ADMIN_TOKEN, or an access token of this server carrying the admin scope (ehr-launch for POST /launches).' },
        servers: [{ url: deps.config.issuer }],
        components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
        security: [{ bearer: [] }],
      },
      // Only routes tagged ADMIN_TAG: the OAuth endpoints are described by the discovery documents.
      hideUntagged: true,
    });
    app.get(`${basePath}${ADMIN_PREFIX}/openapi.json`, { schema: { hide: true } }, async (_request, reply) => {
      void reply.header('cache-control', 'no-store');
      return app.swagger();
    });

    await app.register(
      async (admin) => {
        admin.addHook('onRequest', adminAuthentication(deps.config.adminToken, deps.host, deps.db));
        admin.addHook('onRequest', async (_request: FastifyRequest, reply: FastifyReply) => {
          void reply.header('cache-control', 'no-store');
        });
        admin.addHook('onResponse', async (request, reply) => {
          if (!request.adminActor) return;
          deps.audit.recordQuietly({
            type: 'admin.request',
            outcome: reply.statusCode < 400 ? 'success' : 'failure',
            actorType: request.adminActor.type,
            actorId: request.adminActor.id,
            sourceIp: request.ip,
            requestId: request.id,
            details: { method: request.method, path: redactUrl(request.url), status: reply.statusCode },
          });
        });
        await admin.register(clientRoutes, deps);
        await admin.register(userRoutes, deps);
        await admin.register(directoryRoutes, deps);
        await admin.register(launchRoutes, deps);
        await admin.register(grantRoutes, deps);
        await admin.register(auditRoutes, deps);
        await admin.register(keyRoutes, deps);
        await admin.register(payerRoutes, deps);
        await admin.register(tieredOAuthRoutes, deps);
      },
      { prefix: `${basePath}${ADMIN_PREFIX}` },
    );
  },
  { name: 'admin-api', fastify: '5.x' },
);
