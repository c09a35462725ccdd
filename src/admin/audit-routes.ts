import type { FastifyInstance } from 'fastify';

import { HttpProblem } from '../errors.js';
import { AUDIT_EVENT_TYPES, queryAudit, type AuditQuery, type AuditRow } from '../audit/audit.js';
import { toAuditEvent } from '../audit/fhir.js';
import type { AdminDeps } from './deps.js';
import { errorResponses, nextCursor, tagged } from './schemas.js';

const filters = {
  from: { type: 'string', format: 'date-time' },
  to: { type: 'string', format: 'date-time' },
  type: { type: 'string', maxLength: 64, description: `an event type (${AUDIT_EVENT_TYPES.join(', ')}), or a prefix ending in a dot such as token.` },
  client: { type: 'string', maxLength: 256 },
  user: { type: 'string', maxLength: 256 },
  patient: { type: 'string', maxLength: 256 },
  outcome: { type: 'string', enum: ['success', 'failure'] },
  after: { type: 'string', pattern: '^[0-9]{1,19}$', description: 'the `next` of the previous page' },
} as const;

interface Filters {
  from?: string;
  to?: string;
  type?: string;
  client?: string;
  user?: string;
  patient?: string;
  outcome?: 'success' | 'failure';
  after?: string;
  limit: number;
}

const eventResponse = {
  type: 'object',
  properties: {
    seq: { type: 'string' },
    recorded_at: { type: 'string', format: 'date-time' },
    type: { type: 'string' },
    outcome: { type: 'string' },
    actor_type: { type: 'string' },
    actor_id: { type: ['string', 'null'] },
    user_id: { type: ['string', 'null'] },
    client_id: { type: ['string', 'null'] },
    patient_id: { type: ['string', 'null'] },
    grant_id: { type: ['string', 'null'] },
    scope: { type: ['string', 'null'] },
    source_ip: { type: ['string', 'null'] },
    request_id: { type: ['string', 'null'] },
    details: { type: 'object', additionalProperties: true },
    hash: { type: 'string' },
  },
} as const;

/** Event numbers are Postgres bigints. */
const MAX_SEQ = 2n ** 63n - 1n;

/**
 * An RFC 3339 date-time as a Date. The format allows a leap second (`23:59:60`), which JavaScript dates cannot
 * hold: it means the instant after `23:59:59`.
 */
function instant(name: string, value: string): Date {
  const date = new Date(value.replace(/:60(?=(\.\d+)?(Z|[+-]\d{2}:\d{2})$)/i, ':59'));
  if (Number.isNaN(date.getTime())) throw HttpProblem.invalid(`${name} ${value} is not a date-time this server can use`);
  return value.includes(':60') ? new Date(date.getTime() + 1000) : date;
}

/** The audit trail: who did what, through which app, to whose data, when; also as FHIR AuditEvents. */
export async function auditRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const { config, db } = deps;
  const query = (q: Filters): AuditQuery => {
    const from = q.from === undefined ? undefined : instant('from', q.from);
    const to = q.to === undefined ? undefined : instant('to', q.to);
    if (from && to && from > to) throw HttpProblem.invalid('from is after to');
    if (q.after !== undefined && BigInt(q.after) > MAX_SEQ) throw HttpProblem.invalid(`after ${q.after} is past the largest event number (${MAX_SEQ})`);
    return { from, to, type: q.type, client: q.client, user: q.user, patient: q.patient, outcome: q.outcome, after: q.after, limit: q.limit };
  };

  app.get<{ Querystring: Filters }>(
    '/audit',
    {
      schema: {
        ...tagged,
        summary: 'Query audit events, oldest first',
        querystring: { type: 'object', additionalProperties: false, properties: { ...filters, limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } } },
        response: { 200: { type: 'object', required: ['items', 'next'], properties: { items: { type: 'array', items: eventResponse }, next: { type: ['string', 'null'] } } }, ...errorResponses },
      },
    },
    async (request) => {
      const items = await queryAudit(db, query(request.query));
      return { items: items.map(view), next: nextCursor(items, request.query.limit, (e) => String(e.seq)) };
    },
  );

  app.get<{ Querystring: Filters & { format: 'ndjson' | 'bundle' } }>(
    '/audit/export',
    {
      schema: {
        ...tagged,
        summary: 'Export audit events as FHIR R4 AuditEvent resources (NDJSON or a Bundle)',
        querystring: { type: 'object', additionalProperties: false, properties: { ...filters, format: { type: 'string', enum: ['ndjson', 'bundle'], default: 'ndjson' }, limit: { type: 'integer', minimum: 1, maximum: 10000, default: 1000 } } },
        response: { ...errorResponses },
      },
    },
    async (request, reply) => {
      const rows = await queryAudit(db, query(request.query));
      const events = rows.map((row) => toAuditEvent(row, config.issuer));
      const next = nextCursor(rows, request.query.limit, (e) => String(e.seq));
      if (next) void reply.header('x-next-after', next);
      if (request.query.format === 'bundle') {
        return reply.type('application/fhir+json; charset=utf-8').send(JSON.stringify({ resourceType: 'Bundle', type: 'collection', total: events.length, entry: events.map((resource) => ({ fullUrl: `urn:smart-auth-server:audit-event:${String(resource.id)}`, resource })) }));
      }
      return reply.type('application/fhir+ndjson').send(events.map((e) => JSON.stringify(e)).join('\n') + (events.length ? '\n' : ''));
    },
  );
}

function view(row: AuditRow): Record<string, unknown> {
  return { ...row, seq: String(row.seq), recorded_at: row.recorded_at.toISOString() };
}
