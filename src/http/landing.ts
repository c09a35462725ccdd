import type { FastifyInstance } from 'fastify';

import type { Config } from '../config/config.js';
import { DEMO_USERS } from '../seed/demo.js';
import { SMART_CONFIGURATION_PATH } from '../smart/smart-configuration.js';
import { pageHeaders } from './page-headers.js';

/**
 * GET / (the issuer's address, the first link a developer opens): what this server is, which mode it runs
 * in, and where to go next. The sandbox's launcher, sample app and demo logins are listed in sandbox mode
 * only; a deployment shows none of them.
 */
export async function landingRoutes(app: FastifyInstance, options: { config: Config }): Promise<void> {
  const { config } = options;
  app.get('/', async (_request, reply) => {
    pageHeaders(reply, config);
    return reply.view('landing.ejs', {
      basePath: config.basePath,
      issuer: config.issuer,
      sandbox: config.sandbox,
      fhirBases: config.fhirBaseUrls.map((base) => ({ base, discovery: `${base}${SMART_CONFIGURATION_PATH}` })),
      openidDiscovery: `${config.issuer}/.well-known/openid-configuration`,
      demoUsers: config.sandbox && config.seedDemo ? DEMO_USERS.map((u) => ({ username: u.username, password: u.password, name: u.name, fhirUser: u.fhirUser })) : [],
    });
  });
}
