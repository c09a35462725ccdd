import { OAUTH_DISCOVERY_PATH, OIDC_DISCOVERY_PATH, ROUTES } from '../smart/profile.js';

/**
 * The (path, methods) pairs oidc-provider answers with the features enabled in provider.ts; the Fastify
 * bridge routes exactly these to it. Keep in step with `features` there.
 */
export const PROVIDER_ENDPOINTS: readonly {
  readonly path: string;
  readonly methods: readonly ('GET' | 'POST' | 'PUT' | 'DELETE' | 'OPTIONS')[];
  /** Served only when this optional feature is on. */
  readonly feature?: 'registration';
  /**
   * A GET that starts or ends something (an authorization, its resume, a sign-out): not offered as HEAD, which
   * must be safe (RFC 9110 §9.3.2) and which link checkers and prefetchers send freely. 405 instead.
   */
  readonly noHead?: true;
}[] = [
  // POST reaches oidc-provider as GET (see provider-routes.ts).
  { path: ROUTES.authorization, methods: ['GET', 'POST'], noHead: true },
  { path: `${ROUTES.authorization}/:uid`, methods: ['GET'], noHead: true },
  { path: ROUTES.token, methods: ['POST', 'OPTIONS'] },
  { path: ROUTES.jwks, methods: ['GET', 'OPTIONS'] },
  { path: OIDC_DISCOVERY_PATH, methods: ['GET', 'OPTIONS'] },
  { path: OAUTH_DISCOVERY_PATH, methods: ['GET', 'OPTIONS'] },
  { path: ROUTES.end_session, methods: ['GET', 'POST'], noHead: true },
  { path: `${ROUTES.end_session}/confirm`, methods: ['POST'] },
  { path: `${ROUTES.end_session}/success`, methods: ['GET'] },
  { path: ROUTES.introspection, methods: ['POST', 'OPTIONS'] },
  { path: ROUTES.registration, methods: ['POST'], feature: 'registration' },
  { path: `${ROUTES.registration}/:clientId`, methods: ['GET', 'PUT', 'DELETE'], feature: 'registration' },
  { path: ROUTES.revocation, methods: ['POST', 'OPTIONS'] },
];

