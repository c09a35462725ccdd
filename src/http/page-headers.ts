import type { FastifyReply } from 'fastify';

import type { Config } from '../config/config.js';
import { CONTENT_SECURITY_POLICY } from './security-headers.js';

/**
 * Headers for pages a person uses to sign in or decide: never cached, and framable only by the EHR origins
 * configured in FRAME_ANCESTORS (an EHR that embeds SMART apps shows them in its own window).
 */
export function pageHeaders(reply: FastifyReply, config: Config): void {
  void reply.header('cache-control', 'no-store');
  if (config.frameAncestors.length) {
    reply.raw.removeHeader('x-frame-options');
    void reply.header('content-security-policy', CONTENT_SECURITY_POLICY.replace("frame-ancestors 'none'", `frame-ancestors 'self' ${config.frameAncestors.join(' ')}`));
  }
}
