import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

import { HttpProblem } from '../../errors.js';
import { encountersOf, findPatients, patientResource, searchPatients } from '../../directory/patients.js';
import { idParams } from '../schemas.js';
import { importedResources, importPatients, removePatient } from '../operations/directory.js';
import { noticeOf, type ConsoleContext } from './context.js';
import { operatorEvent } from './session.js';

const PAGE = 50;
/** What one pasted import may weigh; larger directories go through the admin API or the CLI (32 MiB). */
const MAX_IMPORT_BYTES = 4 * 1024 * 1024;

/** The patient directory: search, read a patient and their encounters, remove one, import NDJSON or a Bundle. */
export async function directoryPages(app: FastifyInstance, ctx: ConsoleContext): Promise<void> {
  const { deps, base } = ctx;
  const { db } = deps;
  const patientPath = (id: string) => `/patients/${encodeURIComponent(id)}`;

  async function listPage(request: FastifyRequest, reply: FastifyReply, q: string, extra: { notice?: string | null; error?: string; imported?: { patients: number; encounters: number }; resources?: string; status?: number } = {}) {
    const patients = await searchPatients(db, q, PAGE);
    return ctx.render(request, reply, 'patients', {
      section: 'patients',
      notice: extra.notice ?? null,
      error: extra.error ?? null,
      imported: extra.imported ?? null,
      resources: extra.resources ?? '',
      q,
      importAction: `${base}/patients/import`,
      maxImportMiB: MAX_IMPORT_BYTES / 1024 / 1024,
      patients: patients.map((p) => ({ ...p, href: `${base}${patientPath(p.id)}` })),
      more: patients.length === PAGE,
    }, extra.status ?? 200);
  }

  app.get<{ Querystring: { q?: string; notice?: string } }>(
    '/admin/patients',
    { schema: { querystring: { type: 'object', properties: { q: { type: 'string', maxLength: 200 }, notice: { type: 'string', maxLength: 64 } } } } },
    async (request, reply) => listPage(request, reply, request.query.q?.trim() ?? '', { notice: noticeOf(request.query.notice) }),
  );

  app.post<{ Body: { resources: string } }>(
    '/admin/patients/import',
    { bodyLimit: MAX_IMPORT_BYTES, schema: { body: { type: 'object', required: ['csrf', 'resources'], properties: { csrf: { type: 'string', maxLength: 128 }, resources: { type: 'string', maxLength: MAX_IMPORT_BYTES } } } } },
    async (request, reply) => {
      try {
        const imported = await importPatients(deps, operatorEvent(request), importedResources(request.body.resources));
        return await listPage(request, reply, '', { imported });
      } catch (error) {
        if (!(error instanceof HttpProblem) || error.statusCode >= 500) throw error;
        return listPage(request, reply, '', { error: `Nothing was imported: ${error.message}`, resources: request.body.resources, status: error.statusCode });
      }
    },
  );

  app.get<{ Params: { id: string } }>('/admin/patients/:id', { schema: { params: idParams('id') } }, async (request, reply) => {
    const resource = await patientResource(db, request.params.id);
    if (!resource) throw HttpProblem.notFound(`no patient ${request.params.id}`);
    const [summary] = await findPatients(db, [request.params.id]);
    return ctx.render(request, reply, 'patient', {
      section: 'patients',
      patient: { id: request.params.id, name: summary?.name ?? request.params.id, path: `${base}${patientPath(request.params.id)}`, json: JSON.stringify(resource, null, 2) },
      encounters: await encountersOf(db, request.params.id),
      grantsHref: `${base}/grants?patient=${encodeURIComponent(request.params.id)}`,
      auditHref: `${base}/audit?patient=${encodeURIComponent(request.params.id)}`,
    });
  });

  app.post<{ Params: { id: string } }>('/admin/patients/:id/delete', { schema: { params: idParams('id'), body: { type: 'object', required: ['csrf'], properties: { csrf: { type: 'string', maxLength: 128 } } } } }, async (request, reply) => {
    await removePatient(deps, request.params.id);
    return ctx.redirect(reply, '/patients', 'patient-deleted');
  });
}
