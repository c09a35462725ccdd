import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

import { HttpProblem } from '../../errors.js';
import { AUDIT_EVENT_TYPES, queryAudit } from '../../audit/audit.js';
import { checkpointExport, checkpointJws, createCheckpoint } from '../../audit/checkpoints.js';
import { verifyAudit, type VerifyResult } from '../../audit/verify.js';
import { auditExport, auditQuery, eventNumber, SEQ_PATTERN, type AuditFilters } from '../operations/audit.js';
import type { ConsoleContext } from './context.js';
import { eventView, when } from './views.js';

const PAGE = 50;
const EXPORT_LIMIT = 10_000;
/** Every event type, then each family of them (`login.` …): what the type filter offers. */
const TYPE_CHOICES = [...new Set(AUDIT_EVENT_TYPES.map((t) => `${t.split('.')[0]!}.`))].flatMap((family) => [family, ...AUDIT_EVENT_TYPES.filter((t) => t.startsWith(family))]);
/** `datetime-local` gives a time without a zone; the form says the times are UTC. */
const LOCAL_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?$/;

const filterProperties = {
  from: { type: 'string', maxLength: 40 },
  to: { type: 'string', maxLength: 40 },
  type: { type: 'string', enum: ['', ...TYPE_CHOICES] },
  client: { type: 'string', maxLength: 256 },
  user: { type: 'string', maxLength: 256 },
  patient: { type: 'string', maxLength: 256 },
  outcome: { type: 'string', enum: ['', 'success', 'failure'] },
} as const;

type Query = Partial<Record<keyof typeof filterProperties, string>>;

function filtersOf(query: Query): AuditFilters {
  const time = (value: string | undefined) => {
    const v = value?.trim();
    // `datetime-local` leaves the seconds out when they are zero; RFC 3339 wants them.
    return !v ? undefined : LOCAL_TIME.test(v) ? `${v.length === 16 ? `${v}:00` : v}Z` : v;
  };
  const textOf = (value: string | undefined) => value?.trim() || undefined;
  return { from: time(query.from), to: time(query.to), type: textOf(query.type), client: textOf(query.client), user: textOf(query.user), patient: textOf(query.patient), outcome: (textOf(query.outcome) as AuditFilters['outcome']) ?? undefined };
}

/** The filters as a query string, without the empty ones. */
function queryOf(query: Query): URLSearchParams {
  return new URLSearchParams(Object.entries(query).filter((entry): entry is [string, string] => Object.hasOwn(filterProperties, entry[0]) && typeof entry[1] === 'string' && entry[1].trim() !== ''));
}

/**
 * Checkpoints kept elsewhere, pasted: one (as exported, or its compact JWS), or a JSON array of them.
 * @throws {HttpProblem} 400 naming the one that is not a checkpoint.
 */
function pastedCheckpoints(text: string | undefined): { source: string; jws: string }[] {
  const trimmed = text?.trim();
  if (!trimmed) return [];
  let items: unknown[] = [trimmed];
  if (trimmed.startsWith('[')) {
    try {
      items = JSON.parse(trimmed) as unknown[];
    } catch {
      throw HttpProblem.invalid('the pasted checkpoints are not a JSON array');
    }
    if (!Array.isArray(items)) throw HttpProblem.invalid('the pasted checkpoints are not a JSON array');
  }
  return items.map((item, i) => {
    const jws = checkpointJws(typeof item === 'string' ? item : JSON.stringify(item));
    if (!jws) throw HttpProblem.invalid(`pasted checkpoint ${i + 1} is not a checkpoint: paste the JSON of an exported checkpoint, or its compact JWS`);
    return { source: `pasted checkpoint ${i + 1}`, jws };
  });
}

/**
 * The audit trail: filter, page back from the newest, export as FHIR AuditEvents (NDJSON or a Bundle), and
 * verify the hash chains and the signed checkpoints (docs/audit.md). All of it is open to auditors.
 */
export async function auditPages(app: FastifyInstance, ctx: ConsoleContext): Promise<void> {
  const { deps, base } = ctx;
  const { db, box, config } = deps;

  async function page(request: FastifyRequest, reply: FastifyReply, query: Query & { before?: string }, extra: { verification?: VerifyResult; checkpoint?: string } = {}) {
    const verification = extra.verification;
    const rows = await queryAudit(db, { ...auditQuery(filtersOf(query), PAGE), before: eventNumber('before', query.before), newestFirst: true });
    const params = queryOf(query);
    const suffix = params.size ? `&${params.toString()}` : '';
    return ctx.render(request, reply, 'audit', {
      section: 'audit',
      filters: { from: query.from ?? '', to: query.to ?? '', type: query.type ?? '', client: query.client ?? '', user: query.user ?? '', patient: query.patient ?? '', outcome: query.outcome ?? '' },
      types: TYPE_CHOICES.map((t) => ({ value: t, label: t.endsWith('.') ? `${t}* (all)` : t })),
      events: rows.map(eventView),
      paged: !!query.before,
      newest: `${base}/audit${params.size ? `?${params.toString()}` : ''}`,
      older: rows.length === PAGE ? `${base}/audit?before=${String(rows.at(-1)!.seq)}${suffix}` : null,
      exportNdjson: `${base}/audit/export?format=ndjson${suffix}`,
      exportBundle: `${base}/audit/export?format=bundle${suffix}`,
      exportLimit: EXPORT_LIMIT,
      verifyAction: `${base}/audit/verify`,
      checkpointAction: request.consoleOperator?.role === 'admin' ? `${base}/audit/checkpoint` : null,
      checkpoint: extra.checkpoint ?? null,
      verification: verification && {
        ok: verification.ok,
        checked: verification.checked,
        chains: verification.chains,
        stored: verification.checkpoints.stored,
        given: verification.checkpoints.given.length,
        newest: verification.checkpoints.newestStored ? `${when(verification.checkpoints.newestStored.issuedAt)}, ${verification.checkpoints.newestStored.total} events, ${verification.checkpoints.newestStored.chains} chains` : null,
        brokenAt: verification.brokenAt ?? null,
        refused: verification.refused ?? null,
      },
    });
  }

  app.get<{ Querystring: Query & { before?: string } }>(
    '/admin/audit',
    { config: { consoleAuditor: true }, schema: { querystring: { type: 'object', properties: { ...filterProperties, before: { type: 'string', pattern: SEQ_PATTERN } } } } },
    async (request, reply) => page(request, reply, request.query),
  );

  app.get<{ Querystring: Query & { format: 'ndjson' | 'bundle' } }>(
    '/admin/audit/export',
    { config: { consoleAuditor: true }, schema: { querystring: { type: 'object', required: ['format'], properties: { ...filterProperties, format: { type: 'string', enum: ['ndjson', 'bundle'] } } } } },
    async (request, reply) => {
      const rows = await queryAudit(db, auditQuery(filtersOf(request.query), EXPORT_LIMIT));
      const exported = auditExport(config.issuer, rows, request.query.format);
      const name = `audit-events-${new Date().toISOString().slice(0, 19).replace(/[-:]/g, '')}Z.${request.query.format === 'bundle' ? 'json' : 'ndjson'}`;
      return reply.header('cache-control', 'no-store').header('content-disposition', `attachment; filename="${name}"`).type(exported.contentType).send(exported.body);
    },
  );

  app.post<{ Body: { checkpoints?: string } }>(
    '/admin/audit/verify',
    { config: { consoleAuditor: true }, schema: { body: { type: 'object', required: ['csrf'], properties: { csrf: { type: 'string', maxLength: 128 }, checkpoints: { type: 'string', maxLength: 1024 * 1024 } } } } },
    async (request, reply) => page(request, reply, {}, { verification: await verifyAudit(db, box, { checkpoints: pastedCheckpoints(request.body.checkpoints) }) }),
  );

  // Signs a checkpoint now and shows it, to be kept where the database's owner cannot rewrite it.
  app.post('/admin/audit/checkpoint', { schema: { body: { type: 'object', required: ['csrf'], properties: { csrf: { type: 'string', maxLength: 128 } } } } }, async (request, reply) => {
    const checkpoint = await createCheckpoint(db, box, config.issuer);
    return page(request, reply, {}, { checkpoint: JSON.stringify(checkpointExport(checkpoint), null, 2) });
  });
}
