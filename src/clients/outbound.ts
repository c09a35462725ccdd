import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { BlockList, isIP, type LookupFunction } from 'node:net';

import { inSpan, SpanKind, tracingEnabled } from '../observability/tracing.js';

/**
 * Outbound HTTP for URLs that clients register (JWKS URLs) or name (a Tiered OAuth IdP): an attacker registering a client must not be
 * able to make this server reach its internal network (SSRF). So:
 * - loopback, private, link-local, carrier-grade NAT and other non-public addresses are refused, checked on
 *   the address actually connected to (a DNS answer that changes between check and use does not help);
 * - only https, unless private addresses are allowed (local development and tests);
 * - redirects are not followed; the answer must arrive within a timeout and under a size limit.
 */
export interface OutboundOptions {
  /** OUTBOUND_ALLOW_PRIVATE: allow loopback and private addresses, and plain http. */
  readonly allowPrivate: boolean;
  readonly timeoutMs: number;
  readonly maxBytes: number;
}

export interface OutboundResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

export class OutboundError extends Error {
  override name = 'OutboundError';
}

const NON_PUBLIC = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12], ['192.0.0.0', 24],
  ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24], ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) NON_PUBLIC.addSubnet(net, prefix, 'ipv4');
// Besides the private, link-local, multicast and documentation ranges, the forms that carry an IPv4 address
// inside (and so may reach a private one): IPv4-compatible `::/96` (`::7f00:1`), NAT64 (well-known and
// local-use), 6to4 and Teredo; and the discard-only `100::/64`. An IPv4-mapped address is checked as the IPv4
// address it maps (isPublicAddress): a rule on `::ffff:0:0/96` would match every IPv4 address (BlockList
// checks IPv4 against IPv6 rules in their mapped form).
for (const [net, prefix] of [
  ['::', 96], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['64:ff9b::', 96], ['64:ff9b:1::', 48], ['2001:db8::', 32],
  ['2002::', 16], ['2001::', 32], ['100::', 64],
] as const) {
  NON_PUBLIC.addSubnet(net, prefix, 'ipv6');
}

export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  if (family === 6) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1] ?? hexMapped(address);
    if (mapped) return !NON_PUBLIC.check(mapped, 'ipv4');
    return !NON_PUBLIC.check(address, 'ipv6');
  }
  return !NON_PUBLIC.check(address, 'ipv4');
}

/** The IPv4 address of an IPv4-mapped IPv6 address written in hex (`::ffff:7f00:1` is 127.0.0.1). */
function hexMapped(address: string): string | undefined {
  const groups = /^(?:0{0,4}:){0,5}:?ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(address);
  if (!groups) return undefined;
  const [high, low] = [parseInt(groups[1]!, 16), parseInt(groups[2]!, 16)];
  return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`;
}

/** A DNS lookup that fails for non-public answers: used by the socket itself, so it checks what it connects to. */
function guardedLookup(): LookupFunction {
  return ((hostname: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) => {
    dnsLookup(hostname, { ...options, all: true }, (error, addresses: LookupAddress[]) => {
      if (error) return callback(error);
      const refused = addresses.find((a) => !isPublicAddress(a.address));
      if (refused) return callback(new OutboundError(`${hostname} resolves to ${refused.address}, a loopback or private address`));
      if (options.all) return callback(null, addresses);
      const [first] = addresses;
      return callback(null, first?.address, first?.family);
    });
  }) as LookupFunction;
}

export function outboundGet(url: string, options: OutboundOptions, accept = 'application/json'): Promise<OutboundResponse> {
  return outboundRequest(url, options, { method: 'GET', accept });
}

/** A form POST (a registration or token request to another server), under the same rules as {@link outboundGet}. */
export function outboundPost(url: string, options: OutboundOptions, body: { readonly type: string; readonly text: string }, accept = 'application/json'): Promise<OutboundResponse> {
  return outboundRequest(url, options, { method: 'POST', accept, body });
}

interface OutboundRequest {
  readonly method: 'GET' | 'POST';
  readonly accept: string;
  readonly body?: { readonly type: string; readonly text: string };
}

function outboundRequest(url: string, options: OutboundOptions, request: OutboundRequest): Promise<OutboundResponse> {
  if (!tracingEnabled()) return send(url, options, request);
  return inSpan(request.method, SpanKind.CLIENT, { 'http.request.method': request.method, 'url.full': url }, async (span) => {
    const response = await send(url, options, request);
    span.setAttribute('http.response.status_code', response.status);
    return response;
  });
}

async function send(url: string, options: OutboundOptions, request: OutboundRequest): Promise<OutboundResponse> {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    throw new OutboundError(`${url} is not a URL`);
  }
  if (target.protocol !== 'https:' && !(options.allowPrivate && target.protocol === 'http:')) {
    throw new OutboundError(`${url} must use https`);
  }
  const hostname = target.hostname.replace(/^\[|\]$/g, '');
  if (!options.allowPrivate && isIP(hostname) && !isPublicAddress(hostname)) {
    throw new OutboundError(`${url} points at ${hostname}, a loopback or private address`);
  }

  const open = target.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<OutboundResponse>((resolve, reject) => {
    const req = open(target, {
      method: request.method,
      headers: { accept: request.accept, 'user-agent': 'smart-auth-server', ...(request.body ? { 'content-type': request.body.type, 'content-length': String(Buffer.byteLength(request.body.text)) } : {}) },
      ...(options.allowPrivate ? {} : { lookup: guardedLookup() }),
    });
    const timer = setTimeout(() => req.destroy(new OutboundError(`${url} did not answer within ${options.timeoutMs} ms`)), options.timeoutMs);
    req.on('error', (error) => {
      clearTimeout(timer);
      reject(error instanceof OutboundError ? error : new OutboundError(`${url} could not be fetched: ${error.message}`));
    });
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400) {
        req.destroy(new OutboundError(`${url} answered with a redirect (${status}); redirects are not followed`));
        return;
      }
      const declared = Number(res.headers['content-length']);
      if (declared > options.maxBytes) {
        req.destroy(new OutboundError(`${url} answered with ${declared} bytes, more than the ${options.maxBytes} allowed`));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > options.maxBytes) {
          req.destroy(new OutboundError(`${url} answered with more than the ${options.maxBytes} bytes allowed`));
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status, headers: res.headers, body: Buffer.concat(chunks) });
      });
      res.on('error', (error) => req.destroy(error));
    });
    req.end(request.body?.text);
  });
}
