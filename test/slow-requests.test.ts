import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { listeningApp, TEST_FHIR_BASE } from './helpers/app.js';
import { describeEachDatabase } from './helpers/databases.js';

/**
 * A raw connection to the server: what it sends back, and whether it closed. Writes after the server
 * closed fail with EPIPE or ECONNRESET, which is the point of some tests and not an error here.
 */
const open = new Set<Socket>();

class RawConnection {
  readonly socket: Socket;
  #received = '';
  readonly closed: Promise<void>;

  constructor(port: number) {
    this.socket = connect(port, '127.0.0.1');
    this.socket.setEncoding('latin1');
    this.socket.on('data', (chunk: string) => (this.#received += chunk));
    this.socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => this.socket.once('close', () => resolve()));
    open.add(this.socket);
  }

  get received(): string {
    return this.#received;
  }

  /** The responses received so far: status, lower-cased headers and body of each. */
  responses(): { status: number; headers: Record<string, string>; body: string }[] {
    const out = [];
    let rest = this.#received;
    while (rest.startsWith('HTTP/1.1 ')) {
      const end = rest.indexOf('\r\n\r\n');
      if (end === -1) break;
      const [statusLine, ...lines] = rest.slice(0, end).split('\r\n');
      const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
      const length = Number(headers['content-length'] ?? 0);
      out.push({ status: Number(statusLine!.split(' ')[1]), headers, body: rest.slice(end + 4, end + 4 + length) });
      rest = rest.slice(end + 4 + length);
    }
    return out;
  }

  write(data: string | Buffer): void {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  /** Sends a chunked body of `size` bytes in chunks of 16 KiB, as fast as the server takes them. */
  async writeChunked(size: number): Promise<void> {
    const chunk = Buffer.alloc(16 * 1024, 'a');
    for (let sent = 0; sent < size && !this.socket.destroyed; sent += chunk.length) {
      if (!this.socket.write(Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]))) {
        await Promise.race([new Promise((resolve) => this.socket.once('drain', resolve)), this.closed]);
      }
    }
    this.write('0\r\n\r\n');
  }
}

describeEachDatabase('slow and broken requests', (ctx) => {
  let app: FastifyInstance;
  let port: number;
  let host: string;
  before(async () => {
    // A fronted FHIR base whose upstream is never reached: what is refused here never gets that far.
    const listening = await listeningApp(ctx.current.database, { HEADERS_TIMEOUT_SECONDS: '1', REQUEST_TIMEOUT_SECONDS: '2', ADMIN_TOKEN: 'a'.repeat(40), FHIR_BASE_URLS: TEST_FHIR_BASE, FHIR_UPSTREAMS: `${TEST_FHIR_BASE}=http://127.0.0.1:9/r4` });
    app = listening.app;
    const url = new URL(listening.issuer);
    port = Number(url.port);
    host = url.host;
  });
  after(async () => {
    // What a failed test left open would keep the server from closing.
    for (const socket of open) socket.destroy();
    await app.close();
  });

  const requestTimedOut = (connection: RawConnection) => {
    const [response, ...more] = connection.responses();
    assert.equal(more.length, 0);
    assert.equal(response?.status, 408, connection.received);
    assert.equal(response.headers.connection, 'close');
    assert.deepEqual(JSON.parse(response.body), { error: 'invalid_request', error_description: 'the request was not received in time: its headers must arrive within 1 s, all of it within 2 s' });
  };

  it('a body that never arrives in full: 408 in the OAuth error shape, and the connection closes', { timeout: 15_000 }, async () => {
    const connection = new RawConnection(port);
    connection.write(`POST /token HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_`);
    await connection.closed;
    requestTimedOut(connection);
  });

  it('headers that never end: the connection closes', { timeout: 15_000 }, async () => {
    const connection = new RawConnection(port);
    connection.write(`POST /token HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/x-www-form-urlencoded\r\n`);
    await connection.closed;
    requestTimedOut(connection);
  });

  it('a body oidc-provider refuses (1 MB chunked to /token): 413 naming the limit, Connection: close, and the connection closes rather than hang', { timeout: 15_000 }, async () => {
    const connection = new RawConnection(port);
    connection.write(`POST /token HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n`);
    await connection.writeChunked(1024 * 1024);
    connection.write(`GET /healthz HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    await connection.closed;
    const [response, ...more] = connection.responses();
    assert.equal(more.length, 0, 'nothing is read from the connection after the refused body');
    assert.equal(response?.status, 413, connection.received);
    assert.equal(response.headers.connection, 'close');
    assert.deepEqual(JSON.parse(response.body), { error: 'invalid_request', error_description: 'the request body is larger than 56 KiB, the most this endpoint reads' });
  });

  it('a body of a type oidc-provider does not read: answered, Connection: close', { timeout: 15_000 }, async () => {
    const connection = new RawConnection(port);
    connection.write(`POST /token HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`);
    await connection.writeChunked(256 * 1024);
    await connection.closed;
    const [response] = connection.responses();
    assert.equal(response?.status, 400, connection.received);
    assert.equal(response.headers.connection, 'close');
    assert.deepEqual(JSON.parse(response.body), { error: 'invalid_request', error_description: 'only application/x-www-form-urlencoded content-type bodies are supported on POST /token' });
  });

  it('an authorization request by POST over 56 KiB: 400, Connection: close', { timeout: 15_000 }, async () => {
    const connection = new RawConnection(port);
    connection.write(`POST /auth HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n`);
    await connection.writeChunked(256 * 1024);
    await connection.closed;
    const [response] = connection.responses();
    assert.equal(response?.status, 400, connection.received);
    assert.equal(response.headers.connection, 'close');
    assert.deepEqual(JSON.parse(response.body), { error: 'invalid_request', error_description: 'an authorization request by POST must be an application/x-www-form-urlencoded form of at most 56 KiB' });
  });

  it('an introspection request declaring more than 56 KiB: 413 before its body is read', { timeout: 15_000 }, async () => {
    const connection = new RawConnection(port);
    connection.write(`POST /introspect HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${200 * 1024}\r\n\r\n`);
    connection.write(Buffer.alloc(16 * 1024, 'a'));
    await connection.closed;
    const [response] = connection.responses();
    assert.equal(response?.status, 413, connection.received);
    assert.equal(response.headers.connection, 'close');
    assert.deepEqual(JSON.parse(response.body), { error: 'invalid_request', error_description: 'the request body is larger than 56 KiB, the most this endpoint reads' });
  });

  it('a JSON body over the limit of our own routes: 413, Connection: close', { timeout: 15_000 }, async () => {
    const connection = new RawConnection(port);
    connection.write(`POST /admin/api/clients HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${'a'.repeat(40)}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`);
    await connection.writeChunked(2 * 1024 * 1024);
    await connection.closed;
    const [response] = connection.responses();
    assert.equal(response?.status, 413, connection.received);
    assert.equal(response.headers.connection, 'close');
    assert.deepEqual(JSON.parse(response.body), { error: 'request_too_large', error_description: 'Request body is too large' });
  });

  it('a request that is not HTTP: 400 in the OAuth error shape, and the connection closes', { timeout: 15_000 }, async () => {
    const connection = new RawConnection(port);
    connection.write('HELLO /token\r\n\r\n');
    await connection.closed;
    const [response] = connection.responses();
    assert.equal(response?.status, 400, connection.received);
    assert.equal(response.headers.connection, 'close');
    assert.deepEqual(JSON.parse(response.body), { error: 'invalid_request', error_description: 'the request is not valid HTTP/1.1' });
  });

  it('a URL over Node\'s limit for the request line and headers: 431 as any other error is answered (the OAuth error, a page for a person, an OperationOutcome under the FHIR base), and the connection closes', { timeout: 15_000 }, async () => {
    const ask = async (path: string, accept?: string) => {
      const connection = new RawConnection(port);
      connection.write(`GET ${path}?q=${'a'.repeat(20_000)} HTTP/1.1\r\nHost: ${host}\r\n${accept ? `Accept: ${accept}\r\n` : ''}\r\n`);
      await connection.closed;
      const [response, ...more] = connection.responses();
      assert.equal(more.length, 0);
      assert.equal(response?.status, 431, connection.received.slice(0, 500));
      assert.equal(response.headers.connection, 'close');
      assert.equal(response.headers['cache-control'], 'no-store');
      assert.equal(response.headers['x-content-type-options'], 'nosniff');
      return response;
    };
    const description = 'the URL and headers of the request are larger than this server accepts';

    const json = await ask('/auth');
    assert.equal(json.headers['content-type'], 'application/json; charset=utf-8');
    assert.deepEqual(JSON.parse(json.body), { error: 'invalid_request', error_description: description });

    const page = await ask('/auth', 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8');
    assert.equal(page.headers['content-type'], 'text/html; charset=utf-8');
    assert.match(page.headers['content-security-policy']!, /^default-src 'none'; /);
    assert.match(page.body, /<h1 id="error-title">This address is too long<\/h1>/);
    assert.match(page.body, new RegExp(`<dd>${description}</dd>`));
    assert.ok(!page.body.includes('aaaaaaaa'), 'the query is not repeated');

    const fhir = await ask('/fhir/Patient', 'application/fhir+json');
    assert.equal(fhir.headers['content-type'], 'application/fhir+json; charset=utf-8');
    assert.equal(fhir.headers['access-control-allow-origin'], '*');
    assert.deepEqual(JSON.parse(fhir.body), { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'too-long', diagnostics: description }] });
  });

  it('a keep-alive connection serves the next request after a complete one', { timeout: 15_000 }, async () => {
    const connection = new RawConnection(port);
    connection.write(`GET /healthz HTTP/1.1\r\nHost: ${host}\r\n\r\nGET /healthz HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    await connection.closed;
    assert.deepEqual(connection.responses().map((r) => r.status), [200, 200]);
  });
});
