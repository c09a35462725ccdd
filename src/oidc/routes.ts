/** Paths of oidc-provider's endpoints, and which of them the Fastify bridge hands to it. */

/**
 * Where oidc-provider's endpoints live, relative to the issuer. Named after what they do rather than
 * oidc-provider's defaults (`/token/introspection`, `/me`), as the design's request flow lists them.
 */
export const ROUTES = {
  authorization: '/auth',
  token: '/token',
  userinfo: '/userinfo',
  jwks: '/jwks',
  registration: '/reg',
  introspection: '/introspect',
  revocation: '/revoke',
  end_session: '/logout',
  pushed_authorization_request: '/par',
  backchannel_authentication: '/backchannel',
  code_verification: '/device',
  device_authorization: '/device/auth',
  challenge: '/challenge',
  credential: '/credential',
} as const;

export const OIDC_DISCOVERY_PATH = '/.well-known/openid-configuration';
export const OAUTH_DISCOVERY_PATH = '/.well-known/oauth-authorization-server';

/**
 * The (path, methods) pairs oidc-provider answers with the features enabled below; the Fastify bridge
 * routes exactly these to it. Keep in step with `features` in provider.ts.
 */
export const PROVIDER_ENDPOINTS: readonly {
  readonly path: string;
  readonly methods: readonly ('GET' | 'POST' | 'PUT' | 'DELETE' | 'OPTIONS')[];
  /** Served only when this optional feature is on. */
  readonly feature?: 'registration';
}[] = [
  // POST reaches oidc-provider as GET (see provider-routes.ts).
  { path: ROUTES.authorization, methods: ['GET', 'POST'] },
  { path: `${ROUTES.authorization}/:uid`, methods: ['GET'] },
  { path: ROUTES.token, methods: ['POST', 'OPTIONS'] },
  { path: ROUTES.jwks, methods: ['GET', 'OPTIONS'] },
  { path: OIDC_DISCOVERY_PATH, methods: ['GET', 'OPTIONS'] },
  { path: OAUTH_DISCOVERY_PATH, methods: ['GET', 'OPTIONS'] },
  { path: ROUTES.end_session, methods: ['GET', 'POST'] },
  { path: `${ROUTES.end_session}/confirm`, methods: ['POST'] },
  { path: `${ROUTES.end_session}/success`, methods: ['GET'] },
  { path: ROUTES.introspection, methods: ['POST', 'OPTIONS'] },
  { path: ROUTES.registration, methods: ['POST'], feature: 'registration' },
  { path: `${ROUTES.registration}/:clientId`, methods: ['GET', 'PUT', 'DELETE'], feature: 'registration' },
  { path: ROUTES.revocation, methods: ['POST', 'OPTIONS'] },
];

