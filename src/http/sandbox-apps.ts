import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { AdapterPayload } from 'oidc-provider';

import type { ClientCache } from '../clients/client-cache.js';
import { getClient, insertClient, updateClient } from '../clients/registry.js';
import { HttpProblem } from '../errors.js';
import { checkClientMetadata, ClientRuleError, isSandboxApp, SANDBOX_APP_PROPERTY } from '../smart/client-rules.js';
import { SANDBOX_CLIENT_ID, type LauncherDeps } from './launcher.js';

/** A sandbox app collects at most this many redirect URIs before the oldest goes. */
const MAX_REDIRECT_URIS = 20;

export interface SandboxAppsOptions extends Omit<LauncherDeps, 'replica'> {
  readonly clients: ClientCache<AdapterPayload>;
}

/**
 * Unregistered apps in sandbox mode (issue 13, item 5), as smart-launcher-v2 takes them: an authorization
 * request (GET) from a client_id nobody registered, with a redirect URI the client rules accept, registers a
 * public sandbox app on the spot, PKCE optional, and goes on to oidc-provider as any request would. A sandbox
 * app asked for with a redirect URI it does not have yet gains it. A client registered any other way keeps
 * its own registration: nothing here changes it. Never outside sandbox mode (the hook is not installed).
 */
export const sandboxApps = fp(adoptUnregisteredApps, { name: 'sandbox-apps', fastify: '5.x' });

async function adoptUnregisteredApps(app: FastifyInstance, options: SandboxAppsOptions): Promise<void> {
  const { config, db, box, audit, clients } = options;
  if (!config.sandbox) return;
  const authorize = `${config.basePath}/auth`;

  app.addHook('preHandler', async (request) => {
    if (request.method !== 'GET' || request.url.split('?')[0] !== authorize) return;
    const query = request.query as Record<string, unknown>;
    const clientId = query.client_id;
    const redirectUri = query.redirect_uri;
    if (typeof clientId !== 'string' || typeof redirectUri !== 'string' || !SANDBOX_CLIENT_ID.test(clientId)) return;
    await adopt(request, clientId, redirectUri);
  });

  async function adopt(request: FastifyRequest, clientId: string, redirectUri: string): Promise<void> {
    const existing = await getClient(db, clientId);
    if (existing && !isSandboxApp(existing.metadata)) return;
    const known = Array.isArray(existing?.metadata.redirect_uris) ? (existing.metadata.redirect_uris as string[]) : [];
    if (known.includes(redirectUri)) return;
    const metadata: Record<string, unknown> = existing
      ? { ...existing.metadata, redirect_uris: [...known, redirectUri].slice(-MAX_REDIRECT_URIS) }
      : {
          client_name: `Sandbox app ${clientId}`,
          redirect_uris: [redirectUri],
          grant_types: ['authorization_code', 'refresh_token'],
          response_types: ['code'],
          token_endpoint_auth_method: 'none',
          [SANDBOX_APP_PROPERTY]: { pkce: 'optional' },
        };
    delete metadata.client_id;
    try {
      checkClientMetadata(metadata, { writer: 'operator', vouched: true, allowHttpJwksUri: config.outboundAllowPrivate });
    } catch (error) {
      // A redirect URI the rules refuse (plain http off loopback, say): oidc-provider answers the request.
      if (error instanceof ClientRuleError) return;
      throw error;
    }
    if (existing) await updateClient(db, box, clientId, metadata, undefined, { withSecret: false });
    else {
      try {
        await insertClient(db, box, clientId, metadata, 'active', { withSecret: false });
      } catch (error) {
        // Registered meanwhile by a concurrent request: it goes on as that one left it.
        if (error instanceof HttpProblem && error.statusCode === 409) return;
        throw error;
      }
    }
    clients.invalidate(clientId);
    await audit.record({
      type: existing ? 'client.updated' : 'client.created',
      actorType: 'anonymous',
      sourceIp: request.ip,
      requestId: request.id,
      clientId,
      details: { via: 'sandbox: first authorization request', token_endpoint_auth_method: 'none', redirect_uris: metadata.redirect_uris, pkce: 'optional' },
    });
  }
}
