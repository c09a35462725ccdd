import { AsyncLocalStorage } from 'node:async_hooks';

import { sql, type Kysely } from 'kysely';
import Provider, { errors, type Adapter, type AdapterPayload, type KoaContextWithOIDC } from 'oidc-provider';

import type { DB } from '../../db/schema.js';
import { Batched } from '../../db/batched.js';
import { decideInteractionsSql, decisionArrays, type PayloadConsume, type PayloadRowWrite } from '../../db/payload-rows.js';
import { Statement, type Executes } from '../../db/statements.js';
import type { SecretBox } from '../../security/secret-box.js';
import { describeInputProblem, inputProblem, isStorableText } from '../../security/text.js';
import { GRANT_CONTEXT_COLUMNS, grantContextOf, type GrantContext, type GrantContextRow } from '../../launch/context.js';
import { userOf, type User } from '../../users/users.js';
import { oidcOf, stateOf } from '../context.js';
import { GroupedWrites, type PayloadWrite } from './grouped-writes.js';

/**
 * Models whose rows carry a grantId and are removed by `revokeByGrantId` when a grant is revoked
 * (oidc-provider lib/helpers/revoke.js).
 */
const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
]);

/**
 * Models whose id is a bearer value: whoever holds it is let in (a token, a code, a session cookie's value,
 * a registration token). Their rows are keyed by a keyed hash of the id (SecretBox.bearerId), and the id is
 * kept out of the stored payload, so that a copy of the database yields no usable value. Grants and
 * interactions are identifiers that grant nothing by themselves and stay as they are.
 */
export const BEARER_MODELS: ReadonlySet<string> = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'ClientCredentials',
  'RegistrationAccessToken',
  'InitialAccessToken',
  'Session',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
  'PushedAuthorizationRequest',
]);

/** What a single-use model is called in the error that refuses its second use (oidc-provider's wording). */
const REUSE_LABELS: Readonly<Record<string, string>> = {
  AuthorizationCode: 'authorization code already consumed',
  RefreshToken: 'refresh token already used',
  DeviceCode: 'device code already consumed',
  BackchannelAuthenticationRequest: 'backchannel authentication request already consumed',
  PreAuthorizedCode: 'pre-authorized code already consumed',
};

/**
 * Tokens a token request issues: saved with the request's audit event, in one statement shared with the other
 * requests in flight (src/oidc/audit-hooks.ts), not one of their own. The request is still answered only once
 * they are committed; a request that fails drops them, as it never hands them out.
 */
const DEFERRED_MODELS: ReadonlySet<string> = new Set(['AccessToken', 'RefreshToken', 'ClientCredentials']);

/** The token rows this request deferred, for its audit event to write; none are left behind. */
export function takeDeferredTokens(ctx: KoaContextWithOIDC): PayloadRowWrite[] {
  const state = stateOf(ctx);
  const rows = state.deferredTokens?.rows ?? [];
  delete state.deferredTokens;
  return rows;
}

/**
 * Writes this request's deferred token rows now: before a step that must find them in the database. What the
 * request used is marked used first, on its own; a value another request used first is refused as a reuse.
 */
export async function writeDeferredTokens(db: Kysely<DB>, ctx: KoaContextWithOIDC): Promise<void> {
  const used = stateOf(ctx).deferredConsumes;
  delete stateOf(ctx).deferredConsumes;
  for (const item of used?.items ?? []) {
    if (!(await used!.consumes.consume(item.model, item.ids))) await refuseReuse(db, ctx, item);
  }
  const deferred = stateOf(ctx).deferredTokens;
  if (!deferred) return;
  delete stateOf(ctx).deferredTokens;
  await Promise.all(deferred.rows.map((row) => deferred.writes.save(row)));
}

/**
 * Codes and refresh tokens whose use waits for the token request's audit event (PayloadAdapter.consume). Only
 * these: the other single-use values (device codes, CIBA requests) are not enabled here.
 */
const DEFERRED_CONSUMES: ReadonlySet<string> = new Set(['AuthorizationCode', 'RefreshToken']);

/** The codes and refresh tokens this request used, for its audit event to mark used; none are left behind. */
export function takeDeferredConsumes(ctx: KoaContextWithOIDC): PayloadConsume[] {
  const state = stateOf(ctx);
  const items = state.deferredConsumes?.items ?? [];
  delete state.deferredConsumes;
  return items;
}

/**
 * A code or refresh token used again, or by two requests at once (RFC 9700 §4.14, §2.2.2): the whole grant is
 * revoked (every token issued under it, and the grant itself, so that a token the winner is issuing right now is
 * dead too), the audit trail names the attack, and the request gets `invalid_grant` in oidc-provider's words.
 */
export async function refuseReuse(db: Kysely<DB>, ctx: KoaContextWithOIDC | undefined, used: PayloadConsume): Promise<never> {
  if (ctx) stateOf(ctx).auditFailure = used.model === 'RefreshToken' ? 'refresh_token.reused' : 'code.reused';
  const row = await db.selectFrom('oidc_payloads').select('grant_id').where('model', '=', used.model).where('id', 'in', used.ids).executeTakeFirst();
  if (row?.grant_id) await revokeGrant(db, row.grant_id);
  throw new errors.InvalidGrant(REUSE_LABELS[used.model] ?? 'grant request is invalid');
}

/**
 * Saves made inside {@link deferSaves}: kept for the caller to write with something else in one statement
 * (the audit event that records them), instead of written on their own.
 */
const deferredSaves = new AsyncLocalStorage<PayloadRowWrite[]>();

/**
 * Runs `save` (a grant's or an interaction's save, say) with the payload rows it saves pushed onto `rows`
 * instead of written. The caller must write them before it answers: `AuditLog.record(event, rows)` writes
 * them with the event, all or nothing.
 */
export function deferSaves<T>(rows: PayloadRowWrite[], save: () => Promise<T>): Promise<T> {
  return deferredSaves.run(rows, save);
}

const SAVE_UNDECIDED = new Statement<{ id: string }>(decideInteractionsSql(1));

/** The rows an interaction's save (its `persist`) writes, kept rather than written: for {@link persistUndecided}, or an audit event's `decisions`. */
export async function interactionRows(interaction: { persist(): Promise<unknown> }): Promise<PayloadRowWrite[]> {
  const rows: PayloadRowWrite[] = [];
  await deferSaves(rows, () => interaction.persist());
  return rows;
}

/**
 * Saves the interaction while it is undecided and unexpired (decideInteractionsSql): a decision that goes without
 * an audit event, or a step's state. False when another request decided it first: nothing was written.
 */
export async function persistUndecided(db: Executes, interaction: { persist(): Promise<unknown> }): Promise<boolean> {
  const rows = await interactionRows(interaction);
  return (await SAVE_UNDECIDED.affected(db, decisionArrays(rows))) === rows.length;
}

/** A session read with the interaction that names it (FIND_INTERACTION), for the lookup by uid that follows. */
interface ReadAhead {
  session?: { readonly uid: string; readonly payload: unknown };
}

const readAhead = new AsyncLocalStorage<ReadAhead>();

/**
 * Runs `load` (oidc-provider's `interactionDetails`) so that the session its interaction names is read in
 * the interaction's own statement: oidc-provider reads the interaction, then its session by uid, one after
 * the other. Outside this scope nothing is kept, so no later lookup can be served a copy read earlier.
 */
export function withSessionReadAhead<T>(load: () => Promise<T>): Promise<T> {
  return readAhead.run({}, load);
}

/**
 * Routes whose writes wait for the session's save, which oidc-provider makes last (lib/shared/session.js),
 * and go with it in one statement: the authorization request (the interaction, then the session) and its
 * resume (the interaction taken, a code, the session under a new id and removed under the old one). Still
 * inside oidc-provider's handling, so that a database fault is answered as it answers one (RFC 6749
 * §4.1.2.1: back to the app with `temporarily_unavailable`). Within the request a lookup sees them as written.
 */
const WRITES_WITH_SESSION: ReadonlySet<string> = new Set(['authorization', 'resume']);

/** The request whose writes wait for its session's save, if this is one (WRITES_WITH_SESSION). */
function deferring(): { readonly ctx: KoaContextWithOIDC; readonly writes: readonly PayloadWrite[] } | undefined {
  const ctx = Provider.ctx;
  const route = ctx && oidcOf(ctx)?.route;
  if (!ctx || !route || !WRITES_WITH_SESSION.has(route)) return undefined;
  return { ctx, writes: stateOf(ctx).deferredWrites?.writes ?? [] };
}

/** Whether oidc-provider saves this request's session at its end: one it found, or a new one it changed. */
function sessionSaveComing(ctx: KoaContextWithOIDC): boolean {
  const session = ctx.oidc.session as { readonly new?: boolean; readonly touched?: boolean; readonly destroyed?: boolean } | undefined;
  return !!session && (!session.new || !!session.touched) && !session.destroyed;
}

/**
 * Writes what this request deferred, now: before a step that must act on the database as it will be (a
 * consumption, a revocation), and at the end of a request whose session was not saved after all.
 */
export async function writeDeferred(ctx: KoaContextWithOIDC): Promise<void> {
  const state = stateOf(ctx);
  const deferred = state.deferredWrites;
  if (!deferred) return;
  delete state.deferredWrites;
  await deferred.to.apply(deferred.writes);
}

/** The last deferred write of this row, if this request deferred one: a save, or a removal (save undefined). */
function deferredWriteOf(model: string, ids: readonly string[]): { readonly save: PayloadRowWrite | undefined } | undefined {
  // Only the requests that deferred a write have any (never the token endpoint or introspection).
  const ctx = Provider.ctx;
  const writes = (ctx && stateOf(ctx).deferredWrites?.writes) ?? [];
  for (let i = writes.length - 1; i >= 0; i--) {
    const write = writes[i]!;
    if ('save' in write) {
      if (write.save.model === model && ids.includes(write.save.id)) return { save: write.save };
    } else if (write.destroy.model === model && write.destroy.ids.some((id) => ids.includes(id))) {
      return { save: undefined };
    }
  }
  return undefined;
}

/** Every model oidc-provider 9 may persist; `Client` is served from the `clients` table instead. */
export const PAYLOAD_MODELS = [
  'Session',
  'Interaction',
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'ClientCredentials',
  'Grant',
  'ReplayDetection',
  'PushedAuthorizationRequest',
  'RegistrationAccessToken',
  'InitialAccessToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
] as const;

/**
 * One JSONB table for every model, keyed by (model, id). Expired rows are invisible to `find` at once and
 * removed later by {@link purgeExpired}. Ids of {@link BEARER_MODELS} are stored as keyed hashes.
 */
export class PayloadAdapter implements Adapter {
  readonly #db: Kysely<DB>;
  readonly #box: SecretBox;
  readonly #model: string;
  readonly #grantable: boolean;
  readonly #hashed: boolean;

  readonly #shared: SharedTokenReads | undefined;
  readonly #writes: GroupedWrites;
  readonly #consumes: GroupedConsumes;

  /**
   * @param shared where lookups of {@link SHARED_READ_MODELS} go, to be shared with others of the same tick.
   * @param writes where saves go, to be written with those of other requests in flight.
   * @param consumes where consumptions go, likewise.
   */
  constructor(db: Kysely<DB>, box: SecretBox, model: string, shared?: SharedTokenReads, writes = new GroupedWrites(db), consumes = new GroupedConsumes(db)) {
    this.#db = db;
    this.#writes = writes;
    this.#consumes = consumes;
    this.#box = box;
    this.#model = model;
    this.#grantable = GRANTABLE.has(model);
    this.#hashed = BEARER_MODELS.has(model);
    this.#shared = SHARED_READ_MODELS.has(model) ? shared : undefined;
  }

  /** The id a row is written under. */
  #storedId(id: string): string {
    return this.#hashed ? this.#box.bearerId(id) : id;
  }

  /** The ids a row may be found under: under a previous SECRET_KEY too. */
  #storedIds(id: string): string[] {
    return this.#hashed ? this.#box.bearerIds(id) : [id];
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
    // Request parameters end up in payloads (an interaction's `state`, say); what Postgres cannot hold is the
    // request's error, not ours. Queries are refused earlier (input-guard.ts); this covers bodies oidc-provider read.
    const unfit = inputProblem(payload, '');
    if (unfit) throw new errors.InvalidRequest(describeInputProblem(unfit));
    const stored = this.#hashed ? withoutJti(payload) : payload;
    const row = {
      payload: JSON.stringify(stored),
      grant_id: this.#grantable ? (payload.grantId ?? null) : null,
      uid: payload.uid ?? null,
      user_code: payload.userCode ?? null,
      expires_at: typeof expiresIn === 'number' ? new Date(Date.now() + expiresIn * 1000) : null,
    };
    const storedId = this.#storedId(id);
    // Saved again after SECRET_KEY changed (a session, say): the copy under the old key goes.
    if (this.#hashed && this.#box.hasPreviousKeys) {
      await this.#db.deleteFrom('oidc_payloads').where('model', '=', this.#model).where('id', 'in', this.#storedIds(id).slice(1)).execute();
    }
    const write = { model: this.#model, id: storedId, ...row };
    const deferred = deferredSaves.getStore();
    if (deferred) {
      deferred.push(write);
      return;
    }
    const withSession = this.#withSession({ save: write });
    if (withSession) {
      await withSession;
      return;
    }
    const ctx = Provider.ctx;
    if (ctx && DEFERRED_MODELS.has(this.#model) && ctx.oidc.route === 'token') {
      const state = stateOf(ctx);
      (state.deferredTokens ??= { rows: [], writes: this.#writes }).rows.push(write);
      return;
    }
    await this.#writes.save(write);
  }

  /**
   * In a request whose writes go with its session's save (WRITES_WITH_SESSION): the session's save, with the
   * writes that waited for it, or the write deferred until then. Undefined: write it now.
   */
  #withSession(write: PayloadWrite): Promise<unknown> | undefined {
    const at = deferring();
    if (!at) return undefined;
    const state = stateOf(at.ctx);
    if (this.#model === 'Session' && 'save' in write) {
      delete state.deferredWrites;
      return this.#writes.apply([...at.writes, write]);
    }
    if (!sessionSaveComing(at.ctx)) return undefined;
    (state.deferredWrites ??= { writes: [], to: this.#writes }).writes.push(write);
    return Promise.resolve();
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    const ids = this.#storedIds(id);
    const written = deferredWriteOf(this.#model, ids);
    if (written) return written.save && withId(this.#hashed ? id : undefined, JSON.parse(written.save.payload) as AdapterPayload);
    let payload: AdapterPayload | undefined;
    if (this.#model === 'Grant') {
      // Brought along with the token this request found under it (SharedTokenReads): no second statement.
      const state = Provider.ctx && stateOf(Provider.ctx);
      const prefetched = state?.prefetchedGrant;
      if (prefetched?.id === id) {
        delete state!.prefetchedGrant;
        return prefetched.payload as AdapterPayload;
      }
    }
    // A value no row can hold (a NUL from a cookie or a URL) finds nothing, rather than failing in Postgres.
    if (!ids.every(isStorableText)) return undefined;
    const asking = this.#model === 'Session' ? authorizingClient() : undefined;
    const resumed = this.#model === 'Session' ? resumedInteraction() : undefined;
    if (this.#model === 'Interaction') {
      payload = await this.#findInteraction(ids);
    } else if (resumed !== undefined) {
      payload = await this.#findSessionAtResume(ids, resumed);
    } else if (asking !== undefined) {
      payload = await this.#findSession(ids, asking);
    } else if (this.#shared) {
      const ctx = Provider.ctx;
      const found = await this.#shared.find(this.#model, ids);
      payload = toPayload(found);
      if (ctx && found?.grant) {
        const state = stateOf(ctx);
        state.prefetchedGrant = { id: found.grant.id, payload: found.grant.payload };
        state.grantContext = { grantId: found.grant.id, context: found.grant.context ?? null };
      }
      if (ctx && found?.user) stateOf(ctx).prefetchedUser = found.user;
    } else {
      payload = await this.#findBy('id', ids);
    }
    if (payload && this.#hashed) payload.jti = id;
    return payload;
  }

  /**
   * An interaction, with what the request reads next read in the same statement: the session it names (for
   * `interactionDetails`, which looks it up by uid next; see {@link withSessionReadAhead}) and the grant its
   * consent chose (for the resume, which loads that grant next).
   */
  async #findInteraction(ids: readonly string[]): Promise<AdapterPayload | undefined> {
    const state = Provider.ctx && stateOf(Provider.ctx);
    const claimed = state?.claimedInteraction;
    if (claimed && ids.includes(claimed.id)) {
      delete state.claimedInteraction;
      return claimed.payload;
    }
    // The resume takes the interaction for good (it removes it next): of two resumes at once, one goes on.
    const claim = Provider.ctx && oidcOf(Provider.ctx)?.route === 'resume';
    const row = await (claim ? CLAIM_INTERACTION : FIND_INTERACTION).first(this.#db, [ids]);
    if (claim && state) (state.takenInteractions ??= []).push(...ids);
    if (!row) return undefined;
    const ahead = readAhead.getStore();
    if (ahead && row.session_uid) ahead.session = { uid: row.session_uid, payload: row.session_payload };
    prefetchGrant(row);
    return toPayload(row);
  }

  /**
   * A session at the authorization endpoint, with the grant it holds for the client asking (the request's
   * `client_id`), which oidc-provider loads next to see what was consented before. A request object or a
   * pushed request naming another client only misses the read-ahead: Grant.find reads what it needs.
   */
  async #findSession(ids: readonly string[], clientId: string): Promise<AdapterPayload | undefined> {
    const row = await FIND_SESSION.first(this.#db, [ids, clientId]);
    if (!row) return undefined;
    prefetchGrant(row);
    return toPayload(row);
  }

  /**
   * The session at the resume, read in one statement with the interaction the resume cookie names, which is
   * taken as CLAIM_INTERACTION takes it (oidc-provider reads the session, then the interaction, one after
   * the other). The interaction is handed to the Interaction lookup that follows; if that lookup names
   * another one, it is read as ever.
   */
  async #findSessionAtResume(ids: readonly string[], interactionId: string): Promise<AdapterPayload | undefined> {
    const row = await SESSION_AND_INTERACTION.first(this.#db, [ids, [interactionId]]);
    const ctx = Provider.ctx;
    if (ctx) {
      const taken = row?.i_payload ? toPayload({ payload: row.i_payload, consumed_at: row.i_consumed_at }) : undefined;
      stateOf(ctx).claimedInteraction = { id: interactionId, payload: taken };
      (stateOf(ctx).takenInteractions ??= []).push(interactionId);
      if (row) prefetchGrant(row);
    }
    return row?.payload ? toPayload(row) : undefined;
  }

  /** A session found by uid comes without its id (only a hash of it is stored): read it, never save it. */
  findByUid(uid: string): Promise<AdapterPayload | undefined> {
    const ctx = Provider.ctx;
    const written = (ctx && stateOf(ctx).deferredWrites?.writes)?.findLast((w) => 'save' in w && w.save.model === this.#model && w.save.uid === uid);
    if (written && 'save' in written) return Promise.resolve(JSON.parse(written.save.payload) as AdapterPayload);
    const ahead = readAhead.getStore();
    const session = ahead?.session;
    if (session?.uid === uid) {
      delete ahead!.session;
      return Promise.resolve(session.payload as AdapterPayload);
    }
    return this.#findBy('uid', [uid]);
  }

  findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    return this.#findBy('user_code', [userCode]);
  }

  /**
   * Marks a code or refresh token used, atomically: of any number of requests presenting it at once, exactly
   * one flips `consumed_at` from null and goes on. Any other is a reuse, treated as oidc-provider treats a
   * sequential one (RFC 9700 §4.14, §2.2.2): the whole grant is revoked (every token issued under it, and the
   * grant itself, so that a token the winner is issuing right now is dead too), and the request gets
   * `invalid_grant` (refuseReuse). At the token endpoint the flip waits for the statement that stores what the
   * request issues (takeDeferredConsumes), so a request that fails before it leaves the value unused; elsewhere
   * it is made here, and is irreversible.
   */
  async consume(id: string): Promise<void> {
    const ids = this.#storedIds(id);
    const ctx = Provider.ctx;
    // At the token endpoint, marked used by the statement that stores what the request issues, with its audit
    // event (takeDeferredConsumes): one statement fewer, and a request that fails after this leaves it unused.
    if (ctx && oidcOf(ctx)?.route === 'token' && DEFERRED_CONSUMES.has(this.#model)) {
      (stateOf(ctx).deferredConsumes ??= { items: [], consumes: this.#consumes }).items.push({ model: this.#model, ids });
      return;
    }
    const at = deferring();
    if (at) await writeDeferred(at.ctx);
    if ((await this.#consumes.consume(this.#model, ids)) || !(this.#model in REUSE_LABELS)) return;
    await refuseReuse(this.#db, ctx, { model: this.#model, ids });
  }

  async destroy(id: string): Promise<void> {
    const destroy = { model: this.#model, ids: this.#storedIds(id) };
    // The resume took its interaction as it read it: nothing is left to remove (a statement fewer after a sign-in).
    const taken = this.#model === 'Interaction' && Provider.ctx ? stateOf(Provider.ctx).takenInteractions : undefined;
    if (taken && destroy.ids.every((stored) => taken.includes(stored))) return;
    await (this.#withSession({ destroy }) ?? this.#writes.destroy(destroy.model, destroy.ids));
  }

  /** One indexed statement: every row of this model issued under the grant. */
  async revokeByGrantId(grantId: string): Promise<void> {
    const at = deferring();
    if (at) await writeDeferred(at.ctx);
    await this.#db.deleteFrom('oidc_payloads').where('grant_id', '=', grantId).where('model', '=', this.#model).execute();
  }

  async #findBy(column: 'id' | 'uid' | 'user_code', values: readonly string[]): Promise<AdapterPayload | undefined> {
    // A value no row can hold (a NUL from a cookie or a URL) finds nothing, rather than failing in Postgres.
    if (!values.every(isStorableText)) return undefined;
    return toPayload(await FIND_BY[column].first(this.#db, [this.#model, values]));
  }
}

/** Live rows only: an expired row is gone for oidc-provider at once, for the purge later. */
const LIVE = (alias: string) => `(${alias}.expires_at is null or ${alias}.expires_at > now())`;

/** A grant read along with another row: its id and payload, when it is live. */
interface WithGrant {
  readonly grant_row: string | null;
  readonly grant_payload: unknown;
}

/** Hands the grant read along with a row to the request's Grant lookup that follows (see `find`). */
function prefetchGrant(row: WithGrant): void {
  const ctx = Provider.ctx;
  if (ctx && row.grant_row) stateOf(ctx).prefetchedGrant = { id: row.grant_row, payload: row.grant_payload };
}

/** An interaction with the session it names and the grant its consent chose, when they are live. */
type InteractionRow = PayloadRow & WithGrant & { readonly session_uid: string | null; readonly session_payload: unknown };

/** The grant `g` the consent of the interaction `i` chose, when it is live. */
const CONSENT_GRANT = ` left join oidc_payloads g on g.model = 'Grant' and g.id = i.payload->'result'->'consent'->>'grantId' and ${LIVE('g')}`;

/**
 * The interactions the parameter names, taken: removed as they are read, into the CTE `i`. What the resume
 * reads it removes, so that it is single use even for requests that arrive together (oidc-provider reads,
 * then removes, in two steps). What the resume saves again (a sign-in by another user) is written at its end.
 */
const takeInteraction = (param: string) => `with i as (delete from oidc_payloads where model = 'Interaction' and id = any(${param}::text[]) returning payload, consumed_at, expires_at) `;

/** The interaction `i` (a table, or the rows a CTE returned) with its session by uid and its consent's grant. */
const interactionWith = (from: string, where: string) =>
  `select i.payload, i.consumed_at, s.uid as session_uid, s.payload as session_payload, g.id as grant_row, g.payload as grant_payload` +
  ` from ${from}` +
  ` left join oidc_payloads s on s.model = 'Session' and s.uid = i.payload->'session'->>'uid' and ${LIVE('s')}` +
  CONSENT_GRANT +
  ` where ${where} and ${LIVE('i')} limit 1`;

/** {@link PayloadAdapter.#findInteraction}. */
const FIND_INTERACTION = new Statement<InteractionRow>(interactionWith('oidc_payloads i', `i.model = 'Interaction' and i.id = any($1::text[])`));

/** {@link FIND_INTERACTION} for the resume, which takes the interaction ({@link takeInteraction}). */
const CLAIM_INTERACTION = new Statement<InteractionRow>(takeInteraction('$1') + interactionWith('i', 'true'));

/**
 * {@link PayloadAdapter.#findSessionAtResume}: the session `$1` and the interaction `$2` taken (as
 * {@link CLAIM_INTERACTION} takes it) with the grant its consent chose, in one row; either may be missing.
 */
const SESSION_AND_INTERACTION = new Statement<PayloadRow & WithGrant & { readonly i_payload: unknown; readonly i_consumed_at: Date | null }>(
  takeInteraction('$2') +
    `select s.payload, s.consumed_at, ti.payload as i_payload, ti.consumed_at as i_consumed_at, ti.grant_row, ti.grant_payload` +
    ` from (select 1) as one` +
    ` left join oidc_payloads s on s.model = 'Session' and s.id = any($1::text[]) and ${LIVE('s')}` +
    ` left join lateral (select i.payload, i.consumed_at, g.id as grant_row, g.payload as grant_payload from i${CONSENT_GRANT} where ${LIVE('i')} limit 1) ti on true`,
);

/** {@link PayloadAdapter.#findSession}: the grant the session holds for the client `$2`. */
const FIND_SESSION = new Statement<PayloadRow & WithGrant>(
  `select s.payload, s.consumed_at, g.id as grant_row, g.payload as grant_payload` +
    ` from oidc_payloads s` +
    ` left join oidc_payloads g on g.model = 'Grant' and g.id = s.payload->'authorizations'->$2::text->>'grantId' and ${LIVE('g')}` +
    ` where s.model = 'Session' and s.id = any($1::text[]) and ${LIVE('s')} limit 1`,
);

const findBy = (column: 'id' | 'uid' | 'user_code') => new Statement<PayloadRow>(`select payload, consumed_at from oidc_payloads t where model = $1 and ${column} = any($2::text[]) and ${LIVE('t')} limit 1`);
const FIND_BY = { id: findBy('id'), uid: findBy('uid'), user_code: findBy('user_code') } as const;

/**
 * Marks rows used, each only if it was not: a row named twice (two requests presenting one code at once) is
 * updated once and returned once (UPDATE … FROM uses one of the rows it joins).
 */
const CONSUME = new Statement<{ model: string; id: string }>(
  `update oidc_payloads p set consumed_at = now() from unnest($1::text[], $2::text[]) as c(model, id)` +
    ` where p.model = c.model and p.id = c.id and p.consumed_at is null returning p.model, p.id`,
);

/**
 * Consumptions of codes and refresh tokens, made together with those of concurrent requests
 * (src/db/batched.ts). Each is still atomic: of any number of requests presenting one value, exactly one
 * learns that it flipped the row (the first in the batch, when they share one).
 */
export class GroupedConsumes {
  readonly #batch: Batched<{ readonly model: string; readonly ids: readonly string[] }, boolean>;

  constructor(db: Kysely<DB>) {
    this.#batch = new Batched(async (batch) => {
      const { rows } = await CONSUME.execute(db, [batch.flatMap((w) => w.ids.map(() => w.model)), batch.flatMap((w) => w.ids)]);
      const flipped = new Set(rows.map((r) => `${r.model}\u0000${r.id}`));
      return batch.map((w) => {
        const hit = w.ids.map((id) => `${w.model}\u0000${id}`).find((key) => flipped.has(key));
        if (hit) flipped.delete(hit);
        return hit !== undefined;
      });
    });
  }

  /** Whether this call flipped the row from unused to used. */
  consume(model: string, ids: readonly string[]): Promise<boolean> {
    return this.#batch.call({ model, ids });
  }
}

interface PayloadRow {
  readonly payload: unknown;
  readonly consumed_at: Date | null;
}

function toPayload(row: PayloadRow | undefined): AdapterPayload | undefined {
  if (!row) return undefined;
  const payload = row.payload as AdapterPayload;
  if (row.consumed_at) payload.consumed = Math.floor(row.consumed_at.getTime() / 1000);
  return payload;
}

/**
 * Token models whose lookups are shared: introspection and revocation try access token, client credentials
 * and refresh token for one value at once; the token endpoint finds a code or a refresh token and then its
 * grant and the grant's launch context.
 */
export const SHARED_READ_MODELS: ReadonlySet<string> = new Set(['AccessToken', 'ClientCredentials', 'RefreshToken', 'AuthorizationCode']);

interface TokenRow extends PayloadRow {
  /** The live grant the token was issued under, and the grant's live launch context, read with it. */
  readonly grant?: { readonly id: string; readonly payload: unknown; readonly context: GrantContext | undefined };
  /** The user the token was issued to, read with it: undefined when disabled. */
  readonly user?: { readonly id: string; readonly user: User | undefined; readonly linkedTo?: { readonly patient: string; readonly linked: boolean } | undefined };
}

interface Wanted {
  readonly model: string;
  readonly ids: readonly string[];
}

/**
 * Lookups of tokens by id go to the database together (src/db/batched.ts): introspection and revocation look
 * a value up as an access token, client credentials token and refresh token at once (oidc-provider's
 * findToken), and the lookups of concurrent requests join them, those of one tick at once and those made
 * while a lookup is in flight in the next. Each lookup gets the row of its own model and ids, as its own
 * statement would have found it (expired rows are invisible), with the grant the token was issued under,
 * that grant's launch context, and the user, which the request reads next.
 */
export class SharedTokenReads {
  readonly #db: Kysely<DB>;
  readonly #batch = new Batched<Wanted, TokenRow | undefined>((batch) => this.#find(batch));

  constructor(db: Kysely<DB>) {
    this.#db = db;
  }

  find(model: string, ids: readonly string[]): Promise<TokenRow | undefined> {
    return this.#batch.call({ model, ids });
  }

  async #find(batch: readonly Wanted[]): Promise<(TokenRow | undefined)[]> {
    const models = [...new Set(batch.map((w) => w.model))];
    const ids = [...new Set(batch.flatMap((w) => w.ids))];
    const { rows } = await FIND_TOKENS.execute(this.#db, [models, ids]);
    const given = new Set<object>();
    return batch.map((wanted) => {
      const row = rows.find((r) => r.model === wanted.model && wanted.ids.includes(r.id));
      if (!row) return undefined;
      // The same token asked for twice (two requests at once): each gets a payload of its own to change.
      const fresh = given.has(row) ? structuredClone(row) : row;
      given.add(row);
      return {
        payload: fresh.payload,
        consumed_at: fresh.consumed_at,
        ...(fresh.grant_row ? { grant: { id: fresh.grant_row, payload: fresh.grant_payload, context: fresh.context_row ? grantContextOf(fresh) : undefined } } : {}),
        ...(fresh.user_row
          ? {
              user: {
                id: fresh.user_row,
                user: userOf({ id: fresh.user_row, username: fresh.username!, name: fresh.name!, roles: fresh.roles!, disabled: fresh.disabled!, fhir_user: fresh.user_fhir_user! }),
                linkedTo: fresh.context_row && fresh.patient !== null ? { patient: fresh.patient, linked: fresh.linked_to_patient === true } : undefined,
              },
            }
          : {}),
      };
    });
  }
}

/** A token row with its grant, the grant's launch context and the token's user (SharedTokenReads). */
type FoundTokenRow = PayloadRow & { readonly model: string; readonly id: string; readonly grant_row: string | null; readonly grant_payload: unknown; readonly context_row: string | null } & GrantContextRow & {
    readonly user_row: string | null;
    readonly username: string | null;
    readonly name: string | null;
    readonly roles: string[] | null;
    readonly disabled: boolean | null;
    readonly user_fhir_user: string | null;
    readonly linked_to_patient: boolean | null;
  };

const FIND_TOKENS = new Statement<FoundTokenRow>(
  `select t.model, t.id, t.payload, t.consumed_at, g.id as grant_row, g.payload as grant_payload, gc.grant_id as context_row, ${GRANT_CONTEXT_COLUMNS.map((c) => `gc.${c}`).join(', ')},` +
    ` u.id as user_row, u.username, u.name, u.roles, u.disabled, u.fhir_user as user_fhir_user,` +
    // Whether the user may still act for the grant's patient as one linked to it (src/payer/population.ts,
    // representedPatients): a refresh and introspection hold a grant to that, as the gateway does.
    ` gc.patient is not null and u.id is not null and (exists (select 1 from user_patients up where up.user_id = u.id and up.patient_id = gc.patient)` +
    ` or exists (select 1 from representatives r where r.user_id = u.id and r.patient_id = gc.patient and r.status = 'active' and r.period_start <= now() and (r.period_end is null or r.period_end > now()))) as linked_to_patient` +
    ` from oidc_payloads t` +
    ` left join oidc_payloads g on g.model = 'Grant' and g.id = t.grant_id and ${LIVE('g')}` +
    ` left join grant_contexts gc on gc.grant_id = g.id and gc.expires_at > now()` +
    ` left join users u on u.id = t.payload->>'accountId'` +
    ` where t.model = any($1::text[]) and t.id = any($2::text[]) and ${LIVE('t')}`,
);

/** Expires the grant's access tokens now: for the sandbox launcher's simulated expired access token. */
export async function expireAccessTokens(db: Kysely<DB>, grantId: string): Promise<void> {
  await db
    .updateTable('oidc_payloads')
    .set({ expires_at: sql<Date>`now() - interval '1 second'`, payload: sql`jsonb_set(payload, '{exp}', to_jsonb(extract(epoch from now())::bigint - 1))` })
    .where('model', '=', 'AccessToken')
    .where('grant_id', '=', grantId)
    .execute();
}

/** At the authorization endpoint, the `client_id` the request names (the session's grant for it is read ahead). */
function authorizingClient(): string | undefined {
  const ctx = Provider.ctx;
  if (!ctx || oidcOf(ctx)?.route !== 'authorization') return undefined;
  const clientId = ctx.query.client_id;
  return typeof clientId === 'string' && isStorableText(clientId) ? clientId : undefined;
}

/**
 * At the resume (/auth/:uid), the interaction its resume cookie names (signed, as oidc-provider reads it),
 * when the cookie is there and matches the URL: the one the resume is about to take.
 */
function resumedInteraction(): string | undefined {
  const ctx = Provider.ctx;
  if (!ctx || oidcOf(ctx)?.route !== 'resume') return undefined;
  const uid = ctx.cookies.get(ctx.oidc.provider.cookieName('resume'), { signed: true });
  const inUrl = (ctx.params as Record<string, string> | undefined)?.uid;
  return uid && uid === inUrl && isStorableText(uid) ? uid : undefined;
}

/** A payload as found: a bearer row's id (kept out of what is stored) put back. */
function withId(id: string | undefined, payload: AdapterPayload): AdapterPayload {
  if (id !== undefined) payload.jti = id;
  return payload;
}

function withoutJti(payload: AdapterPayload): AdapterPayload {
  const rest = { ...payload };
  delete rest.jti;
  return rest;
}

/**
 * Revokes a grant found reused: its tokens, codes and refresh tokens, the grant, and its launch context, in
 * one transaction; then tells oidc-provider's listeners, as its own revocation does (`grant.revoked`).
 */
async function revokeGrant(db: Kysely<DB>, grantId: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx.deleteFrom('oidc_payloads').where('grant_id', '=', grantId).execute();
    await trx.deleteFrom('oidc_payloads').where('model', '=', 'Grant').where('id', '=', grantId).execute();
    await trx.deleteFrom('grant_contexts').where('grant_id', '=', grantId).execute();
  });
  const ctx = Provider.ctx;
  ctx?.oidc.provider.emit('grant.revoked', ctx, grantId);
}

/**
 * Hashes the ids of bearer rows written before ids were hashed (the mark `bearer_ids_in_clear`), in batches,
 * and drops their clear `jti`. Safe in several processes at once: a row converted by one is not found by the
 * other. Returns the number of rows converted.
 */
export async function hashClearBearerIds(db: Kysely<DB>, box: SecretBox, batchSize = 1000): Promise<number> {
  let total = 0;
  for (;;) {
    // A hashed id is `<keyId>.<mac>`; oidc-provider's ids are nanoids, which have no period.
    const rows = await db.selectFrom('oidc_payloads').select(['model', 'id']).where('model', 'in', [...BEARER_MODELS]).where(sql<boolean>`position('.' in id) = 0`).limit(batchSize).execute();
    for (const row of rows) {
      await db
        .updateTable('oidc_payloads')
        .set({ id: box.bearerId(row.id), payload: sql`payload - 'jti'` })
        .where('model', '=', row.model)
        .where('id', '=', row.id)
        .execute();
    }
    total += rows.length;
    if (rows.length < batchSize) return total;
  }
}

/**
 * Removes rows that expired more than `graceSeconds` ago, in batches so that no statement holds locks for
 * long on a large table. oidc-provider never deletes expired rows itself.
 * @returns the number of rows removed.
 */
export async function purgeExpired(db: Kysely<DB>, { graceSeconds = 300, batchSize = 5000 } = {}): Promise<number> {
  let total = 0;
  for (;;) {
    const result = await db
      .deleteFrom('oidc_payloads')
      .where(
        sql<string>`ctid`,
        'in',
        db
          .selectFrom('oidc_payloads')
          .select(sql<string>`ctid`.as('ctid'))
          .where('expires_at', '<', sql<Date>`now() - make_interval(secs => ${graceSeconds})`)
          .limit(batchSize),
      )
      .executeTakeFirst();
    const removed = Number(result.numDeletedRows);
    total += removed;
    if (removed < batchSize) return total;
  }
}
