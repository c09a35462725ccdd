import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { listenForMetrics } from '../src/http/metrics.js';
import { createMetrics, MAX_CLIENT_LABELS } from '../src/observability/metrics.js';
import { PACKAGE_ROOT } from '../src/paths.js';
import { freePort, testApp, TEST_ADMIN_TOKEN } from './helpers/app.js';
import { basicAuth, createClient, form } from './helpers/clients.js';
import { describeEachDatabase, PREPARED_STATEMENTS } from './helpers/databases.js';
import { consent, exchange, login, pickPatient, REDIRECT_URI, startAuthorization } from './helpers/flow.js';

const METRICS_TOKEN = 'metrics-token-0123456789abcdefghijklmn';

/** The value of one series of the exposition (labels in any order), or 0 when it is absent. */
function value(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = new Map([...(match[2] ?? '').matchAll(/([a-z_]+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(match[3]);
  }
  return 0;
}

describeEachDatabase('metrics', (ctx, kind) => {
  let app: FastifyInstance;
  let secret: string;
  const scrape = async (): Promise<string> => {
    await app.runtime.audit.flush();
    const res = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
    assert.equal(res.statusCode, 200, res.body);
    assert.match(res.headers['content-type'] as string, /^text\/plain; version=0\.0\.4/);
    return res.body;
  };
  const ccToken = (auth = basicAuth('metrics-backend', secret)) =>
    app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: auth }, payload: form({ grant_type: 'client_credentials', scope: 'system/Patient.rs' }) });

  before(async () => {
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN, METRICS_TOKEN });
    secret = (await createClient(app, { client_id: 'metrics-backend', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'system/Patient.rs' })).client_secret!;
    await createClient(app, { client_id: 'metrics-app', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] });
  });
  after(() => app.close());

  it('/metrics asks for METRICS_TOKEN', async () => {
    const none = await app.inject({ method: 'GET', url: '/metrics' });
    assert.equal(none.statusCode, 401);
    assert.equal(none.headers['www-authenticate'], 'Bearer realm="metrics"');
    const wrong = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: 'Bearer not-the-token' } });
    assert.deepEqual([wrong.statusCode, wrong.headers['www-authenticate'], wrong.json()], [401, 'Bearer realm="metrics", error="invalid_token"', { error: 'invalid_token', error_description: 'send Authorization: Bearer with METRICS_TOKEN' }]);
  });

  it('counters move after a launch and a client_credentials request', async () => {
    const before = await scrape();
    const flow = await startAuthorization(app, { client_id: 'metrics-app', scope: 'openid fhirUser launch/patient patient/Observation.rs' });
    await login(flow, 'clinician', 'wrong-password');
    await login(flow, 'clinician', 'clinician-demo');
    await pickPatient(flow, 'demo-henry-nguyen');
    await consent(flow);
    assert.equal((await exchange(app, flow)).statusCode, 200);
    assert.equal((await ccToken()).statusCode, 200);
    assert.equal((await ccToken(basicAuth('metrics-backend', 'wrong'))).statusCode, 401);
    const moved = async (name: string, labels: Record<string, string>) => value(await scrape(), name, labels) - value(before, name, labels);

    const after = await scrape();
    const delta = (name: string, labels: Record<string, string> = {}) => value(after, name, labels) - value(before, name, labels);
    assert.equal(delta('smart_auth_tokens_issued_total', { grant_type: 'authorization_code', client_id: 'metrics-app' }), 1);
    assert.equal(delta('smart_auth_tokens_issued_total', { grant_type: 'client_credentials', client_id: 'metrics-backend' }), 1);
    assert.equal(delta('smart_auth_token_requests_total', { grant_type: 'client_credentials', outcome: 'success' }), 1);
    assert.equal(delta('smart_auth_token_requests_total', { grant_type: 'client_credentials', outcome: 'invalid_client' }), 1);
    assert.equal(delta('smart_auth_logins_total', { outcome: 'success', reason: 'none' }), 1);
    assert.equal(delta('smart_auth_logins_total', { outcome: 'failure', reason: 'invalid' }), 1);
    assert.equal(delta('smart_auth_consents_total', { outcome: 'granted' }), 1);
    // By route pattern, never the URL: /auth?client_id=… counts under /auth, /interaction/<uid>/login under its pattern.
    assert.equal(delta('smart_auth_http_request_duration_seconds_count', { route: '/token', method: 'POST', status: '200' }), 2);
    assert.equal(delta('smart_auth_http_request_duration_seconds_count', { route: '/token', method: 'POST', status: '401' }), 1);
    assert.equal(delta('smart_auth_http_request_duration_seconds_count', { route: '/auth', method: 'GET', status: '303' }), 1);
    assert.ok(!after.includes(flow.clientId + '&') && !/route="[^"]*\?/.test(after), 'no query string in a route label');
    assert.ok(delta('smart_auth_db_query_duration_seconds_count', { outcome: 'ok' }) > 10, 'database queries timed');
    assert.ok(delta('smart_auth_audit_write_duration_seconds_count', { outcome: 'ok' }) >= 1, 'audit writes timed');
    // A failed and a good sign-in, the consent, two tokens issued, one client authentication failed.
    assert.equal(delta('smart_auth_audit_events_written_total'), 6);
    assert.equal(value(after, 'smart_auth_audit_queue_depth'), 0);
    assert.equal(value(after, 'smart_auth_signing_key_age_seconds', { alg: 'RS256', state: 'active' }) >= 0, true);
    assert.ok(after.includes('smart_auth_signing_key_age_seconds{alg="ES384",state="next"}'));
    assert.ok(value(after, 'smart_auth_nodejs_heap_size_used_bytes') > 0 || value(after, 'nodejs_heap_size_used_bytes') > 0, 'default Node metrics');
    assert.ok(after.includes('nodejs_eventloop_lag_seconds'));
    assert.equal(await moved('smart_auth_tokens_issued_total', { grant_type: 'client_credentials', client_id: 'metrics-backend' }), 1, 'a scrape changes nothing');
    if (kind === 'postgres') {
      assert.ok(after.includes('smart_auth_db_pool_connections{state="open"}'));
      // Every statement the pool sent, counted where it is sent: a client_credentials token and its audit event are one.
      const counts = app.runtime.database.statementCounts!()!;
      const was = { ...counts };
      assert.equal((await ccToken()).statusCode, 200);
      await app.runtime.audit.flush();
      // …and prepared: parsed and planned once per connection, not at each token (unless prepared statements are off).
      assert.deepEqual({ statements: counts.statements - was.statements, commits: counts.commits - was.commits, unprepared: counts.unprepared - was.unprepared }, { statements: 1, commits: 1, unprepared: PREPARED_STATEMENTS ? 0 : 1 });
      const scraped = await scrape();
      assert.ok(value(scraped, 'smart_auth_db_statements_total') >= counts.statements - 1 && value(scraped, 'smart_auth_db_statements_total') <= counts.statements, 'the metric is the count');
      assert.ok(value(scraped, 'smart_auth_db_commits_total') > 0);
      const unprepared = value(scraped, 'smart_auth_db_statements_unprepared_total');
      assert.ok(unprepared > 0 && unprepared <= counts.unprepared, `${unprepared} of the statements unprepared`);
      if (PREPARED_STATEMENTS) assert.ok(unprepared < value(scraped, 'smart_auth_db_statements_total'), 'the fixed statements go prepared');
      else assert.equal(unprepared, value(scraped, 'smart_auth_db_statements_total'), 'every statement unprepared');
    }
  });

  it('on METRICS_PORT: served without a token, and nothing else there', async () => {
    const port = await freePort();
    const server = await listenForMetrics(app.runtime.metrics, '127.0.0.1', port);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      assert.equal(res.status, 200);
      assert.match(await res.text(), /smart_auth_tokens_issued_total\{grant_type="client_credentials",client_id="metrics-backend"\} \d+/);
      assert.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 404);
    } finally {
      server.close();
    }
  });
});

describeEachDatabase('metrics off', (ctx) => {
  it('without METRICS_PORT or METRICS_TOKEN, /metrics does not exist and nothing is counted', async () => {
    const app = await testApp(ctx.current.database);
    try {
      assert.equal((await app.inject({ method: 'GET', url: '/metrics' })).statusCode, 404);
      assert.equal(app.runtime.metrics.enabled, false);
    } finally {
      await app.close();
    }
  });
});

describe('the Grafana dashboard (docs/grafana-dashboard.json)', () => {
  it('plots only metrics the server exposes', async () => {
    const dashboard = JSON.parse(await readFile(join(PACKAGE_ROOT, 'docs/grafana-dashboard.json'), 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[] };
    const exposed = new Set([...(await createMetrics().render()).matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]));
    for (const panel of dashboard.panels) {
      for (const { expr } of panel.targets) {
        for (const [name] of expr.matchAll(/\b(smart_auth|nodejs|process)_[a-z0-9_]+/g)) {
          assert.ok(exposed.has(name.replace(/_(bucket|count|sum)$/, '')), `${panel.title}: ${name} is not exposed`);
        }
      }
    }
  });
});

describe('metric labels', () => {
  it('client ids get label values of their own up to a cap; the rest count as other', async () => {
    const metrics = createMetrics();
    for (let n = 0; n < MAX_CLIENT_LABELS + 10; n++) metrics.securityEvent({ type: 'token.issued', clientId: `client-${n}`, details: { grant_type: 'client_credentials' } });
    metrics.securityEvent({ type: 'token.issued', clientId: 'client-0', details: { grant_type: 'made-up' } });
    const text = await metrics.render();
    const ids = [...text.matchAll(/^smart_auth_tokens_issued_total\{grant_type="client_credentials",client_id="([^"]*)"\}/gm)].map((m) => m[1]);
    assert.equal(ids.length, MAX_CLIENT_LABELS + 1);
    assert.equal(value(text, 'smart_auth_tokens_issued_total', { grant_type: 'client_credentials', client_id: 'other' }), 10);
    assert.equal(value(text, 'smart_auth_tokens_issued_total', { grant_type: 'other', client_id: 'client-0' }), 1, 'unknown grant types are other');
  });
});
