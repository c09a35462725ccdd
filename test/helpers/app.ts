import { createServer, type AddressInfo } from 'node:net';

import type { FastifyInstance } from 'fastify';

import { buildApp, type AppOptions } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config/config.js';
import type { Database } from '../../src/db/database.js';

/** A fixed key so tests never write a secret.key file; never use it outside tests. */
export const TEST_SECRET_KEY = 'a'.repeat(64);
export const TEST_ISSUER = 'http://localhost:3000';
export const TEST_FHIR_BASE = 'http://localhost:3000/fhir';
/** For apps that register their clients through the admin API (createClient in ./clients.ts). */
export const TEST_ADMIN_TOKEN = 'test-admin-token-0123456789abcdefghij';

export function testConfig(env: Record<string, string> = {}): Config {
  return loadConfig({
    SECRET_KEY: TEST_SECRET_KEY,
    ISSUER: TEST_ISSUER,
    FHIR_BASE_URLS: TEST_FHIR_BASE,
    LOG_LEVEL: 'silent',
    SEED_DEMO: 'false',
    // Tests run on the embedded database: without this each would be a sandbox, with the embedded FHIR server.
    // They keep the sandbox's registration defaults, which most of them rely on; sandbox tests set SANDBOX=true.
    SANDBOX: 'false',
    REGISTRATION: 'open',
    REGISTRATION_STATUS: 'active',
    ...env,
  });
}

/** The app on a test database, ready for `inject`; background timers off unless asked for. */
export async function testApp(database: Database, env: Record<string, string> = {}, options: Omit<AppOptions, 'database'> = {}): Promise<FastifyInstance> {
  const app = await buildApp(testConfig(env), { database, background: false, ...options });
  await app.ready();
  return app;
}

/** The app listening on a free loopback port, its ISSUER that address: for clients that speak real HTTP. */
export async function listeningApp(database: Database, env: Record<string, string> = {}, options: Omit<AppOptions, 'database'> = {}): Promise<{ app: FastifyInstance; issuer: string }> {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const app = await testApp(database, { ISSUER: issuer, FHIR_BASE_URLS: `${issuer}/fhir`, ...env }, options);
  await app.listen({ port, host: '127.0.0.1' });
  return { app, issuer };
}

/** A loopback port free at the moment of asking. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
