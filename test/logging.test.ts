import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';

import { createLogger, redactUrl } from '../src/http/logger.js';
import { listeningApp, testApp } from './helpers/app.js';
import { describeEachDatabase } from './helpers/databases.js';

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

describeEachDatabase('request logs', (ctx) => {
  it('carry a request id and never a token, secret, code or credential header', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        done();
      },
    });
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
    const incoming = lines.map((l) => JSON.parse(l) as { reqId?: string; msg?: string; level?: string; req?: { url?: string } }).find((l) => l.reqId === 'trace-me' && l.msg === 'incoming request');
    assert.ok(incoming, 'the request was logged with its id');
    assert.equal(incoming.req?.url, '/jwks?access_token=[redacted]');
    assert.equal(incoming.level, 'info');
  });

  it('malformed or abandoned requests are the client\'s error: nothing is logged at error level', { timeout: 30_000 }, async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        done();
      },
    });
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
});
