/**
 * Why a request was refused, for its log line: the OAuth error code and description the client was given,
 * whether by our routes (src/http/errors.ts) or by oidc-provider (its error events, src/oidc/pipeline.ts),
 * including errors it hands back by redirect (`invalid_scope` at the authorization endpoint) that leave no
 * 4xx status behind. Keyed by the Node request object, which Fastify and oidc-provider's Koa share.
 */
export interface RequestOutcome {
  readonly error: string;
  readonly description?: string | undefined;
}

const outcomes = new WeakMap<object, RequestOutcome>();

export function recordOutcome(request: object, outcome: RequestOutcome): void {
  outcomes.set(request, outcome);
}

export function outcomeOf(request: object): RequestOutcome | undefined {
  return outcomes.get(request);
}
