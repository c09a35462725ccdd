import { HttpProblem } from '../../errors.js';
import { AUDIT_EVENT_TYPES, type AuditQuery, type AuditRow } from '../../audit/audit.js';
import { toAuditEvent } from '../../audit/fhir.js';
import { instant, SEARCHED_RANGE, type InstantRange } from '../../payer/instants.js';

/** An event number as a query string holds it: a cursor, checked against {@link MAX_SEQ} by {@link eventNumber}. */
export const SEQ_PATTERN = '^[0-9]{1,19}$';

/** Filters of the audit trail, as the admin API's query string and the console's filter form take them. */
export const AUDIT_FILTER_PROPERTIES = {
  from: { type: 'string', format: 'date-time' },
  to: { type: 'string', format: 'date-time' },
  type: { type: 'string', maxLength: 64, description: `an event type (${AUDIT_EVENT_TYPES.join(', ')}), or a prefix ending in a dot such as token.` },
  client: { type: 'string', maxLength: 256 },
  user: { type: 'string', maxLength: 256 },
  patient: { type: 'string', maxLength: 256 },
  outcome: { type: 'string', enum: ['success', 'failure'] },
  after: { type: 'string', pattern: SEQ_PATTERN, description: 'the `next` of the previous page' },
} as const;

export interface AuditFilters {
  from?: string | undefined;
  to?: string | undefined;
  type?: string | undefined;
  client?: string | undefined;
  user?: string | undefined;
  patient?: string | undefined;
  outcome?: 'success' | 'failure' | undefined;
  after?: string | undefined;
}

/** Event numbers are Postgres bigints. */
const MAX_SEQ = 2n ** 63n - 1n;

/** The instants a filter may name: any four-digit year. */
const SEARCHED: InstantRange = { ...SEARCHED_RANGE, use: 'the audit trail is searched' };

/** An event number of a query string (matching {@link SEQ_PATTERN}); 400 past the largest bigint. */
export function eventNumber(name: string, value: string | undefined): string | undefined {
  if (value !== undefined && BigInt(value) > MAX_SEQ) throw HttpProblem.invalid(`${name} ${value} is past the largest event number (${MAX_SEQ})`);
  return value;
}

/** The store's query for these filters; 400 for a range that ends before it starts, or out of range, or a cursor out of range. */
export function auditQuery(filters: AuditFilters, limit: number): AuditQuery {
  const from = filters.from === undefined ? undefined : instant('from', filters.from, SEARCHED);
  const to = filters.to === undefined ? undefined : instant('to', filters.to, SEARCHED);
  if (from && to && from > to) throw HttpProblem.invalid('from is after to');
  const after = eventNumber('after', filters.after);
  return { from, to, type: filters.type, client: filters.client, user: filters.user, patient: filters.patient, outcome: filters.outcome, after, limit };
}

/** Audit rows as FHIR R4 AuditEvent resources: NDJSON, or a Bundle of type collection. */
export function auditExport(issuer: string, rows: readonly AuditRow[], format: 'ndjson' | 'bundle'): { contentType: string; body: string } {
  const events = rows.map((row) => toAuditEvent(row, issuer));
  if (format === 'bundle') {
    return {
      contentType: 'application/fhir+json; charset=utf-8',
      body: JSON.stringify({ resourceType: 'Bundle', type: 'collection', total: events.length, entry: events.map((resource) => ({ fullUrl: `urn:smart-auth-server:audit-event:${String(resource.id)}`, resource })) }),
    };
  }
  return { contentType: 'application/fhir+ndjson', body: events.map((e) => JSON.stringify(e)).join('\n') + (events.length ? '\n' : '') };
}
