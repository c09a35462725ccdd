import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';

import { sql, type Kysely, type Selectable } from 'kysely';
import type { Logger } from 'pino';

import { isRowError, unavailableReason } from '../db/faults.js';
import type { DB } from '../db/schema.js';
import { ALL_CONSUMED, allDecided, consumeArrays, decideInteractionsSql, decisionArrays, consumesSql, grantContextArrays, grantUseArrays, grantUsesSql, insertGrantContextsSql, payloadArrays, upsertPayloadsSql, type GrantContextWrite, type GrantUse, type PayloadConsume, type PayloadRowWrite } from '../db/payload-rows.js';
import { Statement } from '../db/statements.js';
import type { AuditActorType, AuditEventsTable, AuditOutcome } from '../db/tables/audit-events.js';
import { DISABLED, type Metrics } from '../observability/metrics.js';
import type { SecretBox } from '../security/secret-box.js';
import { AUDIT_LIMITS, cleanDetails, cleanOptionalText, cleanText } from './sanitize.js';

/**
 * The audit trail: every security decision, in one append-only table whose rows are hash-chained under a
 * key (verification and signed checkpoints: src/audit/verify.ts, src/audit/checkpoints.ts).
 *
 * Event types form one dotted vocabulary (docs/audit.md). Events never carry secrets, passwords, codes or
 * tokens: only identifiers (user, client, patient, grant), the scope, and small details.
 */
export const AUDIT_EVENT_TYPES = [
  'login.success',
  'login.failure',
  'consent.granted',
  'consent.denied',
  'token.issued',
  'token.refreshed',
  'token.revoked',
  'token.introspected',
  'token.failed',
  'code.reused',
  'refresh_token.reused',
  'client_assertion.failed',
  'client_assertion.replayed',
  'client_auth.failed',
  'client.created',
  'client.updated',
  'client.deleted',
  'client.secret_rotated',
  'client.registered',
  'client.approved',
  'client.rejected',
  'user.created',
  'user.updated',
  'user.password_reset',
  'launch.created',
  'launch.used',
  'grant.revoked',
  'patient.imported',
  'key.rotated',
  'sandbox.reset',
  'admin.request',
  'fhir.access',
  'attribution.imported',
  'attribution.deleted',
  'member_consent.recorded',
  'member_consent.withdrawn',
  'representative.designated',
  'representative.accepted',
  'representative.revoked',
  'tiered_oauth.registered',
  'tiered_oauth.redirected',
  'tiered_oauth.failed',
  'tiered_oauth.linked',
  'tiered_oauth.unlinked',
] as const;
export type AuditEventType = (typeof AUDIT_EVENT_TYPES)[number];

export interface AuditEvent {
  readonly type: AuditEventType;
  readonly outcome?: AuditOutcome;
  readonly actorType: AuditActorType;
  readonly actorId?: string | undefined;
  readonly userId?: string | undefined;
  readonly clientId?: string | undefined;
  readonly patientId?: string | undefined;
  readonly grantId?: string | undefined;
  readonly scope?: string | undefined;
  readonly sourceIp?: string | undefined;
  readonly requestId?: string | undefined;
  readonly details?: Record<string, unknown>;
}

export type AuditRow = Selectable<AuditEventsTable>;

/** The hash before the first event of the first chain. */
export const GENESIS_HASH = '0'.repeat(64);
/** The one chain of the rows written before each process had its own (migration 2026-11-28T03-00). */
const LEGACY_CHAIN = '';
/** The SecretBox purpose whose subkey keys the chain. */
const CHAIN_PURPOSE = 'audit-chain';
/** Rows at most this many to one INSERT. */
const BATCH_SIZE = 500;
/** Windows of repeated events open at once at most; past this, repeats are written one by one. */
const MAX_REPEAT_WINDOWS = 10_000;

/** The window of an event that repeats (see {@link AuditLog.recordRepeating}). */
interface RepeatWindow {
  readonly event: AuditEvent;
  /** The first event's write; the window counts repeats once it is committed. */
  readonly written: Promise<void>;
  settled: boolean;
  readonly until: number;
  count: number;
  first: Date | undefined;
  last: Date | undefined;
}

/** What an event's request changed, written by the event's statement (see {@link AuditLog.record}). */
export interface EventWrites {
  /** `oidc_payloads` rows the request saved. */
  readonly payloads?: readonly PayloadRowWrite[] | undefined;
  /** The grant the request issued tokens under. */
  readonly grantUse?: GrantUse | undefined;
  /** Launch contexts of the grants the request made. */
  readonly contexts?: readonly GrantContextWrite[] | undefined;
  /**
   * Codes and refresh tokens the request used (each by the ids it may be stored under), marked used in the same
   * statement: if another request used one first, nothing of the statement is written and it fails with
   * USED_ALREADY (src/db/faults.ts), so that what this request issued is never stored, nor answered.
   */
  readonly consumes?: readonly PayloadConsume[] | undefined;
  /**
   * The interaction rows of the decision the request made (a sign-in, a consent, a refusal), saved only if the
   * interaction is still undecided: if another request decided it first, nothing of the statement is written and
   * it fails with DECIDED_ALREADY (src/db/faults.ts), so that a consent's grant is never made twice.
   */
  readonly decisions?: readonly PayloadRowWrite[] | undefined;
}
const NO_WRITES: EventWrites = {};

interface Pending {
  readonly row: Omit<RowContent, 'chain' | 'recorded_at'>;
  readonly writes: EventWrites;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Writes events. Each server process appends to a chain of its own (a new one after a write the database
 * failed), in order, one multi-row INSERT per batch: no lock and no read shared with other processes, so
 * auditing costs one round trip per batch whatever the number of processes. A chain starts anchored to the
 * newest hash in the table at that moment, so a whole chain cannot vanish unnoticed either. Events that
 * arrive while a write is under way go together in the next one; `record` resolves once its event is committed.
 *
 * Each row's hash is an HMAC under a subkey of SECRET_KEY: someone who can write the database but does not
 * hold the key cannot rewrite a row and rehash the rest of its chain.
 */
export class AuditLog {
  readonly #db: Kysely<DB>;
  readonly #log: Logger;
  readonly #box: SecretBox;
  #chain = randomUUID();
  /** The hash of this chain's last committed row; undefined until the chain is anchored. */
  #last: string | undefined;
  #queue: Pending[] = [];
  #writing: Promise<void> | undefined;
  readonly #repeats = new Map<string, RepeatWindow>();
  #repeatTimer: NodeJS.Timeout | undefined;

  readonly #metrics: Metrics;

  /** @param metrics counts every event (tokens, sign-ins, consents are counted from here) and every write. */
  constructor(db: Kysely<DB>, log: Logger, box: SecretBox, metrics: Metrics = DISABLED) {
    this.#db = db;
    this.#log = log;
    this.#box = box;
    this.#metrics = metrics;
  }

  /** Events recorded and not yet written. */
  get pending(): number {
    return this.#queue.length;
  }

  /**
   * Writes the event, and with it in the same statement what its request changed: `payloads`, the
   * `oidc_payloads` rows it saved (the tokens a token request issued, a consent's grant and interaction),
   * `grantUse`, the grant it issued tokens under (its launch context's last use; a refresh renews both), and
   * `contexts`, the launch context of a grant a consent made, and `consumes`, the code or refresh token it used.
   * The request's writes and its audit row are one round trip, shared with the other requests in flight, all or
   * nothing, and the request is answered once they are committed (src/oidc/adapters/payload.ts defers them here).
   */
  record(event: AuditEvent, writes: EventWrites = NO_WRITES): Promise<void> {
    let row: Pending['row'];
    try {
      row = toRow(event);
    } catch (error) {
      return Promise.reject(new Error('audit event could not be prepared', { cause: error }));
    }
    // Counted as it comes; one that used a code or refresh token, or decided an interaction, once written, since
    // another request may have done so first (USED_ALREADY, DECIDED_ALREADY): then nothing of it happened.
    if (writes.consumes?.length || writes.decisions?.length) return this.#enqueue(row, writes).then(() => this.#metrics.securityEvent(event));
    this.#metrics.securityEvent(event);
    return this.#enqueue(row, writes);
  }

  #enqueue(row: Pending['row'], writes: EventWrites = NO_WRITES): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ row, writes, resolve, reject });
      this.#writing ??= this.#drain();
    });
  }

  /**
   * Records an event that repeats often with the same content (an introspection: the same resource server, the
   * same token's grant, the same answer), as one row per window of `windowSeconds` with a count. The first of a
   * window is written as {@link record} writes any event, and resolves once committed; the ones alike that follow
   * within the window (everything equal but the request id) are counted, in the metrics too, and resolve once
   * that first row is committed, without a write of their own; when the window ends, one more row, the same
   * event with `details.repeated` (how many), `details.first` and `details.last` (when), records them. A crash
   * loses the count of the windows still open, never an event unlike those written. `windowSeconds` 0 writes
   * every event.
   */
  recordRepeating(event: AuditEvent, windowSeconds: number): Promise<void> {
    if (windowSeconds <= 0) return this.record(event);
    const key = repeatKey(event);
    const now = Date.now();
    const open = this.#repeats.get(key);
    if (open && now < open.until) {
      return open.written.then(
        () => {
          this.#metrics.securityEvent(event);
          open.count++;
          open.first ??= new Date(now);
          open.last = new Date(now);
          // The window closed while the first row was being written: its count goes out alone.
          if (this.#repeats.get(key) !== open) this.#closeWindow(open);
        },
        // The first row failed, and its window with it: this one is written, or fails, for itself.
        () => this.recordRepeating(event, windowSeconds),
      );
    }
    if (open) this.#closeWindow(open, key);
    if (this.#repeats.size >= MAX_REPEAT_WINDOWS) return this.record(event);
    const written = this.record(event);
    const window: RepeatWindow = { event, written, settled: false, until: now + windowSeconds * 1000, count: 0, first: undefined, last: undefined };
    this.#repeats.set(key, window);
    written.then(
      () => {
        window.settled = true;
      },
      () => {
        if (this.#repeats.get(key) === window) this.#repeats.delete(key);
      },
    );
    this.#repeatTimer ??= setInterval(() => this.#closeWindows(false), Math.min(windowSeconds * 1000, 5_000)).unref();
    return written;
  }

  /** Writes the count of each window that has ended (every window, with `all`), and forgets them. */
  #closeWindows(all: boolean): void {
    const now = Date.now();
    for (const [key, window] of this.#repeats) if (window.settled && (all || now >= window.until)) this.#closeWindow(window, key);
    if (!this.#repeats.size && this.#repeatTimer) {
      clearInterval(this.#repeatTimer);
      this.#repeatTimer = undefined;
    }
  }

  #closeWindow(window: RepeatWindow, key?: string): void {
    if (key !== undefined) this.#repeats.delete(key);
    if (!window.count || !window.first || !window.last) return;
    const { event, count, first, last } = window;
    window.count = 0;
    let row: Pending['row'];
    try {
      row = toRow({ ...event, requestId: undefined, details: { ...event.details, repeated: count, first: first.toISOString(), last: last.toISOString() } });
    } catch (error) {
      this.#log.error({ err: error, type: event.type }, 'audit event could not be written');
      return;
    }
    // Counted in the metrics as each repeat came.
    this.#enqueue(row).catch((error: unknown) => this.#unwritten(error, { type: event.type, repeated: count }));
  }

  /** For callers that must not fail because the audit could not be written (a response already sent). */
  recordQuietly(event: AuditEvent): void {
    this.record(event).catch((error: unknown) => this.#unwritten(error, { type: event.type }));
  }

  /** Logs an event no one waits for that could not be written. */
  #unwritten(error: unknown, fields: Record<string, unknown>): void {
    const reason = unavailableReason(error);
    if (reason) this.#log.warn({ reason, ...fields }, 'audit event could not be written: database unavailable');
    else this.#log.error({ err: error, ...fields }, 'audit event could not be written');
  }

  /** Resolves when everything recorded so far is written. */
  async flush(): Promise<void> {
    while (this.#writing) await this.#writing;
  }

  /** Writes the counts of the windows of repeated events still open, then everything recorded: at shutdown. */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#repeats.values()].map((window) => window.written));
    this.#closeWindows(true);
    await this.flush();
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length) await this.#write(this.#queue.splice(0, BATCH_SIZE));
    } finally {
      this.#writing = undefined;
    }
  }

  /**
   * One INSERT for the batch. Should the database refuse it for its content, each row is tried on its own,
   * so that a row the database refuses fails only its own event.
   */
  async #write(batch: readonly Pending[]): Promise<void> {
    const at = new Date();
    const started = performance.now();
    try {
      await this.#insert(batch, at);
      this.#metrics.auditWrite((performance.now() - started) / 1000, batch.length, false);
      for (const p of batch) p.resolve();
      return;
    } catch (error) {
      this.#metrics.auditWrite((performance.now() - started) / 1000, batch.length, true);
      if (!isRowError(error)) this.#startNewChain();
      if (batch.length === 1 || !isRowError(error)) {
        for (const p of batch) p.reject(error);
        return;
      }
      this.#log.warn({ err: error, events: batch.length }, 'audit batch refused: writing its events one by one');
    }
    for (const [i, p] of batch.entries()) {
      try {
        await this.#insert([p], at);
        p.resolve();
      } catch (error) {
        p.reject(error);
        // The database itself is failing, not this row: the others would wait for it in vain.
        if (!isRowError(error)) {
          this.#startNewChain();
          for (const rest of batch.slice(i + 1)) rest.reject(error);
          return;
        }
      }
    }
  }

  /**
   * After a write the database failed (the connection died, perhaps at commit), whether its rows were
   * committed is unknown: the next batch cannot know which hash to chain to, so it starts a chain of its own,
   * anchored anew. A row the database refused for its content is known not to be there, and changes nothing.
   */
  #startNewChain(): void {
    this.#chain = randomUUID();
    this.#last = undefined;
  }

  /** Chains the rows on from the chain's last committed row; the chain only moves on once they are committed. */
  async #insert(batch: readonly Pending[], at: Date): Promise<void> {
    let prev = (this.#last ??= (await this.#db.selectFrom('audit_events').select('hash').orderBy('seq', 'desc').limit(1).executeTakeFirst())?.hash ?? GENESIS_HASH);
    const rows = batch.map(({ row }) => {
      const content: RowContent = { ...row, chain: this.#chain, recorded_at: at };
      const hash = keyedChainHash(this.#box, prev, content);
      const full = { ...content, details: JSON.stringify(content.details), prev_hash: prev, hash };
      prev = hash;
      return full;
    });
    const parameters = [
      ...AUDIT_COLUMNS.map((column) => rows.map((row) => row[column])),
      ...payloadArrays(batch.flatMap((p) => p.writes.payloads ?? [])),
      ...grantUseArrays(batch.flatMap((p) => (p.writes.grantUse ? [p.writes.grantUse] : []))),
      ...consumeArrays(batch.flatMap((p) => p.writes.consumes ?? [])),
    ];
    const decisions = batch.flatMap((p) => p.writes.decisions ?? []);
    const contexts = batch.flatMap((p) => p.writes.contexts ?? []);
    if (decisions.length || contexts.length) await INSERT_EVENTS_WITH_DECISIONS.execute(this.#db, [...parameters, ...decisionArrays(decisions), ...grantContextArrays(contexts)]);
    else await INSERT_EVENTS.execute(this.#db, parameters);
    this.#last = prev;
  }
}

/** The columns an event row is written with, in the order of INSERT_EVENTS's parameters. */
const AUDIT_COLUMNS = ['chain', 'recorded_at', 'type', 'outcome', 'actor_type', 'actor_id', 'user_id', 'client_id', 'patient_id', 'grant_id', 'scope', 'source_ip', 'request_id', 'details', 'prev_hash', 'hash'] as const;
const AUDIT_TYPES: Readonly<Record<(typeof AUDIT_COLUMNS)[number], string>> = { chain: 'text', recorded_at: 'timestamptz', type: 'text', outcome: 'text', actor_type: 'text', actor_id: 'text', user_id: 'text', client_id: 'text', patient_id: 'text', grant_id: 'text', scope: 'text', source_ip: 'text', request_id: 'text', details: 'jsonb', prev_hash: 'text', hash: 'text' };

/**
 * A batch of events in one statement of fixed text, a column per array parameter, with the payload rows their
 * requests saved, the grants they issued tokens under and the codes and refresh tokens they used (none, most
 * often: those CTEs then write nothing), and with `interactions`, the interactions they decided and the launch
 * contexts of grants they made. The rows are numbered and inserted in that order, so that their sequence numbers
 * follow the chain.
 */
function insertEventsSql(interactions: boolean): string {
  return (
    `with payloads as (${upsertPayloadsSql(AUDIT_COLUMNS.length + 1)}), ${grantUsesSql(AUDIT_COLUMNS.length + 8)}, ${consumesSql(AUDIT_COLUMNS.length + 11)}` +
    `${interactions ? `, decided as (${decideInteractionsSql(AUDIT_COLUMNS.length + 14)}), ${insertGrantContextsSql(AUDIT_COLUMNS.length + 17)}` : ''} ` +
    `insert into audit_events (${AUDIT_COLUMNS.join(', ')})` +
    ` select ${AUDIT_COLUMNS.join(', ')} from unnest(${AUDIT_COLUMNS.map((column, i) => `$${i + 1}::${AUDIT_TYPES[column]}[]`).join(', ')}) with ordinality as e(${AUDIT_COLUMNS.join(', ')}, n)` +
    ` where ${ALL_CONSUMED}${interactions ? ` and ${allDecided(AUDIT_COLUMNS.length + 14)}` : ''} order by n`
  );
}
const INSERT_EVENTS = new Statement(insertEventsSql(false));
/**
 * The same with the interactions a sign-in, consent or refusal decided and the launch contexts of grants a consent
 * made: a statement of its own, so the token path's carries neither their parameters nor their check.
 */
const INSERT_EVENTS_WITH_DECISIONS = new Statement(insertEventsSql(true));

/** What a row's hash covers: every column but the sequence number and the hashes. */
export type RowContent = Omit<AuditRow, 'seq' | 'prev_hash' | 'hash'>;

/** The event as it will be stored, every value cleaned (src/audit/sanitize.ts), so the hash covers exactly that. */
function toRow(event: AuditEvent): Omit<RowContent, 'chain' | 'recorded_at'> {
  return {
    type: cleanText(event.type),
    outcome: event.outcome ?? 'success',
    actor_type: event.actorType,
    actor_id: cleanOptionalText(event.actorId),
    user_id: cleanOptionalText(event.userId),
    client_id: cleanOptionalText(event.clientId),
    patient_id: cleanOptionalText(event.patientId),
    grant_id: cleanOptionalText(event.grantId),
    scope: cleanOptionalText(event.scope, AUDIT_LIMITS.scope),
    source_ip: cleanOptionalText(event.sourceIp),
    request_id: cleanOptionalText(event.requestId),
    details: cleanDetails(event.details),
  };
}

/** What two events that repeat one another share: everything but the request id. */
function repeatKey(e: AuditEvent): string {
  return JSON.stringify([e.type, e.outcome, e.actorType, e.actorId, e.userId, e.clientId, e.patientId, e.grantId, e.scope, e.sourceIp, e.details === undefined ? null : canonical(e.details)]);
}

/** The previous hash and the row's content in a canonical form (sorted keys, ISO time). */
function chainContent(prev: string, row: RowContent, withChain: boolean): string {
  const content = [prev, ...(withChain ? [row.chain] : []), row.recorded_at.toISOString(), row.type, row.outcome, row.actor_type, row.actor_id, row.user_id, row.client_id, row.patient_id, row.grant_id, row.scope, row.source_ip, row.request_id, canonical(row.details)];
  return JSON.stringify(content);
}

/** Hashes written since the chain was keyed: `v2.<SecretBox key id>.<HMAC-SHA256, hex>`. */
const KEYED_HASH = /^v2\.([A-Za-z0-9_-]+)\.([0-9a-f]{64})$/;

/** The keyed hash of a row: HMAC-SHA256 under the `audit-chain` subkey of SECRET_KEY, naming that key. */
export function keyedChainHash(box: SecretBox, prev: string, row: RowContent, keyId = box.keyId): string {
  const mac = box.macWith(keyId, CHAIN_PURPOSE, chainContent(prev, row, true));
  if (!mac) throw new Error(`no secret key ${keyId}`);
  return `v2.${keyId}.${mac.toString('hex')}`;
}

/**
 * The hash rows had before the chain was keyed: plain sha256, which anyone can recompute. Rows of the chain
 * '' were written before chains had names, and their hash does not cover the column.
 */
export function legacyChainHash(prev: string, row: RowContent): string {
  return createHash('sha256').update(chainContent(prev, row, row.chain !== LEGACY_CHAIN)).digest('hex');
}

export function isKeyedHash(hash: string): boolean {
  return hash.startsWith('v2.');
}

/** Why the row does not match its hash, or undefined when it does. */
export function rowHashProblem(box: SecretBox, row: AuditRow): string | undefined {
  if (!isKeyedHash(row.hash)) return legacyChainHash(row.prev_hash, row) === row.hash ? undefined : 'the row does not match its hash (it was modified)';
  const match = KEYED_HASH.exec(row.hash);
  if (!match) return 'the row\'s hash is malformed (it was modified)';
  const keyId = match[1]!;
  const mac = box.macWith(keyId, CHAIN_PURPOSE, chainContent(row.prev_hash, row, true));
  if (!mac) return `the row is hashed under a SECRET_KEY this server does not hold (key id ${keyId}): set the key it was written with in SECRET_KEYS_PREVIOUS, or the row was forged`;
  return timingSafeEqual(mac, Buffer.from(match[2]!, 'hex')) ? undefined : 'the row does not match its hash (it was modified)';
}

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

export interface AuditQuery {
  readonly from?: Date | undefined;
  readonly to?: Date | undefined;
  readonly type?: string | undefined;
  readonly client?: string | undefined;
  readonly user?: string | undefined;
  readonly patient?: string | undefined;
  readonly outcome?: AuditOutcome | undefined;
  /** Return events after this sequence number (the `next` of the previous page). */
  readonly after?: string | undefined;
  /** Return events before this sequence number (paging back, newest first). */
  readonly before?: string | undefined;
  /** Oldest first unless asked otherwise. */
  readonly newestFirst?: boolean | undefined;
  readonly limit: number;
}

export async function queryAudit(db: Kysely<DB>, query: AuditQuery): Promise<AuditRow[]> {
  let q = db.selectFrom('audit_events').selectAll();
  if (query.from) q = q.where('recorded_at', '>=', query.from);
  if (query.to) q = q.where('recorded_at', '<', query.to);
  if (query.type) q = query.type.endsWith('.') ? q.where('type', 'like', `${query.type}%`) : q.where('type', '=', query.type);
  if (query.client) q = q.where('client_id', '=', query.client);
  if (query.user) q = q.where('user_id', '=', query.user);
  if (query.patient) q = q.where('patient_id', '=', query.patient);
  if (query.outcome) q = q.where('outcome', '=', query.outcome);
  if (query.after) q = q.where(sql<string>`seq`, '>', query.after);
  if (query.before) q = q.where(sql<string>`seq`, '<', query.before);
  return q.orderBy('seq', query.newestFirst ? 'desc' : 'asc').limit(query.limit).execute();
}

/** How many events of each type and outcome were recorded since `since`. */
export async function auditCounts(db: Kysely<DB>, since: Date): Promise<{ type: string; outcome: AuditOutcome; count: number }[]> {
  const rows = await db
    .selectFrom('audit_events')
    .select(['type', 'outcome', sql<string | number | bigint>`count(*)`.as('count')])
    .where('recorded_at', '>=', since)
    .groupBy(['type', 'outcome'])
    .execute();
  return rows.map((r) => ({ type: r.type, outcome: r.outcome, count: Number(r.count) }));
}
