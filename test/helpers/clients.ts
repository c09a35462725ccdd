import { createHash, randomBytes } from 'node:crypto';

import type { FastifyInstance } from 'fastify';

import { ClientAdapter } from '../../src/oidc/adapters/client.js';

export interface TestClient {
  readonly client_id: string;
  readonly client_secret?: string;
  readonly redirect_uris: string[];
}

/** Registers a client straight in the clients table, as the admin API will. */
export async function registerClient(app: FastifyInstance, metadata: Record<string, unknown>): Promise<TestClient> {
  const client_id = (metadata.client_id as string | undefined) ?? `client-${randomBytes(6).toString('hex')}`;
  const full = { redirect_uris: [], ...metadata, client_id };
  await new ClientAdapter({ db: app.runtime.database.db, box: app.runtime.box, clients: app.runtime.clients }).upsert(client_id, full);
  return full;
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
