import type { FastifyInstance } from 'fastify';

import { listAttributionLists } from '../../payer/attribution.js';
import { patientAccessCsv, patientAccessMetrics, YEAR_PROPERTY } from '../operations/payer.js';
import type { ConsoleContext } from './context.js';
import { when } from './views.js';

/**
 * CMS-0057-F: the Patient Access report for a year (and its CSV, to send on), and the attribution lists.
 * Auditors see it too: it is counts.
 */
export async function payerPages(app: FastifyInstance, ctx: ConsoleContext): Promise<void> {
  const { deps, base } = ctx;
  const { db } = deps;
  const yearQuery = { type: 'object', properties: { year: YEAR_PROPERTY } } as const;

  app.get<{ Querystring: { year?: number } }>('/admin/payer', { config: { consoleAuditor: true }, schema: { querystring: yearQuery } }, async (request, reply) => {
    const current = new Date().getUTCFullYear();
    const year = Math.min(request.query.year ?? current, current);
    const [report, lists] = await Promise.all([patientAccessMetrics(deps, year), listAttributionLists(db)]);
    return ctx.render(request, reply, 'payer', {
      section: 'payer',
      year,
      years: Array.from({ length: Math.min(7, current - 2019) }, (_, i) => current - i),
      csv: `${base}/payer/patient-access.csv?year=${year}`,
      report,
      lists: lists.map((l) => ({ ...l, updated: when(l.updatedAt) })),
    });
  });

  app.get<{ Querystring: { year: number } }>(
    '/admin/payer/patient-access.csv',
    { config: { consoleAuditor: true }, schema: { querystring: { ...yearQuery, required: ['year'] } } },
    async (request, reply) => {
      const report = await patientAccessMetrics(deps, request.query.year);
      return reply.type('text/csv; charset=utf-8').header('content-disposition', `attachment; filename="patient-access-${report.year}.csv"`).send(patientAccessCsv(report));
    },
  );
}
