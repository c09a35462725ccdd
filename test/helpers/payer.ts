import assert from 'node:assert/strict';

import type { FastifyInstance } from 'fastify';

import { basicAuth, form } from './clients.js';

/** The NPI system: Da Vinci ATR Groups' and payer clients' organization identifiers. */
export const NPI = 'http://hl7.org/fhir/sid/us-npi';

/** A sensitivity label (HL7 v3 ActCode PSY, psychiatry) whose records a member may withhold from other payers. */
export const SENSITIVE = { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'PSY' };

/** A `client_credentials` access token of a backend client that authenticates with its secret. */
export async function backendToken(app: FastifyInstance, clientId: string, secret: string, scope: string): Promise<string> {
  const res = await app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(clientId, secret) }, payload: form({ grant_type: 'client_credentials', scope }) });
  assert.equal(res.statusCode, 200, res.body);
  return res.json<{ access_token: string }>().access_token;
}
