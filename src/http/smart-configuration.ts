import type { FastifyInstance } from 'fastify';

import type { Config } from '../config/config.js';
import { JWKS_MAX_AGE_SECONDS } from '../smart/profile.js';
import { buildSmartConfiguration, SMART_CONFIGURATION_PATH } from '../smart/smart-configuration.js';

/**
 * Serves the document at the issuer and under the path of every configured FHIR base URL (a FHIR server
 * on the same origin, or a proxy in front of one, can route `{fhirBase}/.well-known/smart-configuration`
 * here). Any origin may read it; the answer is JSON whatever the Accept header says.
 */
export async function smartConfigurationRoutes(
  app: FastifyInstance,
  options: { readonly config: Config },
): Promise<void> {
  const document = JSON.stringify(buildSmartConfiguration(options.config));
  const paths = new Set<string>([`${options.config.basePath}${SMART_CONFIGURATION_PATH}`]);
  for (const base of options.config.fhirBaseUrls) paths.add(`${new URL(base).pathname.replace(/\/$/, '')}${SMART_CONFIGURATION_PATH}`);

  for (const url of paths) {
    app.route({
      method: 'GET',
      url,
      handler: async (_request, reply) => {
        void reply
          .header('access-control-allow-origin', '*')
          .header('cache-control', `public, max-age=${JWKS_MAX_AGE_SECONDS}`)
          .type('application/json; charset=utf-8');
        return document;
      },
    });
    app.route({
      method: 'OPTIONS',
      url,
      handler: async (_request, reply) => {
        void reply
          .code(204)
          .header('access-control-allow-origin', '*')
          .header('access-control-allow-methods', 'GET')
          .header('access-control-max-age', '3600');
        return reply.send();
      },
    });
  }
}
