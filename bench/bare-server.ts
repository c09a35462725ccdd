/**
 * The ceiling: bare oidc-provider with tokens kept in a Map, nothing of ours, serving the same grants with
 * the same client authentication. The runner starts it as a separate process and measures it in the same
 * run as our server, so that the ratio holds on a noisy machine where absolute figures do not.
 *
 * Configuration arrives as JSON in BARE_CONFIG: { port, clients: [client metadata…], databaseUrl? }. With
 * a databaseUrl, tokens, codes and grants are stored in Postgres by our PayloadAdapter (the same table and
 * queries our server uses), clients stay in memory: the second baseline, oidc-provider plus the storage it
 * cannot do without. A preparation endpoint (outside the timed window) mints codes and refresh tokens.
 *
 * For the launch scenarios it has the least interaction pages a browser can go through: a sign-in form that
 * takes any name (no password hashing), and a consent form that grants what was asked. The same driver
 * (bench/lib/flows.ts) fills them as it fills ours; what bare oidc-provider costs per launch is the floor
 * under ours, which adds the patient picker, the SMART launch context and the audit trail.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import Provider, { type Adapter, type AdapterPayload, type KoaContextWithOIDC } from 'oidc-provider';

import { openDatabase } from '../src/db/database.js';
import { migrateToLatest } from '../src/db/migrate.js';
import { PayloadAdapter, writeDeferredTokens } from '../src/oidc/adapters/payload.js';
import { ReplayDetectionAdapter } from '../src/oidc/adapters/replay-detection.js';
import { ROUTES } from '../src/smart/profile.js';
import { SecretBox } from '../src/security/secret-box.js';

interface BareConfig {
  port: number;
  clients: Record<string, unknown>[];
  databaseUrl?: string;
  /** Serve oidc-provider from Fastify routes as our server does (src/http/provider-routes.ts), for bench/bridge.ts. */
  fastify?: boolean;
}

const { port, clients, databaseUrl, fastify } = JSON.parse(process.env.BARE_CONFIG ?? '{}') as BareConfig;
const issuer = `http://127.0.0.1:${port}`;

/**
 * oidc-provider's own memory adapter keeps at most 1,000 entries (an LRU) and would evict the codes and
 * refresh tokens prepared for a run; this one keeps everything in a Map, which is all a baseline needs.
 */
class MapAdapter implements Adapter {
  static readonly entries = new Map<string, AdapterPayload>();
  static readonly byGrant = new Map<string, Set<string>>();
  /** Sessions by uid (`model:uid` → key), as the interaction pages look them up: no scan of every token. */
  static readonly byUid = new Map<string, string>();
  constructor(readonly model: string) {}
  #key(id: string) {
    return `${this.model}:${id}`;
  }
  upsert(id: string, payload: AdapterPayload): Promise<void> {
    const key = this.#key(id);
    MapAdapter.entries.set(key, payload);
    if (payload.uid) MapAdapter.byUid.set(`${this.model}:${payload.uid}`, key);
    if (payload.grantId) {
      const set = MapAdapter.byGrant.get(payload.grantId) ?? new Set();
      MapAdapter.byGrant.set(payload.grantId, set.add(key));
    }
    return Promise.resolve();
  }
  find(id: string): Promise<AdapterPayload | undefined> {
    return Promise.resolve(MapAdapter.entries.get(this.#key(id)));
  }
  findByUid(uid: string): Promise<AdapterPayload | undefined> {
    const key = MapAdapter.byUid.get(`${this.model}:${uid}`);
    return Promise.resolve(key === undefined ? undefined : MapAdapter.entries.get(key));
  }
  findByUserCode(): Promise<undefined> {
    return Promise.resolve(undefined);
  }
  consume(id: string): Promise<void> {
    const payload = MapAdapter.entries.get(this.#key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
    return Promise.resolve();
  }
  destroy(id: string): Promise<void> {
    const uid = MapAdapter.entries.get(this.#key(id))?.uid;
    if (uid) MapAdapter.byUid.delete(`${this.model}:${uid}`);
    MapAdapter.entries.delete(this.#key(id));
    return Promise.resolve();
  }
  revokeByGrantId(grantId: string): Promise<void> {
    for (const key of MapAdapter.byGrant.get(grantId) ?? []) MapAdapter.entries.delete(key);
    MapAdapter.byGrant.delete(grantId);
    return Promise.resolve();
  }
}

let adapter: (model: string) => Adapter = (model) => new MapAdapter(model);
let database: Awaited<ReturnType<typeof openDatabase>>['db'] | undefined;
if (databaseUrl) {
  const { db } = await openDatabase({ kind: 'postgres', url: databaseUrl });
  database = db;
  await migrateToLatest(db);
  // The same storage as ours, bearer values hashed at rest included.
  const box = new SecretBox(randomBytes(32));
  adapter = (model) => (model === 'ReplayDetection' ? new ReplayDetectionAdapter(db) : new PayloadAdapter(db, box, model));
}

const provider = new Provider(issuer, {
  clients: clients as never,
  // Our paths, so that the runner sends every target the same requests.
  routes: ROUTES,
  adapter,
  clientAuthMethods: ['private_key_jwt', 'client_secret_basic', 'client_secret_post', 'none'],
  enabledJWA: { clientAuthSigningAlgValues: ['RS384', 'ES384', 'RS256', 'ES256'] },
  features: {
    clientCredentials: { enabled: true },
    introspection: { enabled: true, allowedPolicy: () => true },
    revocation: { enabled: true, allowedPolicy: () => true },
    devInteractions: { enabled: false },
    dPoP: { enabled: false },
  },
  scopes: ['openid', 'offline_access', 'fhirUser', 'launch/patient', 'patient/*.rs', 'system/Patient.rs', 'system/Observation.rs'],
  extraParams: ['aud'],
  // Every launch asks for consent, as ours does (a SMART launch picks its context each time): a grant is
  // loaded only at the resume that the consent form's decision names.
  loadExistingGrant: (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId;
    return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
  },
  pkce: { required: () => true },
  ttl: { AccessToken: 3600, ClientCredentials: 300, AuthorizationCode: 600, RefreshToken: 86400, Grant: 86400, IdToken: 3600, Interaction: 3600, Session: 3600 },
  rotateRefreshToken: true,
  issueRefreshToken: () => true,
  findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
});

if (database) {
  const db = database;
  // Our PayloadAdapter keeps the token endpoint's new tokens, and the use of the code or refresh token, for the
  // audit event that records them (ours writes all of it in one statement); bare has no audit, so it marks the
  // code or refresh token used, then writes the tokens, before answering. Without this the Postgres baseline
  // would answer tokens it never stored.
  provider.use(async (ctx: KoaContextWithOIDC, next) => {
    await next();
    if ((ctx.oidc as KoaContextWithOIDC['oidc'] | undefined)?.route === 'token') await writeDeferredTokens(db, ctx);
  });
}

const callback = provider.callback();
const CHALLENGE_OF_VERIFIER = process.env.BARE_CHALLENGE ?? '';

async function mint(kind: 'codes' | 'refresh', n: number, clientId: string): Promise<string[]> {
  const out: string[] = [];
  // Eight at a time: the Postgres variant's pool has ten connections.
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, () => mintSome(kind, n, clientId, out, () => next++)));
  return out;
}

async function mintSome(kind: 'codes' | 'refresh', n: number, clientId: string, out: string[], take: () => number): Promise<void> {
  for (let i = take(); i < n; i = take()) {
    const grant = new provider.Grant({ accountId: `user-${i}`, clientId });
    grant.addOIDCScope('openid offline_access');
    const grantId = await grant.save();
    if (kind === 'codes') {
      out.push(
        await new provider.AuthorizationCode({
          accountId: `user-${i}`,
          client: await provider.Client.find(clientId),
          grantId,
          scope: 'openid offline_access',
          redirectUri: 'https://bench.example/cb',
          codeChallenge: CHALLENGE_OF_VERIFIER,
          codeChallengeMethod: 'S256',
        } as never).save(),
      );
    } else {
      out.push(await new provider.RefreshToken({ accountId: `user-${i}`, client: await provider.Client.find(clientId), grantId, scope: 'openid offline_access', gty: 'authorization_code' } as never).save());
    }
  }
}

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');

function page(res: ServerResponse, html: string): void {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><html lang="en"><head><title>bench</title></head><body>${html}</body></html>`);
}

async function formOf(req: IncomingMessage): Promise<URLSearchParams> {
  let body = '';
  for await (const chunk of req) body += String(chunk);
  return new URLSearchParams(body);
}

/** GET /interaction/:uid, POST /interaction/:uid/login, POST /interaction/:uid/consent. */
async function interaction(req: IncomingMessage, res: ServerResponse, uid: string, step: string | undefined): Promise<void> {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction and cookie disagree');
  const base = `/interaction/${escape(uid)}`;
  if (req.method === 'GET' && !step) {
    if (details.prompt.name === 'login') {
      page(res, `<form method="post" action="${base}/login"><input type="hidden" name="csrf" value="-"><input name="username"><input type="password" name="password"><button>Sign in</button></form>`);
    } else {
      const scopes = typeof details.params.scope === 'string' ? details.params.scope.split(' ').filter(Boolean) : [];
      const boxes = scopes.map((scope) => `<label><input type="checkbox" name="scope" value="${escape(scope)}" checked>${escape(scope)}</label>`).join('');
      page(res, `<form method="post" action="${base}/consent"><input type="hidden" name="csrf" value="-">${boxes}<button name="decision" value="approve">Allow</button></form>`);
    }
    return;
  }
  const form = await formOf(req);
  if (req.method === 'POST' && step === 'login') {
    await provider.interactionFinished(req, res, { login: { accountId: form.get('username') ?? 'someone' } }, { mergeWithLastSubmission: false });
    return;
  }
  if (req.method === 'POST' && step === 'consent' && details.session?.accountId) {
    const clientId = String(details.params.client_id);
    const grant = new provider.Grant({ accountId: details.session.accountId, clientId });
    const chosen = form.getAll('scope').join(' ');
    if (chosen) grant.addOIDCScope(chosen);
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  res.writeHead(400);
  res.end();
}

const serve = (req: IncomingMessage, res: ServerResponse): void => {
  const url = new URL(req.url ?? '/', issuer);
  const step = /^\/interaction\/([^/]+)(?:\/(login|consent))?$/.exec(url.pathname);
  if (step) {
    interaction(req, res, step[1]!, step[2]).catch((error: unknown) => {
      res.writeHead(500);
      res.end(String(error));
    });
    return;
  }
  if (url.pathname === '/__prepare') {
    const kind = url.searchParams.get('kind') === 'refresh' ? 'refresh' : 'codes';
    mint(kind, Number(url.searchParams.get('n') ?? '0'), url.searchParams.get('client') ?? '').then(
      (values) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(values));
      },
      (error: unknown) => {
        res.writeHead(500);
        res.end(String(error));
      },
    );
    return;
  }
  void callback(req, res);
};

if (fastify) {
  // What our bridge does for the token and introspection endpoints, without our hooks: a Fastify route per
  // endpoint, the body left unread, the request handed to oidc-provider's Koa callback.
  const app = Fastify({ logger: false });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => done(null, undefined));
  const handler = (request: FastifyRequest, reply: FastifyReply): void => {
    reply.hijack();
    serve(request.raw, reply.raw);
  };
  for (const url of ['/token', '/introspect', '/revoke', '/jwks', '/.well-known/openid-configuration', '/__prepare']) app.route({ method: ['GET', 'POST'], url, handler, exposeHeadRoute: false });
  await app.listen({ port, host: '127.0.0.1' });
  process.stdout.write(`bare oidc-provider in Fastify listening on ${issuer}\n`);
} else {
  createServer(serve).listen(port, '127.0.0.1', () => process.stdout.write(`bare oidc-provider listening on ${issuer}\n`));
}

// An orderly exit on the bench's SIGTERM, so that a --cpu-prof given in BENCH_BARE_NODE_FLAGS is written.
process.on('SIGTERM', () => process.exit(0));
