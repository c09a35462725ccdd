import type { FastifyInstance } from 'fastify';

import type { ConsoleContext } from './context.js';

interface OpenApiOperation {
  summary?: string;
  parameters?: { name: string; in: string; required?: boolean; description?: string; schema?: Record<string, unknown> }[];
  requestBody?: { content?: Record<string, { schema?: unknown }> };
  responses?: Record<string, { description?: string }>;
}

const METHODS = ['get', 'post', 'put', 'patch', 'delete'] as const;

/**
 * The admin API's OpenAPI document as a page (GET /admin/api/docs): every operation with its parameters,
 * body schema and responses, rendered on the server from the same document as /admin/api/openapi.json, so
 * it needs no script and nothing from another origin. Public, like the document itself.
 */
export async function apiDocsPage(app: FastifyInstance, ctx: ConsoleContext): Promise<void> {
  app.get('/admin/api/docs', { config: { consolePublic: true } }, async (request, reply) => {
    const doc = app.swagger() as { info: { title: string; description?: string }; paths: Record<string, Partial<Record<(typeof METHODS)[number], OpenApiOperation>>> };
    const operations = Object.entries(doc.paths).flatMap(([path, item]) =>
      METHODS.filter((m) => item[m]).map((method) => {
        const op = item[method]!;
        return {
          id: `${method}-${path}`.replace(/[^A-Za-z0-9]+/g, '-').replace(/-$/, ''),
          method: method.toUpperCase(),
          path,
          summary: op.summary ?? '',
          parameters: (op.parameters ?? []).map((p) => ({ name: p.name, in: p.in, required: !!p.required, type: typeof p.schema?.type === 'string' ? p.schema.type : JSON.stringify(p.schema?.type ?? p.schema?.enum ?? ''), description: p.description ?? (Array.isArray(p.schema?.enum) ? `one of ${p.schema.enum.join(', ')}` : '') })),
          body: Object.entries(op.requestBody?.content ?? {}).map(([type, content]) => ({ type, schema: JSON.stringify(content.schema ?? {}, null, 2) })),
          responses: Object.entries(op.responses ?? {}).map(([status, r]) => ({ status, description: r.description ?? '' })),
        };
      }),
    );
    return ctx.render(request, reply, 'api-docs', { title: doc.info.title, description: doc.info.description ?? '', operations, json: `${ctx.base}/api/openapi.json` });
  });
}
