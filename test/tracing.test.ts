import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { startTracing, tracingEnabled, type Tracing } from '../src/observability/tracing.js';
import { clientAssertion, clientKey, JWT_BEARER, JwksServer } from './helpers/assertions.js';
import { testApp, TEST_ISSUER } from './helpers/app.js';
import { form, registerClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';

interface ReceivedSpan {
  readonly name: string;
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId?: string;
  readonly kind: number;
  readonly attributes: Record<string, unknown>;
}

interface OtlpJson {
  resourceSpans: { resource: { attributes: OtlpAttribute[] }; scopeSpans: { spans: (Omit<ReceivedSpan, 'attributes'> & { attributes?: OtlpAttribute[] })[] }[] }[];
}
interface OtlpAttribute {
  key: string;
  value: { stringValue?: string; intValue?: number | string; boolValue?: boolean };
}

/** An OTLP/HTTP collector on loopback (JSON, as the exporter sends it): keeps every span it is sent. */
class Receiver {
  readonly spans: ReceivedSpan[] = [];
  readonly services = new Set<string>();
  readonly #server: Server;

  constructor() {
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.method !== 'POST' || req.url !== '/v1/traces' || !/json/.test(req.headers['content-type'] ?? '')) {
          res.writeHead(400).end();
          return;
        }
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as OtlpJson;
        for (const { resource, scopeSpans } of body.resourceSpans) {
          for (const a of resource.attributes) if (a.key === 'service.name' && a.value.stringValue) this.services.add(a.value.stringValue);
          for (const { spans } of scopeSpans) {
            for (const span of spans) this.spans.push({ ...span, attributes: Object.fromEntries((span.attributes ?? []).map((a) => [a.key, a.value.stringValue ?? a.value.intValue ?? a.value.boolValue])) });
          }
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

const receiver = new Receiver();
let tracing: Tracing;

describe('tracing', () => {
  before(async () => {
    assert.equal(tracingEnabled(), false, 'off until started');
    tracing = await startTracing(await receiver.start());
  });
  after(async () => {
    await tracing.shutdown();
    await receiver.close();
  });

  describeEachDatabase('the spans of one token request', (ctx) => {
    let app: FastifyInstance;
    let jwks: JwksServer;
    before(async () => {
      app = await testApp(ctx.current.database, { OUTBOUND_ALLOW_PRIVATE: 'true' });
      jwks = await JwksServer.start();
    });
    after(async () => {
      await app.close();
      await jwks.close();
    });

    it('reach an OTLP collector: the request, each oidc-provider step, the SQL, the JWKS fetch, all with the request id', async () => {
      const key = await clientKey('ES384');
      jwks.keys = [key.jwk];
      const clientId = `traced-${ctx.current.kind}`;
      await registerClient(app, { client_id: clientId, grant_types: ['client_credentials'], response_types: [], scope: 'system/Patient.rs', token_endpoint_auth_method: 'private_key_jwt', jwks_uri: jwks.url });
      const requestId = `trace-${ctx.current.kind}-1`;
      const res = await app.inject({
        method: 'POST',
        url: '/token?client_secret=not-logged',
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-request-id': requestId },
        payload: form({ grant_type: 'client_credentials', scope: 'system/Patient.rs', client_assertion_type: JWT_BEARER, client_assertion: await clientAssertion(key, { clientId, audience: `${TEST_ISSUER}/token` }) }),
      });
      assert.equal(res.statusCode, 200, res.body);
      await app.runtime.audit.flush();
      await tracing.flush();

      const mine = receiver.spans.filter((s) => s.attributes['request.id'] === requestId);
      const root = mine.find((s) => s.name === 'POST /token');
      assert.ok(root, `the request's span among ${mine.map((s) => s.name).join(', ')}`);
      assert.equal(root.parentSpanId ?? '', '', 'the request is the root');
      assert.equal(root.kind, 2, 'SERVER');
      assert.deepEqual([root.attributes['http.route'], root.attributes['url.path'], root.attributes['http.response.status_code']], ['/token', '/token', 200]);
      assert.ok(mine.every((s) => s.traceId === root.traceId), 'one trace');
      const names = new Set(mine.map((s) => s.name));
      for (const step of ['recordRefusal', 'closeAfterUnreadBody', 'databaseFaultResponses', 'cachingHeaders', 'auditMiddleware', 'withErrorDetails', 'bearerIntrospection', 'inactiveForForeignTokens', 'offlineAccessPrompt', 'tokenResponseMiddleware', 'registrationResponse']) {
        assert.ok(names.has(`oidc ${step}`), `a span for ${step}`);
      }
      const spanById = new Map(mine.map((s) => [s.spanId, s]));
      const ancestors = (s: ReceivedSpan): string[] => (s.parentSpanId && spanById.has(s.parentSpanId) ? [spanById.get(s.parentSpanId)!.name, ...ancestors(spanById.get(s.parentSpanId)!)] : []);
      assert.deepEqual(ancestors(mine.find((s) => s.name === 'oidc cachingHeaders')!), ['oidc writeDeferredWrites', 'oidc databaseFaultResponses', 'oidc closeAfterUnreadBody', 'oidc recordRefusal', 'POST /token'], 'the steps nest as the onion does');
      assert.equal(mine.find((s) => s.name === 'oidc recordRefusal')!.attributes['oidc.route'], 'token');
      assert.ok(names.has('INSERT audit_events'), `SQL spans: ${[...names].join(', ')}`);
      assert.ok(mine.some((s) => s.name.startsWith('SELECT ') && s.kind === 3), 'SQL spans are CLIENT spans');
      const fetch = mine.find((s) => s.name === 'GET' && s.attributes['url.full'] === jwks.url);
      assert.ok(fetch, 'the JWKS fetch');
      assert.deepEqual([fetch.kind, fetch.attributes['http.response.status_code']], [3, 200]);
      assert.ok(!JSON.stringify(mine).includes('not-logged'), 'no query string in a span');
      assert.deepEqual([...receiver.services], ['smart-auth-server']);
    });
  });
});
