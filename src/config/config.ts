import { isIP } from 'node:net';

import { Ajv, type ErrorObject } from 'ajv';

import { loadUdapConfig, type UdapConfig } from './udap-config.js';

/**
 * Server configuration. Built once from the environment by {@link loadConfig}, frozen, and passed to
 * whatever needs it; nothing else reads `process.env`.
 */
export interface Config {
  readonly port: number;
  readonly host: string;
  /** Public base URL of this server, without a trailing slash. Every URL we hand out is built from it. */
  readonly issuer: string;
  /** The issuer's path, without a trailing slash ('' at the root): every route of ours is mounted under it. */
  readonly basePath: string;
  readonly database: DatabaseConfig;
  /** The FHIR base URLs this server issues tokens for: the only accepted `aud` values. Normalised, no trailing slash. */
  readonly fhirBaseUrls: readonly string[];
  readonly adminToken: string | undefined;
  /** 32-byte key that encrypts private keys and secrets at rest. Unset only on the embedded database (then kept in DATA_DIR). */
  readonly secretKey: Buffer | undefined;
  /** Earlier secret keys, still accepted for decryption while data is re-encrypted. */
  readonly previousSecretKeys: readonly Buffer[];
  readonly logLevel: LogLevel;
  readonly trustProxy: TrustProxy;
  readonly seedDemo: boolean;
  readonly signingAlgs: readonly SigningAlg[];
  /** Days between automatic signing-key rotations; 0 turns automatic rotation off. */
  readonly keyRotationDays: number;
  /** How often each process re-reads the key set from the database, so all processes agree after a rotation. */
  readonly keyRefreshSeconds: number;
  readonly purgeIntervalSeconds: number;
  readonly shutdownTimeoutSeconds: number;
  /** How long a client may take to send a request's headers; then 408 and the connection closes. */
  readonly headersTimeoutSeconds: number;
  /** How long a client may take to send a whole request, body included; then 408 and the connection closes. */
  readonly requestTimeoutSeconds: number;
  /** How long an idle keep-alive connection stays open; longer than any load balancer's idle timeout in front. */
  readonly keepAliveTimeoutSeconds: number;
  readonly databasePoolMax: number;
  /** Whether the hot path's fixed statements are prepared once per connection (DATABASE_PREPARED_STATEMENTS, default true). */
  readonly databasePreparedStatements: boolean;
  /** Whether those statements are planned once per connection (DATABASE_GENERIC_PLANS, default true; src/db/pool.ts). */
  readonly databaseGenericPlans: boolean;
  /** How long a new Postgres connection, or a wait for a free one, may take before the request fails (503). */
  readonly databaseConnectTimeoutSeconds: number;
  /** How long a Postgres query may go unanswered before it fails (503) and its connection closes; 0: no limit. */
  readonly databaseQueryTimeoutSeconds: number;
  /** A Postgres hot standby for the lookups that tolerate lag (src/db/replica.ts), with the lag past which it is not read. */
  readonly databaseReplica: { readonly url: string; readonly maxLagMs: number } | undefined;
  /** Let outbound fetches (client JWKS URLs) reach loopback and private addresses, and use plain http. */
  readonly outboundAllowPrivate: boolean;
  /** Seconds of clock difference tolerated in client assertions and tokens. */
  readonly clockSkewSeconds: number;
  /** FHIR base URLs that receive RFC 9068 JWT access tokens instead of opaque ones. */
  readonly jwtAccessTokenAudiences: readonly string[];
  /** Origins allowed to frame the login, picker and consent pages (EHRs that embed apps). */
  readonly frameAncestors: readonly string[];
  /**
   * Sandbox mode: demo data, the launcher, open registration and the embedded FHIR server behind the first
   * FHIR base. On by default on the embedded database, off with DATABASE_URL; SANDBOX decides either way.
   */
  readonly sandbox: boolean;
  /** Why the sandbox mode is what it is, for the start-up log. */
  readonly sandboxReason: string;
  /** How long an offline_access refresh token lives; each use renews it for this long. */
  readonly refreshTokenTtlDays: number;
  /** Dynamic client registration (RFC 7591): open to anyone, with an initial access token, or off. */
  readonly registration: 'open' | 'token' | 'off';
  /** The status a dynamically registered client starts in. */
  readonly registrationStatus: 'active' | 'pending';
  /** Dynamic registrations per hour from one source (0: no limit). */
  readonly registrationPerHour: number;
  /** How long each process keeps a client's metadata before reading it again (0: every request). */
  readonly clientCacheSeconds: number;
  /** How long each process keeps a signed-in user's row before reading it again (0: every request). */
  readonly userCacheSeconds: number;
  /** How often a signed checkpoint of the audit trail is written (0: only on demand). */
  readonly auditCheckpointSeconds: number;
  /** Introspections alike are audited as one row per window of this many seconds with a count (0: a row each). */
  readonly introspectionAuditWindowSeconds: number;
  /** A port of its own serving `/metrics` without a token (undefined: none). */
  readonly metricsPort: number | undefined;
  /** The Bearer token `/metrics` on the server's port asks for (undefined: not served there). */
  readonly metricsToken: string | undefined;
  /** Where traces go (OTLP over HTTP); undefined: no tracing, and the SDK is never loaded. */
  readonly otlpEndpoint: string | undefined;
  /** The FHIR bases this server fronts as a gateway, each with its upstream FHIR server. */
  readonly fhirUpstreams: readonly FhirUpstream[];
  /** UDAP trust communities (UDAP_CONFIG); undefined: UDAP is off and not advertised. */
  readonly udap: UdapConfig | undefined;
  /**
   * Security labels (`system|code`) that mark a resource as sensitive (PDex): withheld from Provider Access
   * and Payer-to-Payer clients for members who chose to exclude sensitive data. SENSITIVE_SECURITY_LABELS.
   */
  readonly sensitiveSecurityLabels: readonly string[];
}

/** A FHIR base this server fronts (the gateway), and where its requests go. */
export interface FhirUpstream {
  /** The public FHIR base, one of FHIR_BASE_URLS. */
  readonly base: string;
  /** The upstream FHIR server's base URL, without a trailing slash; {@link EMBEDDED_UPSTREAM} for the embedded FHIR server. */
  readonly url: string;
  /** Headers sent with every upstream request (a static Authorization, say). Never logged. */
  readonly headers: Readonly<Record<string, string>>;
  /** How long the upstream may take to answer (headers, then each part of the body): then 504. */
  readonly timeoutSeconds: number;
  /** Kept-alive connections to the upstream, at most. */
  readonly connections: number;
  /** Operations (`$validate`) and search features (`_filter`, `_query`, `_contained`) let through besides those the gateway reasons about. */
  readonly allow: readonly string[];
  /** Reach the upstream through this Unix socket (the embedded FHIR server) rather than the network. */
  readonly socketPath?: string | undefined;
}

/** FHIR_UPSTREAMS' name for the embedded FHIR server (src/fhir), which the server starts itself. */
export const EMBEDDED_UPSTREAM = 'embedded';

/** Whether the server runs the embedded FHIR server (in sandbox mode, or named in FHIR_UPSTREAMS). */
export function usesEmbeddedFhir(config: Pick<Config, 'fhirUpstreams'>): boolean {
  return config.fhirUpstreams.some((u) => u.url === EMBEDDED_UPSTREAM);
}

export type DatabaseConfig =
  | { readonly kind: 'postgres'; readonly url: string }
  | { readonly kind: 'pglite'; readonly dataDir: string };

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
/** As Fastify takes it: off, every hop, or the addresses/CIDRs (or proxy-addr's named ranges) of trusted proxies. */
export type TrustProxy = boolean | readonly string[];

export const SIGNING_ALGS = ['RS256', 'RS384', 'ES256', 'ES384'] as const;
export type SigningAlg = (typeof SIGNING_ALGS)[number];

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * One schema for every variable. `description` is what a person reads when the value is wrong, so it says
 * what is expected, not what the variable is for (that is in `.env.example`).
 */
const schema = {
  type: 'object',
  additionalProperties: true,
  properties: {
    PORT: { type: 'integer', minimum: 0, maximum: 65535, description: 'an integer from 0 to 65535 (0 picks a free port)' },
    HOST: { type: 'string', pattern: '^[A-Za-z0-9.:_\\[\\]-]+$', description: 'a host name or IP address to listen on, e.g. 0.0.0.0 or localhost' },
    ISSUER: { type: 'string', pattern: '^https?://[^?#\\s]+$', description: 'an absolute http(s) URL without query or fragment, e.g. https://auth.example.org' },
    DATABASE_URL: { type: 'string', pattern: '^postgres(ql)?://\\S+$', description: 'a postgres:// or postgresql:// connection URL' },
    DATA_DIR: { type: 'string', minLength: 1, description: 'a directory path for the embedded database' },
    FHIR_BASE_URLS: { type: 'string', pattern: '^\\S+$', description: 'comma-separated absolute http(s) URLs without spaces, e.g. https://fhir.example.org/r4' },
    ADMIN_TOKEN: { type: 'string', minLength: 32, pattern: '^[\\x21-\\x7e]+$', description: 'at least 32 printable characters without spaces (e.g. `openssl rand -base64 32`)' },
    SECRET_KEY: { type: 'string', minLength: 1, description: 'a 32-byte key as 64 hex characters or 43/44 base64 characters (`npx smart-auth gen-secret` prints one)' },
    SECRET_KEYS_PREVIOUS: { type: 'string', minLength: 1, description: 'comma-separated earlier SECRET_KEY values, each a 32-byte key in hex or base64' },
    LOG_LEVEL: { type: 'string', enum: LOG_LEVELS, description: `one of ${LOG_LEVELS.join(', ')}` },
    TRUST_PROXY: { type: 'string', pattern: '^(true|false|[0-9A-Za-z.:/]+(,[0-9A-Za-z.:/]+)*)$', description: 'true, false, or comma-separated addresses or CIDR ranges of the proxies in front of this server (also loopback, linklocal, uniquelocal)' },
    SEED_DEMO: { type: 'string', enum: ['true', 'false'], description: 'true or false' },
    SIGNING_ALGS: { type: 'string', pattern: `^(${SIGNING_ALGS.join('|')})(,(${SIGNING_ALGS.join('|')}))*$`, description: `comma-separated algorithms from ${SIGNING_ALGS.join(', ')}; RS256 is always included` },
    KEY_ROTATION_DAYS: { type: 'integer', minimum: 0, maximum: 3650, description: 'an integer number of days from 0 (off) to 3650' },
    KEY_REFRESH_SECONDS: { type: 'integer', minimum: 1, maximum: 3600, description: 'an integer number of seconds from 1 to 3600' },
    PURGE_INTERVAL_SECONDS: { type: 'integer', minimum: 1, maximum: 86400, description: 'an integer number of seconds from 1 to 86400' },
    SHUTDOWN_TIMEOUT_SECONDS: { type: 'integer', minimum: 1, maximum: 600, description: 'an integer number of seconds from 1 to 600' },
    HEADERS_TIMEOUT_SECONDS: { type: 'integer', minimum: 1, maximum: 300, description: 'an integer number of seconds from 1 to 300, at most REQUEST_TIMEOUT_SECONDS' },
    REQUEST_TIMEOUT_SECONDS: { type: 'integer', minimum: 1, maximum: 3600, description: 'an integer number of seconds from 1 to 3600' },
    KEEP_ALIVE_TIMEOUT_SECONDS: { type: 'integer', minimum: 1, maximum: 3600, description: 'an integer number of seconds from 1 to 3600' },
    DATABASE_POOL_MAX: { type: 'integer', minimum: 1, maximum: 1000, description: 'an integer from 1 to 1000' },
    DATABASE_CONNECT_TIMEOUT_SECONDS: { type: 'integer', minimum: 1, maximum: 300, description: 'an integer number of seconds from 1 to 300' },
    DATABASE_QUERY_TIMEOUT_SECONDS: { type: 'integer', minimum: 0, maximum: 3600, description: 'an integer number of seconds from 0 (no limit) to 3600' },
    DATABASE_PREPARED_STATEMENTS: { type: 'string', enum: ['true', 'false'], description: 'true or false (false behind a pooler in transaction mode that does not keep prepared statements: PgBouncer before 1.21, or without max_prepared_statements)' },
    DATABASE_GENERIC_PLANS: { type: 'string', enum: ['true', 'false'], description: 'true or false' },
    DATABASE_REPLICA_URL: { type: 'string', pattern: '^postgres(ql)?://\\S+$', description: 'a postgres:// or postgresql:// connection URL of a hot standby of DATABASE_URL' },
    DATABASE_REPLICA_MAX_LAG_MS: { type: 'integer', minimum: 2000, maximum: 600000, description: 'an integer number of milliseconds from 2000 (the lag is measured every second) to 600000' },
    OUTBOUND_ALLOW_PRIVATE: { type: 'string', enum: ['true', 'false'], description: 'true or false' },
    CLOCK_SKEW_SECONDS: { type: 'integer', minimum: 0, maximum: 300, description: 'an integer number of seconds from 0 to 300' },
    CLIENT_CACHE_SECONDS: { type: 'integer', minimum: 0, maximum: 300, description: 'an integer number of seconds from 0 (off) to 300' },
    USER_CACHE_SECONDS: { type: 'integer', minimum: 0, maximum: 300, description: 'an integer number of seconds from 0 (off) to 300' },
    FRAME_ANCESTORS: { type: 'string', pattern: '^https?://[^,\\s/]+(,https?://[^,\\s/]+)*$', description: 'comma-separated origins (scheme://host[:port]) allowed to frame the sign-in pages' },
    SANDBOX: { type: 'string', enum: ['true', 'false'], description: 'true or false' },
    REGISTRATION: { type: 'string', enum: ['open', 'token', 'off'], description: 'open, token or off' },
    REGISTRATION_STATUS: { type: 'string', enum: ['active', 'pending'], description: 'active or pending' },
    REGISTRATION_PER_HOUR: { type: 'integer', minimum: 0, maximum: 1_000_000, description: 'an integer from 0 (no limit) to 1000000' },
    REFRESH_TOKEN_TTL_DAYS: { type: 'integer', minimum: 1, maximum: 3650, description: 'an integer number of days from 1 to 3650' },
    JWT_ACCESS_TOKEN_AUDIENCES: { type: 'string', pattern: '^\\S+$', description: 'comma-separated FHIR base URLs, each one of FHIR_BASE_URLS' },
    METRICS_PORT: { type: 'integer', minimum: 1, maximum: 65535, description: 'an integer from 1 to 65535, not PORT' },
    METRICS_TOKEN: { type: 'string', minLength: 32, pattern: '^[\\x21-\\x7e]+$', description: 'at least 32 printable characters without spaces (e.g. `openssl rand -base64 32`)' },
    OTEL_EXPORTER_OTLP_ENDPOINT: { type: 'string', pattern: '^https?://[^?#\\s]+$', description: 'the http(s) URL of an OTLP/HTTP collector, e.g. http://otel-collector:4318' },
    AUDIT_CHECKPOINT_SECONDS: { type: 'integer', minimum: 0, maximum: 604800, description: 'an integer number of seconds from 0 (off) to 604800 (a week)' },
    INTROSPECTION_AUDIT_WINDOW_SECONDS: { type: 'integer', minimum: 0, maximum: 3600, description: 'an integer number of seconds from 0 (a row for each introspection) to 3600' },
    FHIR_UPSTREAMS: { type: 'string', pattern: '^\\S+=\\S+$', description: 'comma-separated FHIR_BASE_URL=UPSTREAM_URL pairs (UPSTREAM_URL an http(s) URL, or embedded), e.g. https://ehr.example.org/fhir=http://fhir-internal:8080/fhir' },
    FHIR_UPSTREAM_HEADERS: { type: 'string', minLength: 2, description: 'a JSON object from FHIR base URL to an object of header names and values, e.g. {"https://ehr.example.org/fhir":{"Authorization":"Basic …"}}' },
    FHIR_UPSTREAM_OPTIONS: { type: 'string', minLength: 2, description: 'a JSON object from FHIR base URL to {"timeoutSeconds": 1-600, "connections": 1-1024, "allow": ["$validate", "_filter", …]}' },
    UDAP_CONFIG: { type: 'string', minLength: 1, description: 'the path of a JSON file listing UDAP trust communities (docs/udap.md)' },
    FHIR_UPSTREAM_TIMEOUT_SECONDS: { type: 'integer', minimum: 1, maximum: 600, description: 'an integer number of seconds from 1 to 600' },
    SENSITIVE_SECURITY_LABELS: { type: 'string', pattern: '^[^,|\\s]+\\|[^,|\\s]+(,[^,|\\s]+\\|[^,|\\s]+)*$', description: 'comma-separated security labels as system|code, e.g. http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R' },
  },
} as const;

type VariableName = keyof typeof schema.properties;
export const CONFIG_VARIABLES = Object.keys(schema.properties) as VariableName[];

const ajv = new Ajv({ allErrors: true, coerceTypes: true, strict: true });
const validate = ajv.compile(schema);

/**
 * Reads and validates the configuration from `env` (normally `process.env` after `.env` was loaded).
 * Empty values count as unset, so `VAR=` in a compose file means "use the default".
 * @throws {ConfigError} naming every bad variable and what it expects.
 */
export function loadConfig(env: Readonly<Record<string, string | undefined>>): Config {
  const raw: Record<string, unknown> = {};
  for (const name of CONFIG_VARIABLES) {
    const value = env[name]?.trim();
    if (value) raw[name] = value;
  }
  const given = { ...raw };
  const problems: string[] = [];
  if (!validate(raw)) {
    const failed = failedVariables(validate.errors ?? []);
    problems.push(...failed.map((name) => describeProblem(name, given[name])));
  }
  // Go on with the defaults in place of bad values, so that one run reports every problem.
  const failed = new Set(problems.map((p) => p.slice(0, p.indexOf('='))));
  const v = Object.fromEntries(Object.entries(raw).filter(([name]) => !failed.has(name))) as Partial<Record<VariableName, string | number>>;

  const port = (v.PORT as number | undefined) ?? 3000;
  const issuer = parseIssuer((v.ISSUER as string | undefined) ?? `http://localhost:${port === 0 ? 3000 : port}`, problems);
  const database: DatabaseConfig = v.DATABASE_URL
    ? { kind: 'postgres', url: v.DATABASE_URL as string }
    : { kind: 'pglite', dataDir: (v.DATA_DIR as string | undefined) ?? './.data' };

  for (const name of ['DATABASE_URL', 'DATABASE_REPLICA_URL'] as const) {
    const url = v[name] as string | undefined;
    if (url !== undefined && !parsesAsConnectionUrl(url)) problems.push(`${name}=(value hidden) is invalid: expected a connection URL the Postgres driver can read (a port from 1 to 65535, an IPv6 address in brackets, user name and password percent-encoded)`);
  }
  if (v.DATABASE_REPLICA_URL && database.kind !== 'postgres') problems.push('DATABASE_REPLICA_URL needs DATABASE_URL: a read replica is a standby of a Postgres primary, and the embedded database has none');

  const fhirBaseUrls = v.FHIR_BASE_URLS
    ? parseUrlList('FHIR_BASE_URLS', v.FHIR_BASE_URLS as string, problems)
    : database.kind === 'pglite'
      ? [`${issuer}/fhir`]
      : (problems.push('FHIR_BASE_URLS is required when DATABASE_URL is set: comma-separated absolute http(s) URLs of the FHIR servers this server issues tokens for'), []);

  const secretKey = v.SECRET_KEY === undefined ? undefined : parseSecretKey('SECRET_KEY', v.SECRET_KEY as string, problems);
  if (!secretKey && database.kind === 'postgres' && !problems.some((p) => p.startsWith('SECRET_KEY'))) {
    problems.push('SECRET_KEY is required when DATABASE_URL is set: a 32-byte key as 64 hex characters or base64 (`npx smart-auth gen-secret` prints one)');
  }
  const previousSecretKeys = v.SECRET_KEYS_PREVIOUS
    ? (v.SECRET_KEYS_PREVIOUS as string).split(',').map((k) => parseSecretKey('SECRET_KEYS_PREVIOUS', k.trim(), problems)).filter((k): k is Buffer => k !== undefined)
    : [];

  const signingAlgs = new Set<SigningAlg>(['RS256']);
  for (const alg of ((v.SIGNING_ALGS as string | undefined) ?? 'RS256,RS384,ES256,ES384').split(',')) signingAlgs.add(alg as SigningAlg);

  const udap = v.UDAP_CONFIG === undefined ? undefined : loadUdapConfig(v.UDAP_CONFIG as string, problems);

  const trustProxy = parseTrustProxy((v.TRUST_PROXY as string | undefined) ?? 'false', problems);
  const jwtAccessTokenAudiences = v.JWT_ACCESS_TOKEN_AUDIENCES ? parseUrlList('JWT_ACCESS_TOKEN_AUDIENCES', v.JWT_ACCESS_TOKEN_AUDIENCES as string, problems) : [];
  for (const aud of jwtAccessTokenAudiences) {
    if (!fhirBaseUrls.includes(aud)) problems.push(`JWT_ACCESS_TOKEN_AUDIENCES entry ${JSON.stringify(aud)} is invalid: expected one of FHIR_BASE_URLS (${fhirBaseUrls.join(', ')})`);
  }

  const headersTimeoutSeconds = (v.HEADERS_TIMEOUT_SECONDS as number | undefined) ?? 10;
  const requestTimeoutSeconds = (v.REQUEST_TIMEOUT_SECONDS as number | undefined) ?? 30;
  // Node refuses a headers timeout longer than the request timeout (the headers are part of the request).
  if (headersTimeoutSeconds > requestTimeoutSeconds) {
    problems.push(`HEADERS_TIMEOUT_SECONDS=${headersTimeoutSeconds} is invalid: expected at most REQUEST_TIMEOUT_SECONDS (${requestTimeoutSeconds})`);
  }

  const sandbox = v.SANDBOX === undefined ? database.kind === 'pglite' : v.SANDBOX === 'true';
  const sandboxReason = v.SANDBOX !== undefined ? `SANDBOX=${v.SANDBOX as string}` : sandbox ? 'SANDBOX unset and no DATABASE_URL: the embedded database is a sandbox' : 'SANDBOX unset and DATABASE_URL set: a deployment';
  const fhirUpstreams = v.FHIR_UPSTREAMS
    ? parseUpstreams(v.FHIR_UPSTREAMS as string, v.FHIR_UPSTREAM_HEADERS as string | undefined, v.FHIR_UPSTREAM_OPTIONS as string | undefined, (v.FHIR_UPSTREAM_TIMEOUT_SECONDS as number | undefined) ?? 30, fhirBaseUrls, issuer, problems)
    : [];
  if (!v.FHIR_UPSTREAMS && (v.FHIR_UPSTREAM_HEADERS || v.FHIR_UPSTREAM_OPTIONS)) problems.push('FHIR_UPSTREAM_HEADERS and FHIR_UPSTREAM_OPTIONS apply to the bases in FHIR_UPSTREAMS, which is not set');
  // A sandbox has data behind its FHIR base: the embedded FHIR server, unless FHIR_UPSTREAMS says otherwise.
  const sandboxBase = fhirBaseUrls[0];
  if (sandbox && sandboxBase && !fhirUpstreams.some((u) => u.base === sandboxBase)) {
    if (new URL(sandboxBase).pathname.replace(/\/$/, '') === '') problems.push(`FHIR_BASE_URLS entry ${JSON.stringify(sandboxBase)} is invalid in sandbox mode: the embedded FHIR server is served under it, so it needs a path of its own (e.g. ${issuer}/fhir)`);
    fhirUpstreams.unshift({ base: sandboxBase, url: EMBEDDED_UPSTREAM, headers: {}, timeoutSeconds: (v.FHIR_UPSTREAM_TIMEOUT_SECONDS as number | undefined) ?? 30, connections: 64, allow: [] });
  }
  const metricsPort = v.METRICS_PORT as number | undefined;
  if (metricsPort !== undefined && metricsPort === port) problems.push(`METRICS_PORT=${metricsPort} is invalid: expected a port other than PORT`);

  if (problems.length) throw new ConfigError(problems);

  return Object.freeze({
    port,
    host: (v.HOST as string | undefined) ?? 'localhost',
    issuer,
    basePath: new URL(issuer).pathname.replace(/\/$/, ''),
    database: Object.freeze(database),
    fhirBaseUrls: Object.freeze(fhirBaseUrls),
    adminToken: v.ADMIN_TOKEN as string | undefined,
    secretKey,
    previousSecretKeys: Object.freeze(previousSecretKeys),
    logLevel: (v.LOG_LEVEL as LogLevel | undefined) ?? 'info',
    trustProxy,
    seedDemo: v.SEED_DEMO === undefined ? sandbox : v.SEED_DEMO === 'true',
    signingAlgs: Object.freeze([...signingAlgs]),
    keyRotationDays: (v.KEY_ROTATION_DAYS as number | undefined) ?? 90,
    keyRefreshSeconds: (v.KEY_REFRESH_SECONDS as number | undefined) ?? 60,
    purgeIntervalSeconds: (v.PURGE_INTERVAL_SECONDS as number | undefined) ?? 300,
    shutdownTimeoutSeconds: (v.SHUTDOWN_TIMEOUT_SECONDS as number | undefined) ?? 10,
    headersTimeoutSeconds,
    requestTimeoutSeconds,
    keepAliveTimeoutSeconds: (v.KEEP_ALIVE_TIMEOUT_SECONDS as number | undefined) ?? 72,
    databasePoolMax: (v.DATABASE_POOL_MAX as number | undefined) ?? 10,
    databasePreparedStatements: v.DATABASE_PREPARED_STATEMENTS !== 'false',
    databaseGenericPlans: v.DATABASE_GENERIC_PLANS !== 'false',
    databaseConnectTimeoutSeconds: (v.DATABASE_CONNECT_TIMEOUT_SECONDS as number | undefined) ?? 10,
    databaseQueryTimeoutSeconds: (v.DATABASE_QUERY_TIMEOUT_SECONDS as number | undefined) ?? 30,
    databaseReplica: v.DATABASE_REPLICA_URL ? Object.freeze({ url: v.DATABASE_REPLICA_URL as string, maxLagMs: (v.DATABASE_REPLICA_MAX_LAG_MS as number | undefined) ?? 5000 }) : undefined,
    outboundAllowPrivate: v.OUTBOUND_ALLOW_PRIVATE === 'true',
    clockSkewSeconds: (v.CLOCK_SKEW_SECONDS as number | undefined) ?? 15,
    clientCacheSeconds: (v.CLIENT_CACHE_SECONDS as number | undefined) ?? 5,
    userCacheSeconds: (v.USER_CACHE_SECONDS as number | undefined) ?? 5,
    auditCheckpointSeconds: (v.AUDIT_CHECKPOINT_SECONDS as number | undefined) ?? 3600,
    introspectionAuditWindowSeconds: (v.INTROSPECTION_AUDIT_WINDOW_SECONDS as number | undefined) ?? 60,
    jwtAccessTokenAudiences: Object.freeze(jwtAccessTokenAudiences),
    frameAncestors: Object.freeze(v.FRAME_ANCESTORS ? (v.FRAME_ANCESTORS as string).split(',') : []),
    sandbox,
    sandboxReason,
    refreshTokenTtlDays: (v.REFRESH_TOKEN_TTL_DAYS as number | undefined) ?? 90,
    registration: (v.REGISTRATION as Config['registration'] | undefined) ?? (sandbox ? 'open' : 'token'),
    registrationStatus: (v.REGISTRATION_STATUS as Config['registrationStatus'] | undefined) ?? (sandbox ? 'active' : 'pending'),
    registrationPerHour: (v.REGISTRATION_PER_HOUR as number | undefined) ?? 60,
    fhirUpstreams: Object.freeze(fhirUpstreams),
    udap,
    metricsPort,
    metricsToken: v.METRICS_TOKEN as string | undefined,
    otlpEndpoint: (v.OTEL_EXPORTER_OTLP_ENDPOINT as string | undefined)?.replace(/\/$/, ''),
    sensitiveSecurityLabels: Object.freeze(v.SENSITIVE_SECURITY_LABELS ? (v.SENSITIVE_SECURITY_LABELS as string).split(',') : DEFAULT_SENSITIVE_LABELS),
  });
}

const CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const ACT_CODE = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
/**
 * Restricted and very restricted confidentiality, and the HL7 sensitivity codes for behavioral health,
 * substance use, HIV/AIDS, sexual and reproductive health, sexually transmitted disease, domestic violence
 * and psychiatry (the categories US state and federal law single out, 42 CFR Part 2 among them).
 */
const DEFAULT_SENSITIVE_LABELS = [`${CONFIDENTIALITY}|R`, `${CONFIDENTIALITY}|V`, ...['BH', 'ETH', 'SUD', 'HIV', 'SEX', 'STD', 'SDV', 'PSY'].map((c) => `${ACT_CODE}|${c}`)];

function failedVariables(errors: readonly ErrorObject[]): string[] {
  return [...new Set(errors.map((e) => e.instancePath.replace(/^\//, '')).filter(Boolean))];
}

function describeProblem(name: string, value: unknown): string {
  const expected = (schema.properties as Record<string, { description: string }>)[name]?.description ?? 'a valid value';
  const shown = SENSITIVE.has(name) ? '(value hidden)' : JSON.stringify(value);
  return `${name}=${shown} is invalid: expected ${expected}`;
}

/** Never echoed back in an error message: they are secrets, or (the database URLs) may contain one. */
const SENSITIVE = new Set<string>(['ADMIN_TOKEN', 'METRICS_TOKEN', 'SECRET_KEY', 'SECRET_KEYS_PREVIOUS', 'DATABASE_URL', 'DATABASE_REPLICA_URL', 'FHIR_UPSTREAM_HEADERS']);

/**
 * Whether node-postgres can read the URL: it parses it as a WHATWG URL (again with a placeholder host when the
 * host is empty, for a socket given as `?host=`), and one it cannot parse fails at the first connection, after
 * start-up, as a bare `TypeError: Invalid URL` with a stack trace.
 */
function parsesAsConnectionUrl(value: string): boolean {
  return URL.canParse(value) || URL.canParse(value.replace('@/', '@___DUMMY___/'));
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/** An http issuer is only safe on a loopback host; anywhere else tokens and cookies would cross the network in clear. */
function parseIssuer(value: string, problems: string[]): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    problems.push(`ISSUER=${JSON.stringify(value)} is invalid: expected an absolute http(s) URL`);
    return value;
  }
  if (url.protocol === 'http:' && !LOOPBACK_HOSTS.has(url.hostname) && !url.hostname.endsWith('.localhost')) {
    problems.push(`ISSUER=${JSON.stringify(value)} is invalid: expected an https URL (plain http is only allowed for localhost, 127.0.0.1 or [::1])`);
  }
  if (url.username || url.password) problems.push(`ISSUER=${JSON.stringify(value)} is invalid: expected a URL without user name or password`);
  return stripTrailingSlash(url.href);
}

function parseUrlList(name: string, value: string, problems: string[]): string[] {
  const out: string[] = [];
  for (const item of value.split(',')) {
    let url: URL | undefined;
    try {
      url = new URL(item);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:') || url.search || url.hash || url.username) {
      problems.push(`${name} entry ${JSON.stringify(item)} is invalid: expected an absolute http(s) URL without query, fragment or credentials`);
      continue;
    }
    const normalised = normalizeBaseUrl(url.href);
    if (!out.includes(normalised)) out.push(normalised);
  }
  if (!out.length && !problems.length) problems.push(`${name} is invalid: expected at least one URL`);
  return out;
}

/** Headers the gateway sets or must never forward: they are not the operator's to choose. */
const RESERVED_UPSTREAM_HEADERS = new Set(['host', 'content-length', 'content-type', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'te', 'trailer', 'proxy-authorization', 'proxy-connection', 'accept', 'accept-encoding', 'expect']);
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$/;
/** A header value: visible ASCII, spaces and tabs, nothing that could end the header line. */
const HEADER_VALUE = /^[\t\x20-\x7e]{0,8192}$/;

/**
 * FHIR_UPSTREAMS with its per-base headers and options. Each base must be one of FHIR_BASE_URLS and have a
 * path of its own (the gateway serves everything below it); the upstream is an http(s) URL.
 */
function parseUpstreams(value: string, headersJson: string | undefined, optionsJson: string | undefined, defaultTimeout: number, bases: readonly string[], issuer: string, problems: string[]): FhirUpstream[] {
  const headers = parseJsonByBase('FHIR_UPSTREAM_HEADERS', headersJson, problems, true);
  const options = parseJsonByBase('FHIR_UPSTREAM_OPTIONS', optionsJson, problems, false);
  const out: FhirUpstream[] = [];
  for (const pair of value.split(',')) {
    const [baseText = '', upstreamText = ''] = pair.split(/=(?=https?:\/\/|embedded$)/);
    const shown = JSON.stringify(pair);
    let base: string;
    let upstream: URL;
    try {
      base = normalizeBaseUrl(baseText);
      upstream = new URL(upstreamText === EMBEDDED_UPSTREAM ? 'http://embedded' : upstreamText);
    } catch {
      problems.push(`FHIR_UPSTREAMS entry ${shown} is invalid: expected FHIR_BASE_URL=UPSTREAM_URL, both absolute http(s) URLs (or UPSTREAM_URL embedded)`);
      continue;
    }
    if (!bases.includes(base)) problems.push(`FHIR_UPSTREAMS entry ${shown} is invalid: ${base} is not one of FHIR_BASE_URLS (${bases.join(', ')})`);
    if ((upstream.protocol !== 'http:' && upstream.protocol !== 'https:') || upstream.search || upstream.hash) problems.push(`FHIR_UPSTREAMS entry ${shown} is invalid: the upstream must be an http(s) URL without query or fragment`);
    if (upstream.username || upstream.password) problems.push(`FHIR_UPSTREAMS entry for ${base} is invalid: put the upstream's credentials in FHIR_UPSTREAM_HEADERS, not in its URL`);
    const path = new URL(base).pathname.replace(/\/$/, '');
    const issuerPath = new URL(issuer).pathname.replace(/\/$/, '');
    if (path === '' || path === issuerPath) problems.push(`FHIR_UPSTREAMS entry ${shown} is invalid: a fronted FHIR base needs a path of its own (e.g. ${issuer}/fhir), not the server's root`);
    if (out.some((u) => new URL(u.base).pathname.replace(/\/$/, '') === path)) problems.push(`FHIR_UPSTREAMS entry ${shown} is invalid: another fronted base has the path ${path}`);

    const extra = headers.get(base) ?? {};
    const headerList: Record<string, string> = {};
    for (const [name, headerValue] of Object.entries(extra)) {
      if (!HEADER_NAME.test(name) || typeof headerValue !== 'string' || !HEADER_VALUE.test(headerValue)) problems.push(`FHIR_UPSTREAM_HEADERS for ${base} is invalid: header ${JSON.stringify(name)} needs a token name and a string value of printable characters`);
      else if (RESERVED_UPSTREAM_HEADERS.has(name.toLowerCase())) problems.push(`FHIR_UPSTREAM_HEADERS for ${base} is invalid: ${name} is set by the gateway itself`);
      else headerList[name.toLowerCase()] = headerValue;
    }
    const opts = options.get(base) ?? {};
    const unknown = Object.keys(opts).filter((k) => !['timeoutSeconds', 'connections', 'allow'].includes(k));
    if (unknown.length) problems.push(`FHIR_UPSTREAM_OPTIONS for ${base} is invalid: unknown option ${unknown.join(', ')} (expected timeoutSeconds, connections, allow)`);
    const timeout = opts.timeoutSeconds ?? defaultTimeout;
    if (!Number.isInteger(timeout) || (timeout as number) < 1 || (timeout as number) > 600) problems.push(`FHIR_UPSTREAM_OPTIONS for ${base} is invalid: timeoutSeconds must be an integer from 1 to 600`);
    const connections = opts.connections ?? 64;
    if (!Number.isInteger(connections) || (connections as number) < 1 || (connections as number) > 1024) problems.push(`FHIR_UPSTREAM_OPTIONS for ${base} is invalid: connections must be an integer from 1 to 1024`);
    const allow = opts.allow ?? [];
    if (!Array.isArray(allow) || allow.some((a) => typeof a !== 'string' || !/^(\$[A-Za-z][A-Za-z0-9-]{0,63}|_filter|_query|_contained)$/.test(a))) {
      problems.push(`FHIR_UPSTREAM_OPTIONS for ${base} is invalid: allow must be a list of operations ($name) and search features (_filter, _query, _contained)`);
    }
    out.push({ base, url: upstreamText === EMBEDDED_UPSTREAM ? EMBEDDED_UPSTREAM : upstream.href.replace(/\/$/, ''), headers: Object.freeze(headerList), timeoutSeconds: timeout as number, connections: connections as number, allow: Object.freeze([...(allow as string[])]) });
  }
  for (const [name, map] of [['FHIR_UPSTREAM_HEADERS', headers], ['FHIR_UPSTREAM_OPTIONS', options]] as const) {
    for (const base of map.keys()) if (!out.some((u) => u.base === base)) problems.push(`${name} names ${base}, which is not a base in FHIR_UPSTREAMS`);
  }
  return out;
}

/** A JSON object keyed by FHIR base URL (normalised), each value an object. */
function parseJsonByBase(name: string, json: string | undefined, problems: string[], sensitive: boolean): Map<string, Record<string, unknown>> {
  const out = new Map<string, Record<string, unknown>>();
  if (json === undefined) return out;
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    problems.push(`${name}${sensitive ? '' : `=${JSON.stringify(json)}`} is invalid: expected a JSON object from FHIR base URL to an object`);
    return out;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    problems.push(`${name} is invalid: expected a JSON object from FHIR base URL to an object`);
    return out;
  }
  for (const [key, value] of Object.entries(parsed)) {
    let base: string;
    try {
      base = normalizeBaseUrl(key);
    } catch {
      problems.push(`${name} is invalid: ${JSON.stringify(key)} is not a URL`);
      continue;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) problems.push(`${name} is invalid: the value for ${base} must be an object`);
    else out.set(base, value as Record<string, unknown>);
  }
  return out;
}

/**
 * How long a grant (and its launch context) lives, in seconds: the refresh token's period and a margin of a tenth
 * of it, at most a day. A refresh needs the grant to outlive the token it issues; a grant issued or renewed less
 * than the margin ago already does, so a refresh writes the grant only about once a margin (once a day at most)
 * instead of at every use. The margin is how much longer an app may be listed as connected after its last refresh
 * token expired.
 */
export function grantLifetimeSeconds(config: Pick<Config, 'refreshTokenTtlDays'>): { readonly refresh: number; readonly grant: number } {
  const refresh = config.refreshTokenTtlDays * 86_400;
  return { refresh, grant: refresh + Math.min(86_400, Math.ceil(refresh / 10)) };
}

/**
 * The configured FHIR base a URL names (SMART `aud`, a resource indicator, a launcher form), or undefined when
 * it names none of them or is no URL at all.
 */
export function fhirBaseOf(config: Pick<Config, 'fhirBaseUrls'>, value: string): string | undefined {
  let base: string;
  try {
    base = normalizeBaseUrl(value);
  } catch {
    return undefined;
  }
  return config.fhirBaseUrls.includes(base) ? base : undefined;
}

/**
 * SMART `aud` comparison rule (SMART App Launch 2.2 §Authorization request: `aud`): scheme and host compare
 * case-insensitively, a trailing slash does not matter. The URL parser lower-cases scheme and host.
 */
export function normalizeBaseUrl(value: string): string {
  return stripTrailingSlash(new URL(value).href);
}

function stripTrailingSlash(href: string): string {
  return href.endsWith('/') ? href.slice(0, -1) : href;
}

function parseSecretKey(name: string, value: string, problems: string[]): Buffer | undefined {
  let key: Buffer | undefined;
  if (/^[0-9a-fA-F]{64}$/.test(value)) key = Buffer.from(value, 'hex');
  else if (/^[A-Za-z0-9+/_-]{43}=?$/.test(value)) key = Buffer.from(value.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  if (!key || key.length !== 32) {
    problems.push(`${name} is invalid: expected a 32-byte key as 64 hex characters or 43/44 base64 characters (\`npx smart-auth gen-secret\` prints one)`);
    return undefined;
  }
  return key;
}

/** proxy-addr's named ranges. */
const NAMED_RANGES = new Set(['loopback', 'linklocal', 'uniquelocal']);

function parseTrustProxy(value: string, problems: string[]): TrustProxy {
  if (value === 'true') return true;
  if (value === 'false') return false;
  const entries = value.split(',');
  for (const entry of entries) {
    if (NAMED_RANGES.has(entry)) continue;
    const [address = '', prefix, ...rest] = entry.split('/');
    const family = isIP(address);
    const bits = family === 4 ? 32 : 128;
    const prefixOk = prefix === undefined || (/^[0-9]{1,3}$/.test(prefix) && Number(prefix) <= bits);
    if (!family || !prefixOk || rest.length) {
      problems.push(`TRUST_PROXY entry ${JSON.stringify(entry)} is invalid: expected an IPv4/IPv6 address, a CIDR range such as 10.0.0.0/8, or loopback, linklocal, uniquelocal`);
    }
  }
  return Object.freeze(entries);
}
