/**
 * What the Fastify bridge costs (issue 15, item 3): bare oidc-provider in memory (bench/bare-server.ts) served
 * from Node's HTTP server, and the same served from Fastify routes that hand each request to oidc-provider's
 * Koa callback as our server does (src/http/provider-routes.ts), without our hooks. Both processes run at
 * once and are loaded in turn, round by round, so that the drift of a shared machine falls on both alike.
 *
 *   npx tsx bench/bridge.ts [--duration S] [--rounds N] [--connections N]
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import { perOperation, snapshot } from './lib/cost.js';
import { CHALLENGE } from './lib/flows.js';
import { load, type RequestSpec } from './lib/load.js';
import { bareSecretClients, basicAuthorization, form, FORM, SYSTEM_SCOPE } from './lib/requests.js';
import { startBare, type ServerProcess } from './lib/servers.js';

const { values: args } = parseArgs({ options: { duration: { type: 'string' }, rounds: { type: 'string' }, connections: { type: 'string' } } });
const DURATION = Number(args.duration ?? 3);
const ROUNDS = Number(args.rounds ?? 3);
const CONNECTIONS = Number(args.connections ?? 16);
const SECRET = randomBytes(24).toString('base64url');
const CLIENTS = bareSecretClients(SECRET);
const CC_BODY = form({ grant_type: 'client_credentials', scope: SYSTEM_SCOPE });

async function ccToken(url: string): Promise<string> {
  const res = await fetch(`${url}/token`, { method: 'POST', headers: { ...FORM, authorization: basicAuthorization('bench-basic', SECRET) }, body: CC_BODY });
  const body = (await res.json()) as { access_token?: string };
  if (!body.access_token) throw new Error(`no token: ${JSON.stringify(body)}`);
  return body.access_token;
}

const scenarios: { name: string; prepare: (url: string) => Promise<() => RequestSpec> }[] = [
  { name: 'discovery', prepare: async () => () => ({ method: 'GET', path: '/.well-known/openid-configuration' }) },
  {
    name: 'cc-basic',
    prepare: async () => () => ({ method: 'POST', path: '/token', headers: { ...FORM, authorization: basicAuthorization('bench-basic', SECRET) }, body: CC_BODY }),
  },
  {
    name: 'introspect-valid',
    prepare: async (url) => {
      const tokens = await Promise.all(Array.from({ length: 50 }, () => ccToken(url)));
      let i = 0;
      return () => ({ method: 'POST', path: '/introspect', headers: { ...FORM, authorization: basicAuthorization('bench-rs', SECRET) }, body: form({ token: tokens[i++ % tokens.length]! }) });
    },
  },
];

interface Figures {
  rps: number[];
  us: number[];
}

async function measure(server: ServerProcess, next: () => RequestSpec): Promise<{ rps: number; us: number | undefined }> {
  const target = { url: server.url, pid: server.child.pid };
  const before = await snapshot(target, { withPostgres: false });
  const run = await load(server.url, next, { duration: DURATION, connections: CONNECTIONS });
  if (run.errors) throw new Error(`${run.errors} errors against ${server.url}`);
  return { rps: run.rps, us: perOperation(before, await snapshot(target, { withPostgres: false }), run.ok)?.serverUs };
}

const median = (values: readonly number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? NaN;

const plain = await startBare(CLIENTS, CHALLENGE);
const bridged = await startBare(CLIENTS, CHALLENGE, undefined, { fastify: true });
try {
  const rows: string[] = [];
  for (const scenario of scenarios) {
    const figures = { plain: { rps: [], us: [] } as Figures, bridged: { rps: [], us: [] } as Figures };
    const next = { plain: await scenario.prepare(plain.url), bridged: await scenario.prepare(bridged.url) };
    for (let round = 0; round < ROUNDS; round++) {
      // Each goes first every other round: what the first run of a round warms or wears is shared.
      const order = [['plain', plain], ['bridged', bridged]] as const;
      for (const [key, server] of round % 2 ? [...order].reverse() : order) {
        const { rps, us } = await measure(server, next[key]);
        figures[key].rps.push(rps);
        if (us !== undefined) figures[key].us.push(us);
      }
    }
    const [p, b] = [figures.plain, figures.bridged];
    const line = `| ${scenario.name} | ${median(p.rps).toFixed(0)} | ${median(b.rps).toFixed(0)} | ${(median(b.rps) / median(p.rps)).toFixed(2)} | ${median(p.us).toFixed(0)} | ${median(b.us).toFixed(0)} | ${(median(b.us) - median(p.us)).toFixed(0)} | ${(median(p.us) / median(b.us)).toFixed(2)} |`;
    process.stderr.write(`${line}\n`);
    rows.push(line);
  }
  process.stdout.write(
    [
      `Bare oidc-provider in memory, Node's HTTP server against Fastify routes (the bridge): median of ${ROUNDS} rounds of ${DURATION} s at ${CONNECTIONS} connections, loaded in turn.`,
      '',
      '| scenario | plain rps | bridged rps | ÷ plain | plain µs/op | bridged µs/op | added µs | plain ÷ bridged CPU |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...rows,
      '',
    ].join('\n'),
  );
} finally {
  await plain.stop();
  await bridged.stop();
}
