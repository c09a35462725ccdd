import type { Readable } from 'node:stream';

import { errors, Pool } from 'undici';

import type { FhirUpstream } from '../config/config.js';

/**
 * The connection to one upstream FHIR server: a pool of kept-alive connections (undici), a deadline on the
 * answer's headers and on each part of its body, and a cap on what is read into memory. Failures become an
 * {@link UpstreamFailure} the gateway answers with 502 or 504; nothing waits forever.
 */

/** Answers larger than this are not read (502): the gateway parses every answer it checks. */
export const MAX_UPSTREAM_ANSWER_BYTES = 64 * 1024 * 1024;

export interface UpstreamRequest {
  readonly method: string;
  /** Below the upstream's base, starting with `/`, query included. */
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: string | undefined;
}

export interface UpstreamAnswer {
  readonly status: number;
  /** Lower-case names; a repeated header joined with `, `. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
}

export interface UpstreamStream {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Readable;
}

export class UpstreamFailure extends Error {
  constructor(
    readonly kind: 'unreachable' | 'timeout' | 'too-large',
    message: string,
  ) {
    super(message);
    this.name = 'UpstreamFailure';
  }

  get status(): 502 | 504 {
    return this.kind === 'timeout' ? 504 : 502;
  }
}

export class UpstreamClient {
  readonly #pool: Pool;
  readonly #basePath: string;
  readonly #headers: Readonly<Record<string, string>>;
  readonly #timeoutMs: number;
  readonly url: string;

  constructor(upstream: FhirUpstream) {
    const url = new URL(upstream.url);
    this.url = upstream.url;
    this.#basePath = url.pathname.replace(/\/$/, '');
    this.#headers = upstream.headers;
    this.#timeoutMs = upstream.timeoutSeconds * 1000;
    this.#pool = new Pool(url.origin, {
      connections: upstream.connections,
      headersTimeout: this.#timeoutMs,
      bodyTimeout: this.#timeoutMs,
      connectTimeout: Math.min(this.#timeoutMs, 10_000),
      ...(upstream.socketPath ? { socketPath: upstream.socketPath } : {}),
      keepAliveTimeout: 30_000,
      pipelining: 1,
    });
  }

  /** Sends the request and reads the whole answer (at most {@link MAX_UPSTREAM_ANSWER_BYTES}). */
  async send(request: UpstreamRequest): Promise<UpstreamAnswer> {
    const { status, headers, body } = await this.stream(request);
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > MAX_UPSTREAM_ANSWER_BYTES) {
          body.destroy();
          throw new UpstreamFailure('too-large', `the FHIR server's answer is larger than ${MAX_UPSTREAM_ANSWER_BYTES} bytes`);
        }
        chunks.push(chunk);
      }
    } catch (error) {
      throw failureOf(error);
    }
    return { status, headers, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks) };
  }

  /** Sends the request and hands back the answer's body as it arrives (Binary content, passed on as is). */
  async stream(request: UpstreamRequest): Promise<UpstreamStream> {
    try {
      const answer = await this.#pool.request({
        method: request.method,
        path: `${this.#basePath}${request.path}`,
        headers: { ...request.headers, ...this.#headers },
        body: request.body,
      });
      return { status: answer.statusCode, headers: flatten(answer.headers), body: answer.body };
    } catch (error) {
      throw failureOf(error);
    }
  }

  async close(): Promise<void> {
    await this.#pool.close();
  }
}

function flatten(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined) out[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  return out;
}

function failureOf(error: unknown): UpstreamFailure {
  if (error instanceof UpstreamFailure) return error;
  if (error instanceof errors.HeadersTimeoutError || error instanceof errors.BodyTimeoutError || error instanceof errors.ConnectTimeoutError) {
    return new UpstreamFailure('timeout', 'the FHIR server did not answer in time');
  }
  return new UpstreamFailure('unreachable', 'the FHIR server could not be reached');
}
