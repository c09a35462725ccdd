import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';

import type { InjectOptions } from 'fastify';
import { sql } from 'kysely';

import { createLogger, redactUrl } from '../src/http/logger.js';
import { listeningApp, testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE } from './helpers/app.js';
import { basicAuth, createClient, form } from './helpers/clients.js';
import { REDIRECT_URI } from './helpers/flow.js';
import { describeEachDatabase } from './helpers/databases.js';

/** A log destination that keeps each line written to it. */
function logLines(): { lines: string[]; sink: Writable } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  return { lines, sink };
}

describe('redactUrl', () => {
  it('hides the values of secret-bearing parameters and keeps the rest', () => {
    assert.equal(redactUrl('/cb?code=abc&state=xyz'), '/cb?code=[redacted]&state=xyz');
    assert.equal(redactUrl('/auth?client_id=app&launch=L1&code_challenge=c'), '/auth?client_id=app&launch=[redacted]&code_challenge=c');
    assert.equal(redactUrl('/x?%74oken=t0k'), '/x?%74oken=[redacted]', 'encoded names too');
    assert.equal(redactUrl('/x?%E0%A4%A=1'), '/x?%E0%A4%A=[redacted]', 'undecodable names are hidden');
    assert.equal(redactUrl('/x?flag&client_secret=s'), '/x?flag&client_secret=[redacted]');
    assert.equal(redactUrl('/plain'), '/plain');
  });
});

describeEachDatabase('database errors in logs', (ctx) => {
  it('name the failure (SQLSTATE, constraint, table) and never the values the statement carried', async () => {
    const { db } = ctx.current.database;
    const failure = async (run: () => Promise<unknown>): Promise<unknown> => {
      try {
        await run();
      } catch (error) {
        return error;
      }
      throw new Error('the statement was expected to fail');
    };
    await sql`create temporary table log_probe (id text primary key)`.execute(db);
    await sql`insert into log_probe values (${'SECRET-KEY-1'})`.execute(db);
    const duplicate = await failure(() => sql`insert into log_probe values (${'SECRET-KEY-1'})`.execute(db));
    const badNumber = await failure(() => sql`select ${'SECRET-NUMBER-2'}::int`.execute(db));
    const badJson = await failure(() => sql`select ${'{"a": SECRET-JSON-3}'}::jsonb`.execute(db));
    assert.match(JSON.stringify({ ...(duplicate as object) }), /SECRET-KEY-1/, 'the raw error quotes the key (else this test proves nothing)');
    assert.match((badNumber as Error).message, /SECRET-NUMBER-2/);

    const { lines, sink } = logLines();
    const log = createLogger('info', sink);
    log.error({ err: duplicate }, 'write failed');
    log.error({ err: new Error('reading failed', { cause: badNumber }) }, 'read failed');
    log.error({ err: badJson }, 'json failed');
    log.error({ err: new AggregateError([duplicate], 'batch failed') }, 'batch failed');
    assert.equal(lines.length, 4);
    for (const line of lines) assert.doesNotMatch(line, /SECRET/, line);
    const [first, second, third, fourth] = lines.map((l) => JSON.parse(l) as { err: Record<string, unknown> & { aggregateErrors?: Record<string, unknown>[] } });
    assert.equal(first!.err.code, '23505');
    assert.equal(first!.err.constraint, 'log_probe_pkey');
    assert.equal(first!.err.detail, undefined);
    assert.match(String(first!.err.message), /duplicate key value violates unique constraint "log_probe_pkey"/);
    assert.match(String(second!.err.message), /^reading failed: invalid input syntax for type integer: \[redacted\]$/);
    assert.match(String(second!.err.stack), /invalid input syntax for type integer: \[redacted\]/);
    assert.equal(third!.err.code, '22P02');
    assert.equal(third!.err.where, undefined);
    const [inner] = fourth!.err.aggregateErrors ?? [];
    assert.equal(inner?.code, '23505');
    assert.equal(Object.hasOwn(inner as object, 'detail'), false);
    // The error itself is left as it was: only the line leaves its values out.
    assert.match(String((duplicate as { detail?: string }).detail), /SECRET-KEY-1/);
  });
});

describeEachDatabase('request logs', (ctx) => {
  it('carry a request id and never a token, secret, code or credential header', async () => {
    const { lines, sink } = logLines();
    const app = await testApp(ctx.current.database, {}, { logger: createLogger('trace', sink) });
    try {
      await app.inject({ method: 'GET', url: '/jwks?access_token=SECRET-AT-1', headers: { authorization: 'Bearer SECRET-AT-2', cookie: 'smart_session=SECRET-COOKIE', 'x-request-id': 'trace-me' } });
      await app.inject({
        method: 'POST',
        url: '/token',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from('c:SECRET-PW').toString('base64')}` },
        payload: 'grant_type=authorization_code&code=SECRET-CODE&code_verifier=SECRET-VERIFIER&client_secret=SECRET-CS',
      });
    } finally {
      await app.close();
    }
    const all = lines.join('\n');
    assert.ok(lines.length > 0);
    for (const secret of ['SECRET-AT-1', 'SECRET-AT-2', 'SECRET-COOKIE', 'SECRET-CODE', 'SECRET-VERIFIER', 'SECRET-CS', Buffer.from('c:SECRET-PW').toString('base64')]) {
      assert.ok(!all.includes(secret), `${secret} must not be logged`);
    }
    const parsed = lines.map((l) => JSON.parse(l) as { reqId?: string; msg?: string; level?: string; time?: string; req?: { url?: string }; res?: { statusCode?: number } });
    const forRequest = parsed.filter((l) => l.reqId === 'trace-me');
    assert.deepEqual(forRequest.map((l) => l.msg), ['request completed'], 'one line per request');
    assert.equal(forRequest[0]!.req?.url, '/jwks?access_token=[redacted]');
    assert.equal(forRequest[0]!.res?.statusCode, 200);
    assert.equal(forRequest[0]!.level, 'info');
    assert.match(forRequest[0]!.time ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'ISO times');
  });

  it('malformed or abandoned requests are the client\'s error: nothing is logged at error level', { timeout: 30_000 }, async () => {
    const { lines, sink } = logLines();
    const { app, issuer } = await listeningApp(ctx.current.database, {}, { logger: createLogger('info', sink) });
    const port = Number(new URL(issuer).port);
    const raw = (data: string, closeAfterMs?: number) =>
      new Promise<void>((resolve) => {
        const socket = connect(port, '127.0.0.1', () => {
          socket.write(data);
          if (closeAfterMs !== undefined) setTimeout(() => socket.destroy(), closeAfterMs);
        });
        socket.on('error', () => undefined);
        socket.on('data', () => undefined);
        socket.on('close', () => resolve());
        socket.setTimeout(5000, () => socket.destroy());
      });
    try {
      await raw('GARBAGE \u0001 / NOT-HTTP\r\n\r\n');
      await raw('GET /auth?client_id=%E0%A4%A HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      await raw('GET /%E0%A4%A HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      // A client that goes away halfway through its body, on oidc-provider's route and on ours.
      await raw('POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=', 200);
      await raw('POST /admin/api/clients HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"client', 200);
      await new Promise((resolve) => setTimeout(resolve, 200));
    } finally {
      await app.close();
    }
    const logged = lines.map((l) => JSON.parse(l) as { level: string; msg: string });
    assert.ok(logged.some((l) => l.msg === 'request completed'), 'the requests were logged');
    assert.deepEqual(logged.filter((l) => l.level === 'error' || l.level === 'fatal'), []);
  });

  it('a request answered before routing leaves a line and a count: a URL Fastify cannot route, a request Node refuses', { timeout: 30_000 }, async () => {
    const { lines, sink } = logLines();
    const metricsToken = 'metrics-token-0123456789abcdefghijklmn';
    const { app, issuer } = await listeningApp(ctx.current.database, { METRICS_TOKEN: metricsToken }, { logger: createLogger('info', sink) });
    const port = Number(new URL(issuer).port);
    const raw = (data: string) =>
      new Promise<string>((resolve) => {
        let answer = '';
        const socket = connect(port, '127.0.0.1', () => socket.write(data));
        socket.on('error', () => undefined);
        socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
        socket.on('close', () => resolve(answer.split('\r\n')[0] ?? ''));
        socket.setTimeout(5000, () => socket.destroy());
      });
    let metrics: string;
    try {
      assert.equal(await raw('GARBAGE \u0001 / NOT-HTTP\r\n\r\n'), 'HTTP/1.1 400 Bad Request');
      assert.equal(await raw('GET /interaction/%E0%A4%A?code=SECRET-CODE HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), 'HTTP/1.1 400 Bad Request');
      assert.equal(await raw(`GET /${'p'.repeat(300)} HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`), 'HTTP/1.1 431 Request Header Fields Too Large');
      metrics = (await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `Bearer ${metricsToken}` } })).body;
    } finally {
      await app.close();
    }
    assert.doesNotMatch(lines.join('\n'), /SECRET-CODE/);
    type Line = { level: string; msg: string; reqId?: string; req?: { method?: string; url?: string }; res?: { statusCode?: number }; error?: string; reason?: string };
    const answered = lines.map((l) => JSON.parse(l) as Line).filter((l) => l.msg === 'request completed' && l.req?.url !== '/metrics');
    assert.deepEqual(
      answered.map(({ level, req, res, error, reason }) => ({ level, method: req?.method, url: req?.url, status: res?.statusCode, error, reason })),
      [
        { level: 'info', method: undefined, url: '', status: 400, error: 'invalid_request', reason: 'the request is not valid HTTP/1.1' },
        { level: 'info', method: 'GET', url: '/interaction/%E0%A4%A?code=[redacted]', status: 400, error: 'invalid_request', reason: 'the path has an invalid percent-encoding' },
        { level: 'info', method: 'GET', url: `/${'p'.repeat(199)}…`, status: 431, error: 'invalid_request', reason: 'the URL and headers of the request are larger than this server accepts' },
      ],
    );
    assert.ok(answered[1]!.reqId, 'a request Fastify read has its request id');
    for (const series of ['method="OTHER",status="400"', 'method="GET",status="400"', 'method="GET",status="431"']) {
      assert.match(metrics, new RegExp(`^smart_auth_http_request_duration_seconds_count\\{route="\\(unrouted\\)",${series.replace(/[()]/g, '\\$&')}\\} 1$`, 'm'), series);
    }
  });

  it('health probes and successful token requests at debug; refusals a client developer must fix at info, with the reason', async () => {
    const { lines, sink } = logLines();
    const app = await testApp(ctx.current.database, { ADMIN_TOKEN: TEST_ADMIN_TOKEN }, { logger: createLogger('info', sink) });
    // oidc-provider prints its notices with console.info (lib/helpers/attention.js).
    const notices: unknown[] = [];
    const info = console.info; // eslint-disable-line no-console
    console.info = (...args: unknown[]) => notices.push(args); // eslint-disable-line no-console
    try {
      const { client_secret: secret } = await createClient(app, { client_id: 'log-backend', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'system/Patient.rs' });
      await createClient(app, { client_id: 'log-app', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'] });
      const send = (id: string, options: InjectOptions) => app.inject({ ...options, headers: { ...options.headers, 'x-request-id': id } });
      const token = (id: string, auth: string) => send(id, { method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: auth }, payload: form({ grant_type: 'client_credentials', scope: 'system/Patient.rs' }) });
      assert.equal((await send('probe', { method: 'GET', url: '/readyz' })).statusCode, 200);
      assert.equal((await token('good-token', basicAuth('log-backend', secret!))).statusCode, 200);
      assert.equal((await token('bad-secret', basicAuth('log-backend', 'wrong'))).statusCode, 401);
      const auth = (id: string, params: Record<string, string>) => send(id, { method: 'GET', url: `/auth?${form({ response_type: 'code', redirect_uri: REDIRECT_URI, code_challenge: 'x'.repeat(43), code_challenge_method: 'S256', aud: TEST_FHIR_BASE, scope: 'launch/patient', ...params })}` });
      assert.equal((await auth('unknown-client', { client_id: 'nobody' })).statusCode, 400);
      assert.equal((await auth('wrong-redirect', { client_id: 'log-app', redirect_uri: 'https://elsewhere.example/cb' })).statusCode, 400);
      const badScope = await auth('bad-scope', { client_id: 'log-app', scope: 'patient/Observation.dus' });
      assert.equal(badScope.statusCode, 303, 'invalid_scope goes back to the app by redirect');
      assert.equal((await send('bad-admin', { method: 'POST', url: '/admin/api/users', headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` }, payload: { username: 'u', fhirUser: 'Patient/1', name: 'U', password: 'short' } })).statusCode, 400);
      // A browser app's CORS request: allowed from its redirect URI's origin, and oidc-provider prints no NOTICE.
      const cors = await send('cors', { method: 'OPTIONS', url: '/token', headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' } });
      assert.equal(cors.statusCode, 204);
    } finally {
      console.info = info; // eslint-disable-line no-console
      await app.close();
    }
    assert.deepEqual(notices, [], 'nothing on stdout besides the log');
    const byId = new Map(lines.map((l) => JSON.parse(l) as { reqId?: string; level: string; msg: string; error?: string; reason?: string }).filter((l) => l.msg === 'request completed').map((l) => [l.reqId, l]));
    assert.equal(byId.get('probe'), undefined, 'a health probe is debug');
    assert.equal(byId.get('good-token'), undefined, 'a token issued is debug');
    const refused = (id: string) => {
      const line = byId.get(id);
      assert.ok(line, `${id} is logged`);
      return [line.level, line.error, line.reason];
    };
    assert.deepEqual(refused('bad-secret'), ['info', 'invalid_client', 'client authentication failed: invalid secret provided']);
    assert.deepEqual(refused('unknown-client'), ['info', 'invalid_client', 'client is invalid: client not found']);
    assert.deepEqual(refused('wrong-redirect'), ['info', 'invalid_redirect_uri', "redirect_uri did not match any of the client's registered redirect_uris"]);
    assert.deepEqual(refused('bad-scope'), ['info', 'invalid_scope', 'patient/Observation.dus: permissions ".dus" must each appear once and in the order c, r, u, d, s']);
    assert.deepEqual(refused('bad-admin'), ['info', 'invalid_request', 'password: must have at least 10 characters']);
  });
});
