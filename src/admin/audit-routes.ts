import type { FastifyInstance } from 'fastify';

import { queryAudit, type AuditRow } from '../audit/audit.js';
import type { AdminDeps } from './deps.js';
import { AUDIT_FILTER_PROPERTIES, auditExport, auditQuery, type AuditFilters } from './operations/audit.js';
import { errorResponses, nextCursor, tagged } from './schemas.js';

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

/** The audit trail: who did what, through which app, to whose data, when; also as FHIR AuditEvents. */
export async function auditRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const { config, db } = deps;

  app.get<{ Querystring: AuditFilters & { limit: number } }>(
    '/audit',
    {
      schema: {
        ...tagged,
        summary: 'Query audit events, oldest first',
        querystring: { type: 'object', additionalProperties: false, properties: { ...AUDIT_FILTER_PROPERTIES, limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } } },
        response: { 200: { type: 'object', required: ['items', 'next'], properties: { items: { type: 'array', items: eventResponse }, next: { type: ['string', 'null'] } } }, ...errorResponses },
      },
    },
    async (request) => {
      const items = await queryAudit(db, auditQuery(request.query, request.query.limit));
      return { items: items.map(view), next: nextCursor(items, request.query.limit, (e) => String(e.seq)) };
    },
  );

  app.get<{ Querystring: AuditFilters & { format: 'ndjson' | 'bundle'; limit: number } }>(
    '/audit/export',
    {
      schema: {
        ...tagged,
        summary: 'Export audit events as FHIR R4 AuditEvent resources (NDJSON or a Bundle)',
        querystring: { type: 'object', additionalProperties: false, properties: { ...AUDIT_FILTER_PROPERTIES, format: { type: 'string', enum: ['ndjson', 'bundle'], default: 'ndjson' }, limit: { type: 'integer', minimum: 1, maximum: 10000, default: 1000 } } },
        response: { ...errorResponses },
      },
    },
    async (request, reply) => {
      const rows = await queryAudit(db, auditQuery(request.query, request.query.limit));
      const next = nextCursor(rows, request.query.limit, (e) => String(e.seq));
      if (next) void reply.header('x-next-after', next);
      const exported = auditExport(config.issuer, rows, request.query.format);
      return reply.type(exported.contentType).send(exported.body);
    },
  );
}

function view(row: AuditRow): Record<string, unknown> {
  return { ...row, seq: String(row.seq), recorded_at: row.recorded_at.toISOString() };
}
