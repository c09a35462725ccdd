import { randomBytes } from 'node:crypto';

import formbody from '@fastify/formbody';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';

import { HttpProblem } from '../errors.js';
import { accessHistory } from '../audit/access-history.js';
import type { AuditLog } from '../audit/audit.js';
import { clientNames } from '../clients/registry.js';
import type { Config } from '../config/config.js';
import type { DB } from '../db/schema.js';
import { findPatients } from '../directory/patients.js';
import { connectedApps, revokeGrants } from '../grants/grants.js';
import { forwardAsIssuer } from '../http/forwarded.js';
import { pageHeaders } from '../http/page-headers.js';
import type { ProviderHost } from '../oidc/provider-host.js';
import type { SecretBox } from '../security/secret-box.js';
import { ACCOUNT_APPS_PATH, ACCOUNT_CALLBACK_PATH, ACCOUNT_CLIENT_ID, ACCOUNT_PRIVACY_PATH, ROUTES } from '../smart/profile.js';
import { describeScope, resourceTypeLabel } from '../smart/scopes/consent.js';
import { parseScopes } from '../smart/scopes/scope.js';
import { findUser, patientsOf } from '../users/users.js';
import { privacyRoutes } from './privacy.js';

/**
 * The signed-in user's connected apps (ONC (g)(10): a patient can revoke an app's access at any time), and
 * the `management_endpoint` of SMART discovery. The page signs people in the way apps do: it is an OpenID
 * client of this server (static and pre-approved, see ACCOUNT_CLIENT_ID), so there is one sign-in page and
 * one session.
 */

export async function accountRoutes(app: FastifyInstance, deps: { config: Config; db: Kysely<DB>; box: SecretBox; host: ProviderHost; audit: AuditLog }): Promise<void> {
  const { config, db, box, host, audit } = deps;
  const basePath = config.basePath;
  const issuer = new URL(config.issuer);
  await app.register(formbody, { bodyLimit: 8 * 1024 });

  /** The session of the browser, read as oidc-provider reads it (signed cookie, forwarded headers as the bridge sets them). */
  async function sessionOf(request: FastifyRequest, reply: FastifyReply): Promise<{ accountId: string; uid: string } | undefined> {
    forwardAsIssuer(request.raw, issuer);
    const session = await host.provider.Session.get(host.provider.createContext(request.raw, reply.raw));
    return session.accountId ? { accountId: session.accountId, uid: session.uid } : undefined;
  }

  function signIn(reply: FastifyReply): FastifyReply {
    const challenge = randomBytes(32).toString('base64url');
    const params = new URLSearchParams({
      client_id: ACCOUNT_CLIENT_ID,
      response_type: 'code',
      redirect_uri: `${config.issuer}${ACCOUNT_CALLBACK_PATH}`,
      scope: 'openid',
      aud: config.fhirBaseUrls[0]!,
      code_challenge: challenge,
      code_challenge_method: 'S256',
      state: randomBytes(16).toString('base64url'),
    });
    return reply.redirect(`${basePath}${ROUTES.authorization}?${params.toString()}`, 303);
  }

  const csrfFor = (sessionUid: string): string => box.mac('account', sessionUid);

  app.get(ACCOUNT_APPS_PATH, async (request: FastifyRequest<{ Querystring: { revoked?: string } }>, reply) => {
    const session = await sessionOf(request, reply);
    const user = session ? await findUser(db, session.accountId) : undefined;
    if (!session || !user) return signIn(reply);
    const apps = await connectedApps(db, user.id);
    // What each app read of the records this user holds (their own, those they act for) through the gateway.
    const history = await accessHistory(db, (await patientsOf(db, user)) ?? []);
    const revokedId = typeof request.query.revoked === 'string' ? request.query.revoked.slice(0, 256) : undefined;
    const ids = [...apps.map((a) => a.client_id), ...history.map((h) => h.clientId), ...(revokedId ? [revokedId] : [])];
    const names = await clientNames(db, ids);
    const patientNames = new Map((await findPatients(db, [...new Set(apps.flatMap((a) => a.patients))])).map((p) => [p.id, p.name]));
    const nameOf = (clientId: string): string => names.get(clientId) ?? clientId;
    // Only an app that exists, and that this user has no grant for, is named in the banner: the query string
    // is not a place for any text, nor for a claim the list below contradicts.
    const revoked = revokedId !== undefined && names.has(revokedId) && !apps.some((a) => a.client_id === revokedId) ? revokedId : undefined;
    pageHeaders(reply, config);
    return reply.view('account-apps.ejs', {
      basePath,
      userName: user.name,
      action: `${basePath}${ACCOUNT_APPS_PATH}/revoke`,
      csrf: csrfFor(session.uid),
      signOut: `${basePath}${ROUTES.end_session}`,
      privacyPage: `${basePath}${ACCOUNT_PRIVACY_PATH}`,
      revoked: revoked ? nameOf(revoked) : null,
      apps: apps
        .filter((a) => a.client_id !== ACCOUNT_CLIENT_ID)
        .map((a, index) => ({
          index,
          clientId: a.client_id,
          name: nameOf(a.client_id),
          since: a.since.toISOString().slice(0, 10),
          lastUsed: a.last_used_at?.toISOString().slice(0, 16).replace('T', ' ') ?? null,
          patients: a.patients.map((p) => patientNames.get(p) ?? p),
          access: parseScopes(a.scope).scopes.map(describeScope),
        })),
      history: [...new Set(history.map((h) => h.clientId))].map((clientId, index) => ({
        index,
        name: nameOf(clientId),
        reads: history.filter((h) => h.clientId === clientId).map((h) => ({ kind: h.resourceType === undefined ? 'Several kinds of data at once' : resourceTypeLabel(h.resourceType), count: h.count, last: h.last.toISOString().slice(0, 16).replace('T', ' ') })),
      })),
    });
  });

  app.post<{ Body: { csrf: string; client_id: string } }>(
    `${ACCOUNT_APPS_PATH}/revoke`,
    { schema: { body: { type: 'object', required: ['csrf', 'client_id'], properties: { csrf: { type: 'string', maxLength: 128 }, client_id: { type: 'string', minLength: 1, maxLength: 256 } } } } },
    async (request, reply) => {
      const session = await sessionOf(request, reply);
      if (!session) return signIn(reply);
      if (!box.verifyMac('account', session.uid, request.body.csrf)) throw HttpProblem.forbidden('this page has expired; reload it');
      const app = (await connectedApps(db, session.accountId)).find((a) => a.client_id === request.body.client_id);
      if (app) {
        await revokeGrants(db, app.grant_ids);
        for (const grantId of app.grant_ids) {
          await audit.record({ type: 'grant.revoked', actorType: 'user', actorId: session.accountId, userId: session.accountId, clientId: app.client_id, grantId, sourceIp: request.ip, requestId: request.id, details: { by: 'connected-apps page' } });
        }
      }
      return reply.redirect(`${basePath}${ACCOUNT_APPS_PATH}?revoked=${encodeURIComponent(request.body.client_id)}`, 303);
    },
  );

  await privacyRoutes(app, { config, db, audit }, { sessionOf, signIn, csrfFor, verifyCsrf: (uid, csrf) => box.verifyMac('account', uid, csrf) });

  // Where the sign-in for this page comes back: the session now exists; the code is not needed.
  app.get(ACCOUNT_CALLBACK_PATH, async (_request, reply) => reply.redirect(`${basePath}${ACCOUNT_APPS_PATH}`, 303));
}
