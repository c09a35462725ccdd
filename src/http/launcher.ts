import { randomBytes } from 'node:crypto';

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';

import type { AuditLog } from '../audit/audit.js';
import type { ClientCache } from '../clients/client-cache.js';
import { getClient, insertClient, launchableClients, updateClient } from '../clients/registry.js';
import { fhirBaseOf, type Config } from '../config/config.js';
import type { ReplicaReads } from '../db/replica.js';
import type { DB } from '../db/schema.js';
import type { FhirContextItem } from '../db/tables/launches.js';
import { encountersOf, findPatients, searchPatients, type PatientSummary } from '../directory/patients.js';
import { HttpProblem } from '../errors.js';
import { createLaunch } from '../launch/context.js';
import { saveLauncherOptions } from '../launch/launcher-options.js';
import type { SecretBox } from '../security/secret-box.js';
import { checkClientMetadata, ClientRuleError, isSandboxApp, SANDBOX_APP_PROPERTY, type PkcePolicy } from '../smart/client-rules.js';
import { SMART_CONFIGURATION_PATH } from '../smart/smart-configuration.js';
import { isSimulatedError, MISSING_PATIENT, SIMULATED_ERRORS } from '../smart/simulated-errors.js';
import { readCookie } from '../users/device-cookie.js';
import { getUser, listUsers, operatorRolesOf } from '../users/users.js';
import { launchInput } from './launch-input.js';
import { pageHeaders } from './page-headers.js';

/**
 * The sandbox launcher (on in sandbox mode only): plays the EHR for an app, as smart-launcher-v2 does. It
 * creates a launch with the context chosen (user, patients, encounter, fhirContext, intent, banner, style),
 * what the launch skips (sign-in, consent) and the error it simulates (src/smart/simulated-errors.ts); shows
 * the launch URL and a fhirclient configuration; and opens the app. An app that is not registered is
 * registered on the spot as a sandbox app with the client_id, redirect URI and client type typed in.
 */

export interface LauncherDeps {
  readonly config: Config;
  readonly db: Kysely<DB>;
  /** Where the form's lists are read (a replica when configured). */
  readonly replica: ReplicaReads;
  readonly box: SecretBox;
  readonly audit: AuditLog;
  readonly clients: ClientCache<unknown>;
}

export const CLIENT_TYPES = {
  public: { label: 'Public (no secret; PKCE)', method: 'none' },
  symmetric: { label: 'Confidential, symmetric (client secret)', method: 'client_secret_basic' },
  asymmetric: { label: 'Confidential, asymmetric (private_key_jwt)', method: 'private_key_jwt' },
} as const;
type ClientType = keyof typeof CLIENT_TYPES;

/** What an EHR launch asks for: SMART App Launch 2.2 §Scopes, the launch and the whole record. */
const EHR_SCOPE = 'launch openid fhirUser patient/*.rs user/*.rs offline_access';
const STANDALONE_SCOPE = 'launch/patient openid fhirUser patient/*.rs offline_access';

type Form = Record<string, string | string[] | undefined>;

const one = (value: string | string[] | undefined): string => (Array.isArray(value) ? (value[0] ?? '') : (value ?? '')).trim();
const many = (value: string | string[] | undefined): string[] => ([] as string[]).concat(value ?? []).map((v) => v.trim()).filter(Boolean);
const ID = /^[A-Za-z0-9\-.]{1,64}$/;
/** The client ids a sandbox app may have (RFC 6749 §A.1 is wider; ours stay URL-safe). */
export const SANDBOX_CLIENT_ID = /^[A-Za-z0-9._~-]{1,128}$/;
/** The cookie holding the browser's nonce, which the form's CSRF token is a MAC of (128 random bits). */
const LAUNCHER_COOKIE = 'smart_launcher';
const NONCE = /^[A-Za-z0-9_-]{22}$/;
const CSRF_PURPOSE = 'launcher-csrf';

const fields = (names: readonly string[]) => Object.fromEntries(names.map((n) => [n, { anyOf: [{ type: 'string', maxLength: 8192 }, { type: 'array', maxItems: 100, items: { type: 'string', maxLength: 256 } }] }]));
const FORM_FIELDS = ['app', 'client_id', 'launch_url', 'redirect_uri', 'client_type', 'pkce', 'jwks', 'jwks_uri', 'fhir_base', 'user', 'skip_login', 'patient', 'encounter', 'skip_consent', 'fhir_context', 'intent', 'need_patient_banner', 'smart_style_url', 'simulate', 'go', 'tab'];

export async function launcherRoutes(app: FastifyInstance, deps: LauncherDeps): Promise<void> {
  const { config, db, replica, box, audit } = deps;
  const basePath = config.basePath;
  const cookiePath = `${basePath}/launcher`;
  const secure = config.issuer.startsWith('https:') ? '; Secure' : '';

  /**
   * The launcher is open to whoever can load it, and a launch may sign its browser in without a password
   * (skip_login). So the form's token is a MAC of a nonce in a cookie set with the form: another site can
   * neither read the token nor send the cookie (SameSite=Lax: not on a cross-site POST), and cannot make a
   * browser launch, and so sign in, as it chooses (login CSRF). The browser's nonce is kept while it has one,
   * so that forms open in several tabs all work.
   */
  function csrfToken(request: FastifyRequest, reply: FastifyReply): string {
    let nonce = readCookie(request.headers.cookie, LAUNCHER_COOKIE);
    if (!nonce || !NONCE.test(nonce)) {
      nonce = randomBytes(16).toString('base64url');
      void reply.header('set-cookie', `${LAUNCHER_COOKIE}=${nonce}; Path=${cookiePath}; HttpOnly; SameSite=Lax${secure}`);
    }
    return box.mac(CSRF_PURPOSE, nonce);
  }

  function verifyCsrf(request: FastifyRequest, given: string): boolean {
    const nonce = readCookie(request.headers.cookie, LAUNCHER_COOKIE);
    return !!nonce && NONCE.test(nonce) && box.verifyMac(CSRF_PURPOSE, nonce, given);
  }

  async function form(request: FastifyRequest, reply: FastifyReply, query: { q?: string; tab?: string }, problem?: { status: number; message: string; values: Form }): Promise<FastifyReply> {
    const q = (query.q ?? '').slice(0, 200);
    const lists = replica.db('launcher-lists');
    const patients = await searchPatients(lists, q, 100);
    const encounters: { patient: PatientSummary; encounters: Awaited<ReturnType<typeof encountersOf>> }[] = [];
    for (const patient of patients) {
      const list = await encountersOf(lists, patient.id);
      if (list.length) encounters.push({ patient, encounters: list });
    }
    pageHeaders(reply, config);
    return reply.code(problem?.status ?? 200).view('launcher.ejs', {
      basePath,
      action: `${basePath}/launcher`,
      self: `${basePath}/launcher`,
      tab: query.tab === 'standalone' ? 'standalone' : 'ehr',
      csrf: csrfToken(request, reply),
      clients: await launchableClients(lists),
      // The EHR user in context: app users only (an operator's name is not for a public page; skip sign-in refuses them).
      users: await listUsers(lists, { limit: 100, appUsersOnly: true }),
      fhirBases: config.fhirBaseUrls,
      patients,
      encounters,
      q,
      clientTypes: Object.entries(CLIENT_TYPES).map(([value, t]) => ({ value, label: t.label })),
      simulations: Object.entries(SIMULATED_ERRORS).map(([value, s]) => ({ value, label: s.label, error: s.error })),
      defaultStyle: `${config.issuer}/smart-style.json`,
      sampleApp: { launchUrl: `${config.issuer}/sample-app/launch.html`, redirectUri: `${config.issuer}/sample-app/` },
      discovery: `${config.fhirBaseUrls[0]}${SMART_CONFIGURATION_PATH}`,
      values: problem?.values ?? {},
      problem: problem?.message ?? null,
      requestId: request.id,
    });
  }

  app.get<{ Querystring: { q?: string; tab?: string } }>(
    '/launcher',
    { schema: { querystring: { type: 'object', properties: { q: { type: 'string', maxLength: 200 }, tab: { type: 'string', enum: ['ehr', 'standalone'] } } } } },
    async (request, reply) => form(request, reply, request.query),
  );

  app.post<{ Body: Form }>(
    '/launcher',
    { schema: { body: { type: 'object', required: ['csrf'], properties: { csrf: { type: 'string', maxLength: 128 }, ...fields(FORM_FIELDS) } } } },
    async (request, reply) => {
      const body = request.body;
      if (!verifyCsrf(request, one(body.csrf))) throw HttpProblem.forbidden('the launcher form has expired or was not loaded in this browser: reload the launcher');
      const tab = one(body.tab) === 'standalone' ? 'standalone' : 'ehr';
      try {
        const chosen = await chooseApp(body, request);
        if (tab === 'standalone') return await standalone(reply, chosen);
        return await launch(request, reply, body, chosen);
      } catch (error) {
        if (!(error instanceof HttpProblem) || error.statusCode >= 500) throw error;
        // The form again, as filled in, saying what to change; a script gets the JSON error.
        if (!(request.headers.accept ?? '').includes('text/html')) throw error;
        return form(request, reply, { tab }, { status: error.statusCode, message: error.message, values: body });
      }
    },
  );

  interface ChosenApp {
    readonly clientId: string;
    readonly launchUrl: string | undefined;
    readonly redirectUri: string | undefined;
    readonly method: string;
    /** Shown once: when the launcher registered a symmetric sandbox app. */
    readonly secret: string | undefined;
  }

  /** The registered app chosen, or the one typed in, registered now as a sandbox app (SMART 2.2 §Client types). */
  async function chooseApp(body: Form, request: FastifyRequest): Promise<ChosenApp> {
    const choice = one(body.app);
    if (choice !== 'custom') {
      const registered = choice ? await getClient(db, choice) : undefined;
      if (!registered || registered.status !== 'active') throw HttpProblem.invalid(`app: choose a registered app, or "another app" to type one in`);
      const metadata = registered.metadata;
      const redirects = Array.isArray(metadata.redirect_uris) ? (metadata.redirect_uris as string[]) : [];
      return {
        clientId: registered.client_id,
        launchUrl: typeof metadata.launch_uri === 'string' ? metadata.launch_uri : undefined,
        redirectUri: redirects[0],
        method: typeof metadata.token_endpoint_auth_method === 'string' ? metadata.token_endpoint_auth_method : 'client_secret_basic',
        secret: undefined,
      };
    }
    const clientId = one(body.client_id);
    if (!SANDBOX_CLIENT_ID.test(clientId)) throw HttpProblem.invalid('client_id: 1 to 128 of A–Z a–z 0–9 . _ ~ -');
    const type = (one(body.client_type) || 'public') as ClientType;
    if (!Object.hasOwn(CLIENT_TYPES, type)) throw HttpProblem.invalid('client type: public, symmetric or asymmetric');
    const pkceChoice = one(body.pkce) || 'required';
    if (pkceChoice !== 'required' && pkceChoice !== 'optional') throw HttpProblem.invalid('PKCE: required or optional');
    const pkce: PkcePolicy = pkceChoice;
    const launchUrl = one(body.launch_url);
    const redirectUri = one(body.redirect_uri);
    if (!redirectUri) throw HttpProblem.invalid('redirect URI: the address the app receives the code at is required');
    const metadata: Record<string, unknown> = {
      client_name: `Sandbox app ${clientId}`,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: CLIENT_TYPES[type].method,
      [SANDBOX_APP_PROPERTY]: { pkce },
      ...(launchUrl ? { launch_uri: launchUrl } : {}),
    };
    if (type === 'asymmetric') {
      const jwks = one(body.jwks);
      const jwksUri = one(body.jwks_uri);
      if (jwks) {
        try {
          metadata.jwks = JSON.parse(jwks) as unknown;
        } catch {
          throw HttpProblem.invalid('JWKS: not JSON; paste the public key set, {"keys":[…]}');
        }
      } else if (jwksUri) metadata.jwks_uri = jwksUri;
    }
    try {
      checkClientMetadata(metadata, { writer: 'operator', vouched: true, allowHttpJwksUri: config.outboundAllowPrivate });
    } catch (error) {
      if (error instanceof ClientRuleError) throw HttpProblem.invalid(error.message);
      throw error;
    }
    const existing = await getClient(db, clientId);
    if (existing && !isSandboxApp(existing.metadata)) throw HttpProblem.conflict(`client_id ${clientId} belongs to a registered app: choose it from the list, or type another client_id`);
    const withSecret = type === 'symmetric';
    const saved = existing
      ? await updateClient(db, box, clientId, metadata, 'active', { withSecret })
      : await insertClient(db, box, clientId, metadata, 'active', { withSecret });
    deps.clients.invalidate(clientId);
    await audit.record({ type: existing ? 'client.updated' : 'client.created', actorType: 'anonymous', sourceIp: request.ip, requestId: request.id, clientId, details: { via: 'sandbox launcher', token_endpoint_auth_method: CLIENT_TYPES[type].method, redirect_uris: [redirectUri], pkce } });
    return { clientId, launchUrl: launchUrl || undefined, redirectUri, method: CLIENT_TYPES[type].method, secret: saved.secret };
  }

  /** The settings an app needs for a standalone launch (SMART 2.2 §Standalone launch). */
  async function standalone(reply: FastifyReply, chosen: ChosenApp): Promise<FastifyReply> {
    const iss = config.fhirBaseUrls[0]!;
    pageHeaders(reply, config);
    return reply.view('launcher-ready.ejs', {
      basePath,
      kind: 'standalone',
      back: `${basePath}/launcher?tab=standalone`,
      iss,
      discovery: `${iss}${SMART_CONFIGURATION_PATH}`,
      launchUrl: chosen.launchUrl ? withParams(chosen.launchUrl, { iss }) : null,
      expiresIn: null,
      clientId: chosen.clientId,
      secret: chosen.secret ?? null,
      config: fhirClientConfig(chosen, iss, STANDALONE_SCOPE),
    });
  }

  async function launch(request: FastifyRequest, reply: FastifyReply, body: Form, chosen: ChosenApp): Promise<FastifyReply> {
    if (!chosen.launchUrl) throw HttpProblem.invalid('launch URL: the app has none; type the address the EHR opens it at');
    const fhirBase = fhirBaseOf(config, one(body.fhir_base) || config.fhirBaseUrls[0]!);
    if (!fhirBase) throw HttpProblem.invalid('FHIR server: not one of this server\'s FHIR base URLs');
    const simulate = one(body.simulate) || undefined;
    if (simulate !== undefined && !isSimulatedError(simulate)) throw HttpProblem.invalid('simulated error: not one the launcher knows');
    const user = one(body.user) || undefined;
    const skipLogin = one(body.skip_login) === 'true';
    if (skipLogin && !user) throw HttpProblem.invalid('skip sign-in: choose the user to sign in as');
    // Anyone who can reach the launcher may use it: it signs in as app users (patients, clinicians), never as an
    // operator, whose sign-in is what stands between a visitor and a token carrying their roles.
    const operator = skipLogin && user ? await getUser(db, user) : undefined;
    if (operator && operatorRolesOf(operator).length) throw HttpProblem.invalid(`skip sign-in: ${user!} is an operator (${operatorRolesOf(operator).join(', ')}), who signs in with a password; choose another user, or leave sign-in on`);
    const patients = [...new Set(many(body.patient))];
    for (const id of patients) if (!ID.test(id)) throw HttpProblem.invalid(`patient: ${id} is not a FHIR id`);
    if (patients.length > 1 && (await findPatients(db, patients)).length !== patients.length) throw HttpProblem.invalid('patient: one of those chosen is not in the directory');
    const encounter = one(body.encounter) || undefined;
    if (encounter && patients.length !== 1) throw HttpProblem.invalid('encounter: choose exactly one patient to have an encounter in context');
    const smartStyle = one(body.smart_style_url) || undefined;
    if (smartStyle && !/^https?:\/\/[^\s]+$/.test(smartStyle)) throw HttpProblem.invalid('smart_style_url: an http(s) URL');

    const input = await launchInput(
      db,
      config,
      {
        aud: fhirBase,
        client_id: chosen.clientId,
        user,
        patient: patients.length === 1 ? patients[0] : undefined,
        encounter,
        fhirContext: parseFhirContext(one(body.fhir_context)),
        intent: one(body.intent) || undefined,
        need_patient_banner: one(body.need_patient_banner) === 'true',
        smart_style_url: smartStyle,
      },
      { inDirectory: true },
    );
    // patient_not_found: the launch names a patient no FHIR server here holds, as a stale EHR context would.
    const context = simulate === 'patient_not_found' ? { ...input, patient: MISSING_PATIENT, encounter: undefined } : input;
    const created = await createLaunch(db, box, context, simulate === 'launch_expired' ? -60 : undefined);
    const storedId = box.bearerId(created.launch);
    await saveLauncherOptions(db, storedId, { skipLogin, skipConsent: one(body.skip_consent) === 'true', simulate, patients: patients.length > 1 ? patients : undefined });
    await audit.record({
      type: 'launch.created',
      actorType: 'anonymous',
      sourceIp: request.ip,
      requestId: request.id,
      clientId: chosen.clientId,
      userId: user,
      patientId: context.patient,
      details: { via: 'sandbox launcher', launch_id: storedId, fhir_base: fhirBase, encounter: context.encounter, patients: patients.length > 1 ? patients : undefined, skip_login: skipLogin, skip_consent: one(body.skip_consent) === 'true', simulate },
    });
    // launch_invalid: the app gets a launch id that was never issued.
    const launchParam = simulate === 'launch_invalid' ? randomBytes(24).toString('base64url') : created.launch;
    const target = withParams(chosen.launchUrl, { iss: fhirBase, launch: launchParam });
    if (one(body.go) === 'launch') return reply.redirect(target, 303);
    pageHeaders(reply, config);
    return reply.view('launcher-ready.ejs', {
      basePath,
      kind: 'ehr',
      back: `${basePath}/launcher`,
      iss: fhirBase,
      discovery: `${fhirBase}${SMART_CONFIGURATION_PATH}`,
      launchUrl: target,
      expiresIn: simulate === 'launch_expired' ? 0 : created.expires_in,
      clientId: chosen.clientId,
      secret: chosen.secret ?? null,
      config: fhirClientConfig(chosen, fhirBase, EHR_SCOPE),
    });
  }
}

function withParams(url: string, params: Record<string, string>): string {
  const target = new URL(url);
  for (const [k, v] of Object.entries(params)) target.searchParams.set(k, v);
  return target.href;
}

/** The options fhirclient's `FHIR.oauth2.authorize` takes, as JSON to paste. */
function fhirClientConfig(chosen: { clientId: string; redirectUri: string | undefined; method: string; secret: string | undefined }, iss: string, scope: string): string {
  const options: Record<string, unknown> = { clientId: chosen.clientId, scope, redirectUri: chosen.redirectUri ?? '', iss };
  if (chosen.method === 'client_secret_basic') options.clientSecret = chosen.secret ?? '<the secret shown when the app was first set up here>';
  if (chosen.method === 'private_key_jwt') options.clientPrivateJwk = '<your private JWK (never share it)>';
  return JSON.stringify(options, null, 2);
}

/**
 * fhirContext items (SMART App Launch 2.2 §fhirContext), one a line: `Type/id`, optionally followed by a
 * role URL or token after a space.
 */
export function parseFhirContext(text: string): FhirContextItem[] | undefined {
  const items: FhirContextItem[] = [];
  for (const line of text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean)) {
    const [reference = '', role, ...rest] = line.split(/\s+/);
    if (rest.length || !/^[A-Z][A-Za-z]{1,63}\/[A-Za-z0-9\-.]{1,64}$/.test(reference)) throw HttpProblem.invalid(`fhirContext: "${line.slice(0, 80)}" is not "Type/id" optionally followed by a role`);
    items.push(role ? { reference, role } : { reference });
  }
  return items.length ? items : undefined;
}
