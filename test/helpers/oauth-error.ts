import assert from 'node:assert/strict';

import type { LightMyRequestResponse } from 'fastify';

/**
 * The response is an error in the OAuth shape (RFC 6749 §5.2): the status, the `error` code, and the
 * `error_description`, exactly when given as a string, or matching when given as a RegExp.
 */
export function expectOAuthError(res: LightMyRequestResponse, status: number, error: string, description: string | RegExp): void {
  assert.equal(res.statusCode, status, res.body);
  const body = res.json<Record<string, unknown>>();
  assert.equal(body.error, error);
  if (typeof description === 'string') assert.equal(body.error_description, description);
  else assert.match(String(body.error_description), description);
}
