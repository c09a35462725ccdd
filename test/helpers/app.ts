import type { FastifyInstance } from 'fastify';

import { buildApp, type AppOptions } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config/config.js';
import type { Database } from '../../src/db/database.js';

/** A fixed key so tests never write a secret.key file; never use it outside tests. */
export const TEST_SECRET_KEY = 'a'.repeat(64);
export const TEST_ISSUER = 'http://localhost:3000';
export const TEST_FHIR_BASE = 'http://localhost:3000/fhir';

export function testConfig(env: Record<string, string> = {}): Config {
  return loadConfig({
    SECRET_KEY: TEST_SECRET_KEY,
    ISSUER: TEST_ISSUER,
    FHIR_BASE_URLS: TEST_FHIR_BASE,
    LOG_LEVEL: 'silent',
    SEED_DEMO: 'false',
    ...env,
  });
}

/** The app on a test database, ready for `inject`; background timers off unless asked for. */
export async function testApp(database: Database, env: Record<string, string> = {}, options: Omit<AppOptions, 'database'> = {}): Promise<FastifyInstance> {
  const app = await buildApp(testConfig(env), { database, background: false, ...options });
  await app.ready();
  return app;
}
