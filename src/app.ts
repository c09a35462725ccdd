import { randomBytes, randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import fastifyStatic from '@fastify/static';
import fastifyView from '@fastify/view';
import ejs from 'ejs';
import Fastify, { LogController, type FastifyInstance, type RawReplyDefaultExpression, type RawRequestDefaultExpression, type RawServerDefault } from 'fastify';
import type { AdapterPayload } from 'oidc-provider';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';

import { EMBEDDED_UPSTREAM, usesEmbeddedFhir, type Config, type FhirUpstream } from './config/config.js';
import { openDatabase, type Database } from './db/database.js';
import { retryWhileUnavailable } from './db/faults.js';
import { migrateToLatest } from './db/migrate.js';
import { primaryReads, replicaLookups, type ReplicaReads } from './db/replica.js';
import type { DB } from './db/schema.js';
import { clearMark, hasMark } from './db/server-state.js';
import { closeAfterUnreadBody, connectionOptions } from './http/connections.js';
import { errorForms, errorHandling, frameworkErrorHandler } from './http/errors.js';
import { healthRoutes } from './http/health.js';
import { metricsRoute } from './http/metrics.js';
import { observeRequests, observeUnrouted } from './http/observe-requests.js';
import { traceRequests } from './http/trace-requests.js';
import { inputGuard } from './http/input-guard.js';
import { interactionRoutes } from './interactions/routes.js';
import { TieredSignIn } from './interactions/tiered-oauth.js';
import { accountRoutes } from './account/routes.js';
import { gatewayRoutes } from './gateway/routes.js';
import { adminApi } from './admin/plugin.js';
import { operatorConsole } from './admin/console/plugin.js';
import { landingRoutes } from './http/landing.js';
import { loopbackOrigin } from './http/loopback-origin.js';
import { sandboxApps } from './http/sandbox-apps.js';
import { sandboxRoutes } from './http/sandbox.js';
import { styleRoutes } from './http/style.js';
import { createLogger } from './http/logger.js';
import { renderErrorPage } from './http/pages.js';
import { providerRoutes, withHead } from './http/provider-routes.js';
import { securityHeaderList, securityHeaders } from './http/security-headers.js';
import { schemaErrorFormatter } from './http/validation-messages.js';
import { AuditLog } from './audit/audit.js';
import { fhirResourceStore } from './fhir-store/resources.js';
import { ClientCache } from './clients/client-cache.js';
import { UserCache } from './users/user-cache.js';
import { JwksCache } from './clients/jwks-cache.js';
import { CRL_MAX_BYTES, CrlCache } from './clients/crl-cache.js';
import { ChainVerdicts } from './udap/chain-verdicts.js';
import { isUdapRegistration, registerUdapClient } from './udap/registration.js';
import { tieredCommunities } from './udap/tiered-oauth.js';
import { ROUTES } from './smart/profile.js';
import { ensureCookieKey } from './keys/cookie-keys.js';
import { ensureSigningKeys, listSigningKeys } from './keys/signing-keys.js';
import { Maintenance } from './maintenance.js';
import { hashClearLaunchIds } from './launch/context.js';
import { hashClearBearerIds } from './oidc/adapters/payload.js';
import { ProviderHost } from './oidc/provider-host.js';
import { PROVIDER_ENDPOINTS } from './oidc/routes.js';
import { createMetrics, DISABLED, type Metrics } from './observability/metrics.js';
import { QueryObserver } from './observability/query-observer.js';
import { tracingEnabled } from './observability/tracing.js';
import { PUBLIC_DIR, VIEWS_DIR } from './paths.js';
import { seedDemo } from './seed/demo.js';
import { seedSandboxPack } from './seed/sandbox.js';
import { countAttempt, registrationPolicy, sourceOf, throttleKey } from './users/login-throttle.js';
import type { SecretBox } from './security/secret-box.js';
import { openSecretBox } from './security/secret-key.js';
import { smartConfigurationRoutes } from './http/smart-configuration.js';
import { udapDiscoveryRoutes } from './http/udap-discovery.js';
import { SMART_CONFIGURATION_PATH } from './smart/smart-configuration.js';

export interface AppOptions {
  /** A database to use instead of opening the configured one; the app then leaves it open on close. */
  readonly database?: Database;
  readonly logger?: Logger;
  /** Apply pending migrations while building (default true). */
  readonly migrate?: boolean;
  /** Run the background jobs (key refresh, purge, scheduled rotation) once ready (default true). */
  readonly background?: boolean;
  /** Gives up waiting for an unavailable database at start-up (a shutdown signal before the server listened). */
  readonly signal?: AbortSignal;
}

/** What the app is built on, for the CLI and tests. */
export interface Runtime {
  readonly config: Config;
  readonly database: Database;
  readonly box: SecretBox;
  readonly host: ProviderHost;
  readonly maintenance: Maintenance;
  readonly audit: AuditLog;
  /** Client metadata cached per process: whatever changes a client drops its entry. */
  readonly clients: ClientCache<AdapterPayload>;
  /** What `/metrics` reports (DISABLED without METRICS_PORT or METRICS_TOKEN). */
  readonly metrics: Metrics;
}

declare module 'fastify' {
  interface FastifyInstance {
    readonly runtime: Runtime;
  }
}

/**
 * The fronted FHIR bases with their upstreams. The embedded FHIR server (the sandbox's) is started here, on a
 * Unix socket only this user can open, so that nothing reaches its data but through the gateway.
 */
async function resolveUpstreams(app: FastifyInstance, config: Config, db: Kysely<DB>): Promise<FhirUpstream[]> {
  if (!usesEmbeddedFhir(config)) return [...config.fhirUpstreams];
  // Imported here: Medplum's FHIR engine is loaded only by a server that runs it.
  const { startFhirServer } = await import('./fhir/server.js');
  const embedded = await startFhirServer({ socketPath: join(tmpdir(), `smart-auth-fhir-${process.pid}-${randomBytes(6).toString('hex')}.sock`), persistence: fhirResourceStore(db) });
  app.addHook('onClose', async () => {
    await embedded.close();
    await rm(embedded.socketPath!, { force: true });
  });
  return config.fhirUpstreams.map((u) => (u.url === EMBEDDED_UPSTREAM ? { ...u, url: embedded.url, socketPath: embedded.socketPath } : u));
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** Set by migration 2026-12-01T00-00-bearer-hashes: rows from before it hold bearer values in clear. */
const BEARER_IDS_IN_CLEAR = 'bearer_ids_in_clear';
/** A client's JWKS URL (or a Tiered OAuth IdP) must answer within this, and with no more than JWKS_MAX_BYTES. */
const JWKS_FETCH_TIMEOUT_MS = 5000;
const JWKS_MAX_BYTES = 256 * 1024;

/**
 * Builds the whole server as a Fastify app that never listens (src/cli/serve.ts does). Opens the database unless
 * given one, applies migrations, makes sure keys exist, seeds the sandbox when configured, and mounts
 * oidc-provider and our routes under the issuer's path.
 */
export async function buildApp(config: Config, options: AppOptions = {}): Promise<FastifyInstance> {
  const log = options.logger ?? createLogger(config.logLevel);
  const replica = config.databaseReplica && { ...config.databaseReplica, lookups: replicaLookups(config) };
  const database = options.database ?? (await openDatabase(config.database, { poolMax: config.databasePoolMax, log, connectTimeoutMs: config.databaseConnectTimeoutSeconds * 1000, queryTimeoutMs: config.databaseQueryTimeoutSeconds * 1000, replica, preparedStatements: config.databasePreparedStatements, genericPlans: config.databaseGenericPlans }));
  const ownsDatabase = !options.database;
  try {
    return await assemble(config, options, log, database, ownsDatabase);
  } catch (error) {
    if (ownsDatabase) await database.close().catch(() => undefined);
    throw error;
  }
}

async function assemble(config: Config, options: AppOptions, log: Logger, database: Database, ownsDatabase: boolean): Promise<FastifyInstance> {
  const metrics = config.metricsPort !== undefined || config.metricsToken !== undefined ? createMetrics() : DISABLED;
  const observer = new QueryObserver(metrics);
  const db = observer.useful ? database.db.withPlugin(observer) : database.db;
  const replica: ReplicaReads = database.replica ? (observer.useful ? database.replica.withPlugin(observer) : database.replica) : primaryReads(db);
  // A server started before its database (a restart of both, a failover) waits for it rather than exit.
  const whenAvailable = <T>(what: string, job: () => Promise<T>): Promise<T> => retryWhileUnavailable(job, { log, what, signal: options.signal });
  const box = await openSecretBox(config);
  await whenAvailable('preparing the database', async () => {
    if (options.migrate ?? true) {
      const applied = await migrate(config, log, database, ownsDatabase);
      if (applied.length) log.info({ migrations: applied }, 'database migrated');
    }
    const createdKeys = await ensureSigningKeys(db, box, config.signingAlgs);
    if (createdKeys.length) log.info({ kids: createdKeys }, 'signing keys created');
    await ensureCookieKey(db, box);
    if (await hasMark(db, BEARER_IDS_IN_CLEAR)) {
      const converted = (await hashClearBearerIds(db, box)) + (await hashClearLaunchIds(db, box));
      await clearMark(db, BEARER_IDS_IN_CLEAR);
      if (converted) log.info({ converted }, 'bearer values stored in clear are now stored as keyed hashes');
    }
    if (config.seedDemo) await seedDemo(db, config);
    if (config.seedDemo && usesEmbeddedFhir(config)) {
      const written = await seedSandboxPack(db);
      if (written) log.info(written, 'sandbox FHIR data written: the synthetic pack (smart-auth sandbox reset restores it)');
    }
  });

  const basePath = config.basePath;
  // Requests answered before routing (a URL Fastify cannot route, a request Node refuses): their log line and metrics.
  const unrouted = observeUnrouted(metrics);
  // pino's Logger is what Fastify logs with; the instance is typed with Fastify's narrower logger interface.
  const app = Fastify<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression>({
    loggerInstance: log,
    trustProxy: typeof config.trustProxy === 'object' ? [...config.trustProxy] : config.trustProxy,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    return503OnClosing: true,
    // One line per request instead, at the level it deserves (src/http/observe-requests.ts).
    logController: new LogController({ disableRequestLogging: true }),
    ...connectionOptions(config, unrouted),
    // Unknown properties are refused, not silently dropped: a misspelt field should be an error.
    ajv: { customOptions: { removeAdditional: false } },
    schemaErrorFormatter,
    frameworkErrors: frameworkErrorHandler(errorForms(config), securityHeaderList({ https: config.issuer.startsWith('https:') }), unrouted),
  });

  const audit = new AuditLog(db, log, box, metrics);
  const clients = new ClientCache<AdapterPayload>(config.clientCacheSeconds);
  const users = new UserCache(config.userCacheSeconds);
  const crls = new CrlCache({ allowPrivate: config.outboundAllowPrivate, timeoutMs: JWKS_FETCH_TIMEOUT_MS, maxBytes: CRL_MAX_BYTES });
  const outbound = { allowPrivate: config.outboundAllowPrivate, timeoutMs: JWKS_FETCH_TIMEOUT_MS, maxBytes: JWKS_MAX_BYTES };
  const jwks = new JwksCache(outbound);
  const host = await whenAvailable('loading the keys', () => ProviderHost.create({
    config,
    db,
    replica,
    box,
    log,
    audit,
    renderErrorPage: (page) => renderErrorPage(app, basePath, page),
    renderPage: (view, data) => app.view(`${view}.ejs`, { basePath, ...data }),
    clients,
    users,
    jwks,
    crls,
    verdicts: new ChainVerdicts(),
  }));
  const maintenance = new Maintenance({ config, db, box, host, log });
  app.decorate('runtime', { config, database, box, host, maintenance, audit, clients, metrics } satisfies Runtime);
  metrics.observe({ pool: () => database.poolStats(), statements: () => database.statementCounts?.(), replica: () => database.replica?.status(), auditQueue: () => audit.pending, signingKeys: () => signingKeyAges(replica.db('signing-keys')) });

  if (tracingEnabled()) await app.register(traceRequests);
  await app.register(observeRequests, { basePath: config.basePath, metrics });
  await app.register(closeAfterUnreadBody);
  await app.register(securityHeaders, { https: config.issuer.startsWith('https:') });
  await app.register(loopbackOrigin, { issuer: config.issuer });
  // production: each page compiled once; cache: so are the partials it includes (ejs recompiles them at every
  // render otherwise: 380 µs → 60–130 µs for the error page). root: the views include their partials by a path
  // from it ('/partials/head'), which ejs resolves without asking the file system; a relative one costs an
  // existsSync at every include of every render.
  await app.register(fastifyView, { engine: { ejs }, root: VIEWS_DIR, viewExt: 'ejs', production: true, options: { cache: true, root: VIEWS_DIR } });
  const methodsByPath = new Map<string, string[]>();
  for (const { path, methods, feature, noHead } of PROVIDER_ENDPOINTS) {
    const served = feature !== 'registration' || config.registration !== 'off' || (config.udap !== undefined && path === ROUTES.registration);
    if (!path.includes(':') && served) methodsByPath.set(`${basePath}${path}`, noHead ? [...methods] : withHead(methods));
  }
  methodsByPath.set(`${basePath}${SMART_CONFIGURATION_PATH}`, withHead(['GET', 'OPTIONS']));
  await app.register(errorHandling, { ...errorForms(config), methodsByPath });
  await app.register(inputGuard);
  await app.register(sandboxApps, { config, db, box, audit, clients });
  await app.register(fastifyStatic, { root: PUBLIC_DIR, prefix: `${basePath}/static/`, maxAge: 3600 * 1000, index: false });
  await app.register(healthRoutes, { prefix: basePath, database });
  if (config.metricsToken) await app.register(metricsRoute, { prefix: basePath, metrics, token: config.metricsToken });
  await app.register(smartConfigurationRoutes, { config });
  await app.register(udapDiscoveryRoutes, { config });
  const udap = config.udap;
  const registrationsPerSource = config.registrationPerHour > 0 ? registrationPolicy(config.registrationPerHour) : undefined;
  await app.register(providerRoutes, {
    prefix: basePath,
    host,
    issuer: config.issuer,
    basePath,
    registration: config.registration !== 'off',
    admitRegistration: registrationsPerSource
      ? async (request) => {
          const admission = await countAttempt(db, throttleKey(box, 'registration', sourceOf(request.ip)), registrationsPerSource);
          return admission.admitted ? undefined : admission.retryAfterSeconds;
        }
      : undefined,
    udapRegistration: udap
      ? async (request, body) => (isUdapRegistration(body) ? registerUdapClient({ config, udap, db, box, crls, audit, clients }, body, { sourceIp: request.ip, requestId: request.id }) : undefined)
      : undefined,
  });
  const tiered = udap && tieredCommunities(udap).length ? new TieredSignIn({ config, host, audit, tiered: { config, udap, db, crls, jwks, outbound } }) : undefined;
  await app.register(interactionRoutes, { prefix: basePath, config, db, replica, box, host, audit, users, tiered });
  await app.register(styleRoutes, { prefix: basePath });
  await app.register(sandboxRoutes, { prefix: basePath, config, db, replica, box, audit, clients });
  await app.register(landingRoutes, { prefix: basePath, config });
  await app.register(adminApi, { config, db, box, host, audit, maintenance, clients, users });
  await app.register(operatorConsole, { prefix: basePath, config, db, box, host, audit, maintenance, clients, users });
  await app.register(accountRoutes, { prefix: basePath, config, db, box, host, audit });
  await app.register(gatewayRoutes, { config, db, box, host, audit, log, upstreams: await resolveUpstreams(app, config, db) });

  if (options.background ?? true) {
    app.addHook('onReady', (done) => {
      maintenance.start();
      done();
    });
  }
  app.addHook('onClose', async () => {
    await maintenance.stop();
    await audit.close();
    if (ownsDatabase) await database.close();
  });
  return app;
}

/**
 * Applies pending migrations. On a Postgres the app opened, over a connection of their own without the
 * query timeout: a migration (an index on a large table) may take longer than any request should.
 */
async function migrate(config: Config, log: Logger, database: Database, ownsDatabase: boolean): Promise<string[]> {
  if (!ownsDatabase || config.database.kind !== 'postgres') return migrateToLatest(database.db);
  const own = await openDatabase(config.database, { poolMax: 1, log, connectTimeoutMs: config.databaseConnectTimeoutSeconds * 1000, preparedStatements: config.databasePreparedStatements, genericPlans: config.databaseGenericPlans });
  try {
    return await migrateToLatest(own.db);
  } finally {
    await own.close();
  }
}

/** How long each signing key has been signing (active) or waiting to (next), for the key-age gauge. */
async function signingKeyAges(db: Kysely<DB>): Promise<{ alg: string; state: string; since: Date }[]> {
  return (await listSigningKeys(db)).flatMap((key): { alg: string; state: string; since: Date }[] => {
    if (key.state === 'active') return [{ alg: key.alg, state: key.state, since: key.activatedAt ?? key.createdAt }];
    if (key.state === 'next') return [{ alg: key.alg, state: key.state, since: key.createdAt }];
    return [];
  });
}
