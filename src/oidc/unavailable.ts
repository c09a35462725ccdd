import Provider, { errors, type Adapter, type AdapterPayload, type KoaContextWithOIDC } from 'oidc-provider';
import type { Logger } from 'pino';

import { RETRY_AFTER_SECONDS, unavailableReason } from '../db/faults.js';
import { oidcOf, stateOf, type ErrorPage } from './context.js';

/** RFC 6749 §4.1.2.1 (authorization) and §5.2 as used for every OAuth endpoint: try again later. */
export const TEMPORARILY_UNAVAILABLE = { error: 'temporarily_unavailable', error_description: 'the service is temporarily unavailable; try again shortly' } as const;

/**
 * The database is unavailable: an OAuth error oidc-provider answers as it answers its own (JSON, an error
 * page, or a redirect to the client's registered redirect_uri with `state`), with 503 instead of the
 * `server_error` 500 it would make of the database's error.
 */
export class DatabaseUnavailable extends errors.TemporarilyUnavailable {
  constructor(reason: string, cause: unknown) {
    super(TEMPORARILY_UNAVAILABLE.error_description, { cause, detail: reason });
    this.status = 503;
    this.statusCode = 503;
  }
}

/** The error to throw into oidc-provider: a database fault becomes {@link DatabaseUnavailable}. */
function asProtocolError(error: unknown): unknown {
  if (error instanceof errors.OIDCProviderError) return error;
  const reason = unavailableReason(error);
  if (!reason) return error;
  const ctx = Provider.ctx;
  if (ctx) stateOf(ctx).databaseFault = reason;
  return new DatabaseUnavailable(reason, error);
}

async function guarded<R>(call: () => Promise<R>): Promise<R> {
  try {
    return await call();
  } catch (error) {
    throw asProtocolError(error);
  }
}

/** Wraps a callback oidc-provider awaits (findAccount, extraTokenClaims, an extraParams validator …). */
export function mapDatabaseFaults<A extends unknown[], R>(fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return (...args) => guarded(() => fn(...args));
}

/** An adapter whose database faults reach oidc-provider as {@link DatabaseUnavailable}. */
export class FaultMappingAdapter implements Adapter {
  readonly #inner: Adapter;

  constructor(inner: Adapter) {
    this.#inner = inner;
  }

  upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
    return guarded(() => this.#inner.upsert(id, payload, expiresIn));
  }

  find(id: string): ReturnType<Adapter['find']> {
    return guarded(() => this.#inner.find(id));
  }

  findByUserCode(userCode: string): ReturnType<Adapter['findByUserCode']> {
    return guarded(() => this.#inner.findByUserCode(userCode));
  }

  findByUid(uid: string): ReturnType<Adapter['findByUid']> {
    return guarded(() => this.#inner.findByUid(uid));
  }

  consume(id: string): Promise<void> {
    return guarded(() => this.#inner.consume(id));
  }

  destroy(id: string): Promise<void> {
    return guarded(() => this.#inner.destroy(id));
  }

  revokeByGrantId(grantId: string): Promise<void> {
    return guarded(() => this.#inner.revokeByGrantId(grantId));
  }
}

/**
 * Outermost Koa middleware. Our middlewares around oidc-provider's routes (audit, token response) and its
 * session save run outside its error handlers: a database fault there is answered here, in the same forms.
 * Every 503 carries Retry-After, and every request the database failed is logged once, with the reason.
 */
export function databaseFaultResponses(log: Logger, renderErrorPage: (page: ErrorPage) => Promise<string>) {
  return async (ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> => {
    const state = stateOf(ctx);
    try {
      await next();
    } catch (error) {
      const reason = error instanceof DatabaseUnavailable ? (error.error_detail ?? 'unavailable') : unavailableReason(error);
      if (!reason || ctx.headerSent) throw error;
      state.databaseFault = reason;
      ctx.status = 503;
      // A redirect made before the fault (a code for the app) does not leave: what it names was not written.
      ctx.remove('location');
      ctx.set('cache-control', 'no-store');
      if (ctx.accepts('json', 'html') === 'html') {
        ctx.type = 'html';
        ctx.body = await renderErrorPage({ status: 503, error: TEMPORARILY_UNAVAILABLE.error, description: TEMPORARILY_UNAVAILABLE.error_description });
      } else {
        ctx.body = { ...TEMPORARILY_UNAVAILABLE };
      }
    }
    if (ctx.status === 503) ctx.set('retry-after', String(RETRY_AFTER_SECONDS));
    if (state.databaseFault) log.warn({ route: oidcOf(ctx)?.route, status: ctx.status, reason: state.databaseFault }, 'database unavailable');
  };
}
