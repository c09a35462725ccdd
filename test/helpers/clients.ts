import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';

import type { FastifyInstance } from 'fastify';

import { ClientAdapter } from '../../src/oidc/adapters/client.js';

export interface TestClient {
  readonly client_id: string;
  readonly client_secret?: string;
  readonly redirect_uris: string[];
}

/**
 * Registers a client straight in the clients table, past the client rules: for clients the admin API
 * would refuse (a test of what the server does with them anyway) and a client secret chosen by the test.
 * Prefer {@link createClient}.
 */
export async function registerClient(app: FastifyInstance, metadata: Record<string, unknown>): Promise<TestClient> {
  const client_id = (metadata.client_id as string | undefined) ?? `client-${randomBytes(6).toString('hex')}`;
  const full = { redirect_uris: [], ...metadata, client_id };
  await new ClientAdapter({ db: app.runtime.database.db, box: app.runtime.box, clients: app.runtime.clients }).upsert(client_id, full);
  return full;
}

/**
 * Registers a client as an operator does, through the admin API (POST /admin/api/clients with the app's
 * ADMIN_TOKEN): the client rules apply, response_types follow from grant_types, and the secret, when the
 * client authenticates with one, is generated and returned. Fails the test when the API refuses the client.
 */
export async function createClient(app: FastifyInstance, metadata: Record<string, unknown>): Promise<TestClient> {
  const { adminToken, issuer } = app.runtime.config;
  if (!adminToken) throw new Error('createClient needs an app built with ADMIN_TOKEN');
  const basePath = new URL(issuer).pathname.replace(/\/$/, '');
  const res = await app.inject({ method: 'POST', url: `${basePath}/admin/api/clients`, headers: { authorization: `Bearer ${adminToken}` }, payload: metadata });
  assert.equal(res.statusCode, 201, `POST /admin/api/clients ${JSON.stringify(metadata)}: ${res.body}`);
  return res.json<TestClient>();
}

export function basicAuth(clientId: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

export function pkce(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

export function form(values: Record<string, string>): string {
  return new URLSearchParams(values).toString();
}
