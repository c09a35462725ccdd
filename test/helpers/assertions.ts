import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';

export interface ClientKey {
  readonly alg: 'RS384' | 'ES384' | 'RS256' | 'ES256';
  readonly kid: string;
  readonly privateKey: CryptoKey;
  /** The public JWK as a client registers it. */
  readonly jwk: JWK;
}

export async function clientKey(alg: ClientKey['alg'], kid = `${alg.toLowerCase()}-${randomUUID().slice(0, 8)}`): Promise<ClientKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  return { alg, kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

export interface AssertionOptions {
  readonly clientId: string;
  readonly audience: string | string[];
  readonly header?: Record<string, unknown>;
  readonly claims?: Record<string, unknown>;
  /** Seconds from now; default 60. */
  readonly expiresIn?: number;
  readonly omitKid?: boolean;
}

/** A SMART Backend Services client assertion, defects injectable through header and claims. */
export async function clientAssertion(key: ClientKey, options: AssertionOptions): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: key.alg, typ: 'JWT', ...(options.omitKid ? {} : { kid: key.kid }), ...options.header };
  return new SignJWT({ iss: options.clientId, sub: options.clientId, aud: options.audience, jti: randomUUID(), exp: now + (options.expiresIn ?? 60), ...options.claims })
    .setProtectedHeader(header)
    .sign(key.privateKey);
}

export const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

export interface JwksServerBehaviour {
  status?: number;
  headers?: Record<string, string>;
  body?: string;
  delayMs?: number;
}

/** A client's JWKS URL on loopback, whose answers a test sets; counts requests. */
export class JwksServer {
  readonly #server: Server;
  behaviour: JwksServerBehaviour = {};
  keys: JWK[] = [];
  requests = 0;

  private constructor(server: Server) {
    this.#server = server;
  }

  static async start(): Promise<JwksServer> {
    const holder: { self?: JwksServer } = {};
    const server = createServer((_req, res) => {
      const self = holder.self;
      if (!self) return;
      self.requests++;
      const { status = 200, headers = { 'content-type': 'application/json' }, body, delayMs = 0 } = self.behaviour;
      const respond = () => {
        res.writeHead(status, headers);
        res.end(body ?? JSON.stringify({ keys: self.keys }));
      };
      if (delayMs) setTimeout(respond, delayMs).unref();
      else respond();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    holder.self = new JwksServer(server);
    return holder.self;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/jwks.json`;
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}
