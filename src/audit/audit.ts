import { createHash, randomUUID } from 'node:crypto';

import { sql, type Kysely, type Selectable } from 'kysely';
import type { Logger } from 'pino';

import { unavailableReason } from '../db/faults.js';
import type { DB } from '../db/schema.js';
import type { AuditActorType, AuditEventsTable, AuditOutcome } from '../db/tables/audit-events.js';

/**
 * The audit trail: every security decision, in one append-only table whose rows are hash-chained.
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
  'user.created',
  'user.updated',
  'user.password_reset',
  'launch.created',
  'launch.used',
  'grant.revoked',
  'patient.imported',
  'key.rotated',
  'admin.request',
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

/**
 * Writes events. Each server process appends to a chain of its own (a new one after a failed write), in
 * order, one multi-row INSERT per batch: no lock and no read shared with other processes, so auditing costs
 * one round trip per batch whatever the number of processes. A chain starts anchored to the newest hash in
 * the table at that moment, so a whole chain cannot vanish unnoticed either. Events that arrive while a
 * write is under way go together in the next one; `record` resolves once its event is committed.
 */
export class AuditLog {
  readonly #db: Kysely<DB>;
  readonly #log: Logger;
  #chain = randomUUID();
  /** The hash of this chain's last committed row; undefined until the chain is anchored. */
  #last: string | undefined;
  #queue: { event: AuditEvent; resolve: () => void; reject: (error: unknown) => void }[] = [];
  #writing: Promise<void> | undefined;

  constructor(db: Kysely<DB>, log: Logger) {
    this.#db = db;
    this.#log = log;
  }

  record(event: AuditEvent): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ event, resolve, reject });
      this.#writing ??= this.#drain();
    });
  }

  /** For callers that must not fail because the audit could not be written (a response already sent). */
  recordQuietly(event: AuditEvent): void {
    this.record(event).catch((error: unknown) => {
      const reason = unavailableReason(error);
      if (reason) this.#log.warn({ reason, type: event.type }, 'audit event could not be written: database unavailable');
      else this.#log.error({ err: error, type: event.type }, 'audit event could not be written');
    });
  }

  /** Resolves when everything recorded so far is written. */
  async flush(): Promise<void> {
    while (this.#writing) await this.#writing;
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length) {
        const batch = this.#queue.splice(0, 500);
        try {
          await this.#write(batch.map((b) => b.event));
          for (const b of batch) b.resolve();
        } catch (error) {
          // A write whose answer was lost (the connection died at commit) may have been committed: the next
          // batch cannot know which hash to chain to, so it starts a chain of its own, anchored anew.
          this.#chain = randomUUID();
          this.#last = undefined;
          for (const b of batch) b.reject(error);
        }
      }
    } finally {
      this.#writing = undefined;
    }
  }

  async #write(events: readonly AuditEvent[]): Promise<void> {
    this.#last ??= (await this.#db.selectFrom('audit_events').select('hash').orderBy('seq', 'desc').limit(1).executeTakeFirst())?.hash ?? GENESIS_HASH;
    let prev = this.#last;
    const rows = events.map((event) => {
      const row = toRow(this.#chain, event, new Date());
      const hash = chainHash(prev, row);
      const full = { ...row, details: JSON.stringify(row.details), prev_hash: prev, hash };
      prev = hash;
      return full;
    });
    await this.#db.insertInto('audit_events').values(rows).execute();
    this.#last = prev;
  }
}

/** What a row's hash covers: every column but the sequence number and the hashes. */
type RowContent = Omit<AuditRow, 'seq' | 'prev_hash' | 'hash'>;

function toRow(chain: string, event: AuditEvent, at: Date): RowContent {
  return {
    chain,
    recorded_at: at,
    type: event.type,
    outcome: event.outcome ?? 'success',
    actor_type: event.actorType,
    actor_id: event.actorId ?? null,
    user_id: event.userId ?? null,
    client_id: event.clientId ?? null,
    patient_id: event.patientId ?? null,
    grant_id: event.grantId ?? null,
    scope: event.scope ?? null,
    source_ip: event.sourceIp ?? null,
    request_id: event.requestId ?? null,
    // Exactly what jsonb will hold (undefined members dropped), so that the hash covers what is stored.
    details: JSON.parse(JSON.stringify(event.details ?? {})) as Record<string, unknown>,
  };
}

/**
 * sha256 over the previous hash and the row's content in a canonical form (sorted keys, ISO time). Rows of
 * the chain '' were written before chains had names, and their hash does not cover the column.
 */
export function chainHash(prev: string, row: RowContent): string {
  const content = [prev, ...(row.chain === LEGACY_CHAIN ? [] : [row.chain]), row.recorded_at.toISOString(), row.type, row.outcome, row.actor_type, row.actor_id, row.user_id, row.client_id, row.patient_id, row.grant_id, row.scope, row.source_ip, row.request_id, canonical(row.details)];
  return createHash('sha256').update(JSON.stringify(content)).digest('hex');
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

export interface VerifyResult {
  readonly ok: boolean;
  readonly checked: number;
  readonly chains: number;
  /** The first row whose hash does not match its content, its predecessor or an anchor. */
  readonly brokenAt?: { readonly seq: string; readonly reason: string };
}

/**
 * Walks every chain in order, in pages, recomputing each hash; the first row of a chain must be anchored
 * to the genesis hash or to a hash written before it.
 */
export async function verifyAuditChain(db: Kysely<DB>, pageSize = 1000): Promise<VerifyResult> {
  const last = new Map<string, string>();
  let after = '0';
  let checked = 0;
  for (;;) {
    const rows = await db.selectFrom('audit_events').selectAll().where(sql<string>`seq`, '>', after).orderBy('seq').limit(pageSize).execute();
    for (const row of rows) {
      const seq = String(row.seq);
      const prev = last.get(row.chain);
      if (prev === undefined) {
        const anchored = row.prev_hash === GENESIS_HASH || (await db.selectFrom('audit_events').select('seq').where('hash', '=', row.prev_hash).where(sql<string>`seq`, '<', seq).executeTakeFirst());
        if (!anchored) return { ok: false, checked, chains: last.size, brokenAt: { seq, reason: 'the chain starts from a hash that is not in the trail (rows before it were removed)' } };
      } else if (row.prev_hash !== prev) {
        return { ok: false, checked, chains: last.size, brokenAt: { seq, reason: 'prev_hash is not the hash of the row before in its chain (a row was removed or inserted)' } };
      }
      if (chainHash(row.prev_hash, row) !== row.hash) return { ok: false, checked, chains: last.size, brokenAt: { seq, reason: 'the row does not match its hash (it was modified)' } };
      last.set(row.chain, row.hash);
      checked++;
    }
    if (rows.length < pageSize) return { ok: true, checked, chains: last.size };
    after = String(rows.at(-1)!.seq);
  }
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
  return q.orderBy('seq').limit(query.limit).execute();
}
