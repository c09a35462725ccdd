/**
 * The gateway's own answers: a FHIR OperationOutcome (FHIR R4 §OperationOutcome) with the issue type that
 * fits the status, and for 401/403 the `WWW-Authenticate` challenge of RFC 6750 §3.
 */

export const FHIR_JSON = 'application/fhir+json; charset=utf-8';

/** On every answer under a FHIR base, refusals included: browser apps of any origin read them. */
export const CORS_HEADERS: Readonly<Record<string, string>> = {
  'access-control-allow-origin': '*',
  'access-control-expose-headers': 'Location, Content-Location, ETag, Last-Modified, WWW-Authenticate, X-Request-Id',
};

const ISSUE_TYPE: Readonly<Record<number, string>> = {
  400: 'invalid',
  401: 'login',
  403: 'forbidden',
  404: 'not-found',
  405: 'not-supported',
  406: 'not-supported',
  408: 'timeout',
  409: 'conflict',
  410: 'deleted',
  412: 'conflict',
  413: 'too-costly',
  415: 'not-supported',
  422: 'processing',
  429: 'throttled',
  431: 'too-long',
  502: 'transient',
  503: 'transient',
  504: 'timeout',
};

export interface OperationOutcome {
  readonly resourceType: 'OperationOutcome';
  readonly issue: readonly { readonly severity: 'error' | 'fatal' | 'warning' | 'information'; readonly code: string; readonly diagnostics: string }[];
}

export function operationOutcome(status: number, diagnostics: string): OperationOutcome {
  return { resourceType: 'OperationOutcome', issue: [{ severity: status >= 500 ? 'fatal' : 'error', code: ISSUE_TYPE[status] ?? 'exception', diagnostics }] };
}

/** A refusal or failure the gateway answers itself. */
export class GatewayProblem extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** The `WWW-Authenticate` header value, for 401 and 403. */
    readonly challenge?: string | undefined,
    /** Other headers of the answer (Allow, Retry-After). */
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'GatewayProblem';
  }
}

/** RFC 6750 §3: a quoted-string parameter value (no `"` or `\` inside it, and nothing but visible ASCII). */
export function quoted(value: string): string {
  return `"${value.replace(/[^\x20-\x7e]/g, '?').replace(/["\\]/g, "'")}"`;
}

/** 401 without a token: the challenge names the realm only (RFC 6750 §3.1: no error code when none was sent). */
export function noToken(realm: string): GatewayProblem {
  return new GatewayProblem(401, 'this FHIR server needs an access token: send Authorization: Bearer <token>', `Bearer realm=${quoted(realm)}`);
}

/** 401 for a token that is unknown, expired, revoked, malformed or for another FHIR server. */
export function invalidToken(realm: string, description: string): GatewayProblem {
  return new GatewayProblem(401, description, `Bearer realm=${quoted(realm)}, error="invalid_token", error_description=${quoted(description)}`);
}

/** 403 for a token without the scope a request needs; `scope` names one that would do (RFC 6750 §3.1). */
export function insufficientScope(realm: string, description: string, scope: string | undefined): GatewayProblem {
  const scopePart = scope ? `, scope=${quoted(scope)}` : '';
  return new GatewayProblem(403, description, `Bearer realm=${quoted(realm)}, error="insufficient_scope", error_description=${quoted(description)}${scopePart}`);
}
