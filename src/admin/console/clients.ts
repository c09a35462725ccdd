import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

import { HttpProblem } from '../../errors.js';
import { queryAudit } from '../../audit/audit.js';
import { listClients, type ClientRecord } from '../../clients/registry.js';
import type { ClientStatus } from '../../db/tables/clients.js';
import { idParams } from '../schemas.js';
import { addClient, changeClient, checkNewClient, CLIENT_METADATA_PROPERTIES, decideRegistration, existingClient, newClientSecret, newInitialAccessToken, removeClient, type ClientInput } from '../operations/clients.js';
import { checked, lines, noticeOf, text, words, type ConsoleContext, type FormValue } from './context.js';
import { eventView, when } from './views.js';
import { operatorEvent } from './session.js';

const PAGE = 50;
const formBody = { type: 'object', required: ['csrf'], properties: { csrf: { type: 'string', maxLength: 128 } }, additionalProperties: { anyOf: [{ type: 'string', maxLength: 20_000 }, { type: 'array', maxItems: 50, items: { type: 'string', maxLength: 2048 } }] } } as const;
type Form = Record<string, FormValue>;

/** The metadata the form edits; other properties a client registered itself with are kept as they are. */
const EDITED = ['client_name', 'redirect_uris', 'grant_types', 'token_endpoint_auth_method', 'token_endpoint_auth_signing_alg', 'jwks_uri', 'jwks', 'scope', 'launch_uri', 'logo_uri', 'client_uri', 'policy_uri', 'tos_uri', 'contacts', 'consent'] as const;

/** The form's fields as client metadata: empty fields are absent. */
function metadataOf(form: Form): Record<string, unknown> {
  let jwks: unknown;
  const jwksText = text(form.jwks, 'jwks');
  if (jwksText) {
    try {
      jwks = JSON.parse(jwksText);
    } catch {
      throw HttpProblem.invalid('jwks is not JSON: paste a JWK Set, {"keys": [ … ]}');
    }
  }
  const grantTypes = checked(form.grant_types);
  const metadata: Record<string, unknown> = {
    client_name: text(form.client_name, 'client_name'),
    redirect_uris: lines(form.redirect_uris, 'redirect_uris'),
    grant_types: grantTypes.length ? grantTypes : undefined,
    token_endpoint_auth_method: text(form.token_endpoint_auth_method, 'token_endpoint_auth_method'),
    token_endpoint_auth_signing_alg: text(form.token_endpoint_auth_signing_alg, 'token_endpoint_auth_signing_alg'),
    jwks_uri: text(form.jwks_uri, 'jwks_uri'),
    jwks,
    scope: words(form.scope, 'scope').join(' ') || undefined,
    launch_uri: text(form.launch_uri, 'launch_uri'),
    logo_uri: text(form.logo_uri, 'logo_uri'),
    client_uri: text(form.client_uri, 'client_uri'),
    policy_uri: text(form.policy_uri, 'policy_uri'),
    tos_uri: text(form.tos_uri, 'tos_uri'),
    contacts: lines(form.contacts, 'contacts'),
    consent: text(form.consent, 'consent'),
  };
  return metadata;
}

/** The form's values, as given back to the form (after an error) or taken from a client (to edit it). */
function formValues(source: Record<string, unknown>): Record<string, string | string[]> {
  const list = (v: unknown) => (Array.isArray(v) ? v.map(String).join('\n') : '');
  const str = (v: unknown) => (typeof v === 'string' ? v : '');
  return {
    client_id: str(source.client_id),
    client_name: str(source.client_name),
    redirect_uris: list(source.redirect_uris),
    grant_types: Array.isArray(source.grant_types) ? source.grant_types.map(String) : ['authorization_code'],
    token_endpoint_auth_method: str(source.token_endpoint_auth_method) || 'client_secret_basic',
    token_endpoint_auth_signing_alg: str(source.token_endpoint_auth_signing_alg),
    jwks_uri: str(source.jwks_uri),
    jwks: source.jwks && typeof source.jwks === 'object' ? JSON.stringify(source.jwks, null, 2) : str(source.jwks),
    scope: str(source.scope),
    launch_uri: str(source.launch_uri),
    logo_uri: str(source.logo_uri),
    client_uri: str(source.client_uri),
    policy_uri: str(source.policy_uri),
    tos_uri: str(source.tos_uri),
    contacts: list(source.contacts),
    consent: str(source.consent) || 'required',
    status: str(source.status) || 'active',
  };
}

/** Field values as they came in a form, for showing the form again after an error. */
function submitted(form: Form): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(form)) {
    if (key === 'csrf') continue;
    out[key] = key === 'redirect_uris' || key === 'contacts' ? lines(value, key) : key === 'grant_types' ? checked(value) : typeof value === 'string' ? value : '';
  }
  return out;
}

const defined = (metadata: Record<string, unknown>) => Object.fromEntries(Object.entries(metadata).filter(([, v]) => v !== undefined && !(Array.isArray(v) && !v.length)));

const statusLabel: Record<ClientStatus, string> = { pending: 'Pending approval', active: 'Active', suspended: 'Suspended' };

const authMethods = CLIENT_METADATA_PROPERTIES.token_endpoint_auth_method.enum;
const signingAlgs = CLIENT_METADATA_PROPERTIES.token_endpoint_auth_signing_alg.enum;
const grantTypes = CLIENT_METADATA_PROPERTIES.grant_types.items.enum;

/** Clients: list and search, create, read, edit, approve or reject a registration, suspend, rotate the secret, delete. */
export async function clientPages(app: FastifyInstance, ctx: ConsoleContext): Promise<void> {
  const { deps, base } = ctx;
  const { db } = deps;
  const clientPath = (id: string) => `/clients/${encodeURIComponent(id)}`;

  function formPage(request: FastifyRequest, reply: FastifyReply, mode: 'new' | 'edit', values: Record<string, unknown>, extra: { clientId?: string; error?: string; status?: number } = {}) {
    return ctx.render(request, reply, 'client-form', {
      section: 'clients',
      mode,
      action: mode === 'new' ? `${base}/clients` : `${base}${clientPath(extra.clientId!)}`,
      cancel: mode === 'new' ? `${base}/clients` : `${base}${clientPath(extra.clientId!)}`,
      clientId: extra.clientId ?? null,
      values: formValues(values),
      authMethods,
      signingAlgs,
      grantTypes,
      error: extra.error ?? null,
    }, extra.status ?? 200);
  }

  async function clientPage(request: FastifyRequest, reply: FastifyReply, client: ClientRecord, extra: { secret?: string; notice?: string | null } = {}) {
    const decisions = await queryAudit(db, { client: client.client_id, type: 'client.', newestFirst: true, limit: 20 });
    const meta = client.metadata;
    return ctx.render(request, reply, 'client', {
      section: 'clients',
      notice: extra.notice ?? null,
      secret: extra.secret ?? null,
      client: {
        id: client.client_id,
        path: `${base}${clientPath(client.client_id)}`,
        name: typeof meta.client_name === 'string' ? meta.client_name : client.client_id,
        status: client.status,
        statusLabel: statusLabel[client.status],
        hasSecret: client.has_secret,
        created: when(client.created_at),
        updated: when(client.updated_at),
        version: client.updated_at.toISOString(),
        metadata: Object.entries(meta)
          .filter(([key]) => key !== 'client_id')
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([key, value]) => ({ key, value: typeof value === 'string' ? value : JSON.stringify(value, null, 1) })),
      },
      history: decisions.map(eventView),
    });
  }

  async function listPage(request: FastifyRequest, reply: FastifyReply, query: { q?: string | undefined; status?: ClientStatus | '' | undefined; after?: string | undefined; notice?: string | undefined }, extra: { initialAccessToken?: { token: string; expiresIn: number } } = {}) {
    const { q, after } = query;
    const status = query.status || undefined;
    const items = await listClients(db, { q, status, after, limit: PAGE });
    const params = new URLSearchParams({ ...(q ? { q } : {}), ...(status ? { status } : {}) });
    return ctx.render(request, reply, 'clients', {
      section: 'clients',
      notice: noticeOf(query.notice),
      q: q ?? '',
      status: status ?? '',
      statuses: Object.entries(statusLabel).map(([value, label]) => ({ value, label })),
      paged: !!after,
      first: `${base}/clients${params.size ? `?${params.toString()}` : ''}`,
      next: items.length === PAGE ? `${base}/clients?${new URLSearchParams({ ...Object.fromEntries(params), after: items.at(-1)!.client_id }).toString()}` : null,
      registrationTokens: deps.config.registration === 'token' ? `${base}/clients/registration-token` : null,
      initialAccessToken: extra.initialAccessToken ?? null,
      clients: items.map((c) => ({
        id: c.client_id,
        href: `${base}${clientPath(c.client_id)}`,
        name: typeof c.metadata.client_name === 'string' ? c.metadata.client_name : '',
        status: c.status,
        statusLabel: statusLabel[c.status],
        auth: typeof c.metadata.token_endpoint_auth_method === 'string' ? c.metadata.token_endpoint_auth_method : '',
        grants: Array.isArray(c.metadata.grant_types) ? c.metadata.grant_types.join(', ') : '',
        created: when(c.created_at),
      })),
    });
  }

  app.get<{ Querystring: { q?: string; status?: ClientStatus | ''; after?: string; notice?: string } }>(
    '/admin/clients',
    { schema: { querystring: { type: 'object', properties: { q: { type: 'string', maxLength: 200 }, status: { type: 'string', enum: ['pending', 'active', 'suspended', ''] }, after: { type: 'string', maxLength: 256 }, notice: { type: 'string', maxLength: 64 } } } } },
    async (request, reply) => listPage(request, reply, request.query),
  );

  // An initial access token for dynamic registration (REGISTRATION=token, RFC 7591 §3), shown once.
  app.post<{ Body: { expires_in: string } }>(
    '/admin/clients/registration-token',
    { schema: { body: { type: 'object', required: ['csrf', 'expires_in'], properties: { csrf: { type: 'string', maxLength: 128 }, expires_in: { type: 'string', enum: ['3600', '86400', '604800'] } } } } },
    async (request, reply) => {
      const expiresIn = Number(request.body.expires_in);
      const token = await newInitialAccessToken(deps, operatorEvent(request), expiresIn);
      return listPage(request, reply, {}, { initialAccessToken: { token, expiresIn } });
    },
  );

  app.get('/admin/clients/new', async (request, reply) => formPage(request, reply, 'new', {}));

  app.post<{ Body: Form }>('/admin/clients', { schema: { body: formBody } }, async (request, reply) => {
    let created;
    try {
      const input = checkNewClient(defined({ client_id: text(request.body.client_id, 'client_id'), status: text(request.body.status, 'status'), ...metadataOf(request.body) }));
      created = await addClient(deps, operatorEvent(request), input);
    } catch (error) {
      if (!(error instanceof HttpProblem) || error.statusCode >= 500) throw error;
      return formPage(request, reply, 'new', submitted(request.body), { error: error.message, status: error.statusCode });
    }
    return clientPage(request, reply, created.record, { secret: created.secret, notice: noticeOf('client-created') });
  });

  app.get<{ Params: { id: string }; Querystring: { notice?: string } }>(
    '/admin/clients/:id',
    { schema: { params: idParams('id'), querystring: { type: 'object', properties: { notice: { type: 'string', maxLength: 64 } } } } },
    async (request, reply) => clientPage(request, reply, await existingClient(deps, request.params.id), { notice: noticeOf(request.query.notice) }),
  );

  app.get<{ Params: { id: string } }>('/admin/clients/:id/edit', { schema: { params: idParams('id') } }, async (request, reply) => {
    const client = await existingClient(deps, request.params.id);
    return formPage(request, reply, 'edit', client.metadata, { clientId: client.client_id });
  });

  app.post<{ Params: { id: string }; Body: Form }>('/admin/clients/:id', { schema: { params: idParams('id'), body: formBody } }, async (request, reply) => {
    const client = await existingClient(deps, request.params.id);
    try {
      const wanted = metadataOf(request.body);
      // Only what changed, and what was emptied as absent: the audit names exactly the fields changed.
      const changes: ClientInput = {};
      for (const key of EDITED) {
        const next = defined({ [key]: wanted[key] })[key];
        const current = client.metadata[key] ?? (key === 'consent' ? 'required' : undefined);
        if (JSON.stringify(next) !== JSON.stringify(current)) changes[key] = next;
      }
      if (Object.keys(changes).length) {
        checkNewClient(defined(wanted));
        await changeClient(deps, operatorEvent(request), client.client_id, changes);
      }
    } catch (error) {
      if (!(error instanceof HttpProblem) || error.statusCode >= 500) throw error;
      return formPage(request, reply, 'edit', submitted(request.body), { clientId: client.client_id, error: error.message, status: error.statusCode });
    }
    return ctx.redirect(reply, clientPath(client.client_id), 'client-updated');
  });

  // `reviewed`: the registration's updated_at as the page showed it (its forms always send it); a registration
  // changed since is not decided. An approval without it (a request not from the page) is refused.
  const decisionBody = { type: 'object', required: ['csrf'], properties: { csrf: { type: 'string', maxLength: 128 }, reason: { type: 'string', maxLength: 1000 }, reviewed: { type: 'string', maxLength: 40 } } } as const;
  for (const decision of ['approve', 'reject'] as const) {
    app.post<{ Params: { id: string }; Body: { reason?: string; reviewed?: string } }>(`/admin/clients/:id/${decision}`, { schema: { params: idParams('id'), body: decisionBody } }, async (request, reply) => {
      await decideRegistration(deps, operatorEvent(request), request.params.id, decision, request.body.reason?.trim() || undefined, request.body.reviewed || undefined);
      return ctx.redirect(reply, clientPath(request.params.id), decision === 'approve' ? 'client-approved' : 'client-rejected');
    });
  }

  const csrfBody = { type: 'object', required: ['csrf'], properties: { csrf: { type: 'string', maxLength: 128 } } } as const;
  for (const [action, status] of [['suspend', 'suspended'], ['activate', 'active']] as const) {
    app.post<{ Params: { id: string } }>(`/admin/clients/:id/${action}`, { schema: { params: idParams('id'), body: csrfBody } }, async (request, reply) => {
      await changeClient(deps, operatorEvent(request), request.params.id, { status });
      return ctx.redirect(reply, clientPath(request.params.id), status === 'active' ? 'client-activated' : 'client-suspended');
    });
  }

  app.post<{ Params: { id: string } }>('/admin/clients/:id/secret', { schema: { params: idParams('id'), body: csrfBody } }, async (request, reply) => {
    const rotated = await newClientSecret(deps, operatorEvent(request), request.params.id);
    return clientPage(request, reply, rotated.record, { secret: rotated.secret });
  });

  app.post<{ Params: { id: string } }>('/admin/clients/:id/delete', { schema: { params: idParams('id'), body: csrfBody } }, async (request, reply) => {
    await removeClient(deps, operatorEvent(request), request.params.id);
    return ctx.redirect(reply, '/clients', 'client-deleted');
  });
}
