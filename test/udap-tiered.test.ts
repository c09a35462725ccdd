import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { decodeJwt, exportJWK, SignJWT } from 'jose';

import { action, field, hasForm, hiddenFields, HttpBrowser } from '../bench/lib/flows.js';
import { ConfigError } from '../src/config/config.js';
import { freePort, testApp, testConfig, TEST_ADMIN_TOKEN } from './helpers/app.js';
import { choices } from './helpers/browser.js';
import { createClient, form, pkce } from './helpers/clients.js';
import { createTestDatabase, describeEachDatabase, type TestDatabase } from './helpers/databases.js';
import { REDIRECT_URI } from './helpers/flow.js';
import { TestPki, type Party } from './helpers/udap-pki.js';

/**
 * UDAP Tiered OAuth (HL7 UDAP Security IG §6) between two instances of this server, both members of one test
 * community: A is the data holder the app talks to, B the identity provider where the person signs in. A
 * third, foreign IdP (a test double built with jose) misbehaves where B cannot: metadata signed outside the
 * community, an id_token with the wrong nonce or audience, a token endpoint that forgot our client.
 */
const APP_SCOPE = 'openid fhirUser udap launch/patient patient/*.rs';
const TIERED = { enabled: true, contact: 'mailto:ops@a.example', logoUri: 'https://a.example/logo.png' };

interface Instance {
  readonly app: FastifyInstance;
  readonly issuer: string;
}

/** One of this server, listening on loopback, its certificate naming its issuer and FHIR base. */
async function instance(database: TestDatabase['database'], pki: TestPki, name: string, tiered: Record<string, unknown>, party?: Party): Promise<Instance> {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const files = await pki.serverFiles(party ?? (await pki.issue([issuer, `${issuer}/fhir`])), name);
  const app = await testApp(database, {
    ISSUER: issuer,
    FHIR_BASE_URLS: `${issuer}/fhir`,
    OUTBOUND_ALLOW_PRIVATE: 'true',
    REGISTRATION_PER_HOUR: '0',
    SEED_DEMO: 'true',
    ADMIN_TOKEN: TEST_ADMIN_TOKEN,
    UDAP_CONFIG: await pki.configFile({ ...files, tieredOAuth: { ...TIERED, ...tiered } }),
  });
  await app.listen({ port, host: '127.0.0.1' });
  return { app, issuer };
}

/** A person's browser: one cookie jar per origin, as browsers keep them apart (host names differ here only by port). */
class Browser {
  readonly #jars = new Map<string, HttpBrowser>();

  jar(url: string): HttpBrowser {
    const origin = new URL(url).origin;
    let jar = this.#jars.get(origin);
    if (!jar) this.#jars.set(origin, (jar = new HttpBrowser(origin)));
    return jar;
  }

  /** A request, then redirects on that origin; where it leaves for another, the URL. */
  go(method: 'GET' | 'POST', url: string, body?: Record<string, string | string[]>) {
    return this.jar(url).follow(method, url, body);
  }
}

type Step = Awaited<ReturnType<Browser['go']>>;

function title(step: Step): string {
  return step.appUrl ? `redirect ${step.appUrl}` : (/<h1[^>]*>([\s\S]*?)<\/h1>/.exec(step.body)?.[1] ?? `(${step.status})`).trim();
}

async function signIn(browser: Browser, origin: string, step: Step, username: string, password: string): Promise<Step> {
  assert.equal(title(step), 'Sign in', `expected the sign-in page of ${origin}: ${step.body.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').slice(0, 600)}`);
  return browser.go('POST', new URL(action(step.body, '/login'), origin).href, { csrf: field(step.body, 'csrf'), username, password });
}

async function approve(browser: Browser, origin: string, step: Step, fields: Record<string, string> = {}): Promise<Step> {
  assert.match(title(step), /^Allow /, `expected the consent page of ${origin}, got ${title(step)}`);
  const scopes = choices(step.body, 'scope').filter((c) => c.checked).map((c) => c.value);
  return browser.go('POST', new URL(action(step.body, '/consent'), origin).href, { ...hiddenFields(step.body, '/consent'), ...fields, decision: 'approve', scope: scopes });
}

/** Chooses the patient and allows: on the picker where it asks for consent too, else on the picker and then the consent page. */
async function pickAndApprove(browser: Browser, origin: string, step: Step, patient: string): Promise<Step> {
  assert.ok(choices(step.body, 'patient').some((c) => c.value === patient), `patient ${patient} is offered: ${title(step)}`);
  if (!hasForm(step.body, '/patient')) return approve(browser, origin, step, { patient });
  return approve(browser, origin, await browser.go('POST', new URL(action(step.body, '/patient'), origin).href, { csrf: field(step.body, 'csrf'), patient }));
}

/** Where the browser was sent off the origin it was on, which must start with `prefix`. */
function leaves(step: Step, prefix: string): string {
  if (!step.appUrl?.startsWith(prefix)) assert.fail(`expected a redirect to ${prefix}…, got ${title(step)}`);
  return step.appUrl;
}

function appCallback(step: Step): Record<string, string> {
  if (!step.appUrl?.startsWith(`${REDIRECT_URI}?`)) assert.fail(`expected a redirect to the app, got ${title(step)}: ${step.body.slice(0, 300)}`);
  return Object.fromEntries(new URL(step.appUrl).searchParams);
}

/**
 * A foreign identity provider of the community, as small as a test double can be: it serves UDAP metadata
 * signed by `signer`, an OpenID Connect discovery and JWKS, registers anyone, answers every authentication
 * request at once for one person, and issues the id_token `mode` says: right, with another nonce, or for another
 * audience; or, `invalidClients` times, none but `invalid_client`.
 */
class ForeignIdp {
  mode: 'ok' | 'wrong-nonce' | 'wrong-aud' | 'unstorable-sub' | 'unstorable-name' | 'unstorable-error' = 'ok';
  /** How many token requests to come are answered invalid_client (the IdP forgot the client). */
  invalidClients = 0;
  registrations = 0;
  readonly #key = generateKeyPairSync('rsa', { modulusLength: 2048 });
  readonly #nonces = new Map<string, string>();
  #server!: Server;
  base = '';

  static async start(pki: TestPki, signedBy: 'community' | 'outsider'): Promise<ForeignIdp> {
    const idp = new ForeignIdp();
    idp.#server = createServer((req, res) => {
      void idp.#handle(req).then(({ status, body, location }) => {
        res.writeHead(status, { 'content-type': 'application/json', ...(location ? { location } : {}) }).end(body === undefined ? undefined : JSON.stringify(body));
      });
    });
    await new Promise<void>((resolve) => idp.#server.listen(0, '127.0.0.1', resolve));
    idp.base = `http://127.0.0.1:${(idp.#server.address() as AddressInfo).port}`;
    idp.#signer = await pki.issue([idp.base], signedBy === 'outsider' ? { ca: pki.rogueRoot } : {});
    return idp;
  }

  #signer!: Party;

  close(): Promise<void> {
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  async #handle(req: IncomingMessage): Promise<{ status: number; body?: unknown; location?: string }> {
    const url = new URL(req.url ?? '/', this.base);
    const now = Math.floor(Date.now() / 1000);
    const text = await new Promise<string>((resolve) => {
      let data = '';
      req.on('data', (chunk: Buffer) => (data += chunk.toString()));
      req.on('end', () => resolve(data));
    });
    switch (`${req.method ?? ''} ${url.pathname}`) {
      case 'GET /.well-known/udap': {
        const endpoints = { authorization_endpoint: `${this.base}/authorize`, token_endpoint: `${this.base}/token`, registration_endpoint: `${this.base}/reg` };
        const signed = await new SignJWT({ iss: this.base, sub: this.base, iat: now, exp: now + 3600, jti: randomUUID(), ...endpoints }).setProtectedHeader({ alg: 'RS256', x5c: this.#signer.x5c }).sign(this.#signer.privateKey);
        return { status: 200, body: { udap_versions_supported: ['1'], udap_profiles_supported: ['udap_dcr', 'udap_to'], scopes_supported: ['openid', 'udap'], ...endpoints, signed_metadata: signed } };
      }
      case 'GET /.well-known/openid-configuration':
        return { status: 200, body: { issuer: this.base, jwks_uri: `${this.base}/jwks` } };
      case 'GET /jwks':
        return { status: 200, body: { keys: [{ ...(await exportJWK(this.#key.publicKey)), kid: 'foreign-1', alg: 'RS256', use: 'sig' }] } };
      case 'POST /reg':
        this.registrations += 1;
        return { status: 201, body: { client_id: `foreign-client-${this.registrations}` } };
      case 'GET /authorize': {
        const code = randomUUID();
        this.#nonces.set(code, `${url.searchParams.get('client_id') ?? ''} ${url.searchParams.get('nonce') ?? ''}`);
        const back = new URL(url.searchParams.get('redirect_uri') ?? '');
        back.searchParams.set('code', code);
        back.searchParams.set('state', url.searchParams.get('state') ?? '');
        return { status: 302, location: back.href };
      }
      case 'POST /token': {
        if (this.invalidClients > 0) {
          this.invalidClients -= 1;
          return { status: 401, body: { error: 'invalid_client', error_description: 'unknown client' } };
        }
        if (this.mode === 'unstorable-error') return { status: 400, body: { error: 'invalid_grant', error_description: 'the code\u0000is spent' } };
        const [clientId = '', nonce = ''] = (this.#nonces.get(new URLSearchParams(text).get('code') ?? '') ?? ' ').split(' ');
        const idToken = await new SignJWT({ nonce: this.mode === 'wrong-nonce' ? 'not-the-nonce' : nonce, name: this.mode === 'unstorable-name' ? 'Foreign\u0000Person' : 'Foreign Person' })
          .setProtectedHeader({ alg: 'RS256', kid: 'foreign-1' })
          .setIssuer(this.base)
          .setSubject(this.mode === 'unstorable-sub' ? 'foreign\u0000person' : 'foreign-person')
          .setAudience(this.mode === 'wrong-aud' ? 'someone-else' : clientId)
          .setIssuedAt(now)
          .setExpirationTime(now + 300)
          .sign(this.#key.privateKey);
        return { status: 200, body: { access_token: 'foreign-access-token', token_type: 'Bearer', expires_in: 300, id_token: idToken } };
      }
      default:
        return { status: 404, body: { error: 'not_found' } };
    }
  }
}

describeEachDatabase('UDAP Tiered OAuth: this server as data holder and as identity provider', (ctx, kind) => {
  let pki: TestPki;
  let idpDatabase: TestDatabase;
  let a: Instance;
  let b: Instance;
  let appId: string;
  let foreign: ForeignIdp;
  let outsider: ForeignIdp;

  before(async () => {
    pki = await TestPki.create([]);
    foreign = await ForeignIdp.start(pki, 'community');
    outsider = await ForeignIdp.start(pki, 'outsider');
    idpDatabase = await createTestDatabase(kind);
    b = await instance(idpDatabase.database, pki, 'b', {});
    a = await instance(ctx.current.database, pki, 'a', { link: 'operator' });
    appId = (await createClient(a.app, { client_name: 'Tiered App', redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code'], token_endpoint_auth_method: 'none', scope: APP_SCOPE })).client_id;
  });
  after(async () => {
    await a.app.close();
    await b.app.close();
    await idpDatabase.drop();
    await foreign.close();
    await outsider.close();
    await pki.close();
  });

  const admin = (instance: Instance, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: Record<string, unknown>) =>
    instance.app.inject({ method, url: `/admin/api${url}`, headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` }, ...(payload ? { payload } : {}) });

  /** The app's authorization request at A, with udap and idp; up to where the browser leaves A. */
  async function authorize(browser: Browser, idp: string, extra: Record<string, string> = {}) {
    const { verifier, challenge } = pkce();
    const params = { response_type: 'code', client_id: appId, redirect_uri: REDIRECT_URI, scope: APP_SCOPE, state: 'app-state', aud: `${a.issuer}/fhir`, idp, code_challenge: challenge, code_challenge_method: 'S256', ...extra };
    return { verifier, step: await browser.go('GET', `${a.issuer}/auth?${form(params)}`) };
  }

  /** A → B → sign-in (and consent) at B → back at A. */
  async function throughB(browser: Browser, username: string, password: string): Promise<{ verifier: string; step: Step; idpRequest: URL }> {
    const started = await authorize(browser, b.issuer);
    const idpRequest = new URL(leaves(started.step, `${b.issuer}/auth?`));
    let step = await browser.go('GET', idpRequest.href);
    if (title(step) === 'Sign in') step = await signIn(browser, b.issuer, step, username, password);
    if (/^Allow /.test(title(step))) step = await approve(browser, b.issuer, step);
    return { verifier: started.verifier, step: await browser.go('GET', leaves(step, `${a.issuer}/tiered-oauth/callback?`)), idpRequest };
  }

  const registrationsAtB = async () => (await idpDatabase.database.db.selectFrom('udap_registrations').select('client_id').where('iss', '=', a.issuer).execute()).length;

  it('discovery advertises udap_to and the udap scope where Tiered OAuth is on', async () => {
    const res = await a.app.inject({ method: 'GET', url: '/.well-known/udap' });
    const body = res.json<{ udap_profiles_supported: string[]; scopes_supported: string[] }>();
    assert.deepEqual(body.udap_profiles_supported, ['udap_dcr', 'udap_authn', 'udap_authz', 'udap_to']);
    assert.ok(body.scopes_supported.includes('udap') && body.scopes_supported.includes('openid'));
  });

  it('end to end: A registers at B, the person signs in at B, A maps them to the linked local user, and the SMART launch goes on', async () => {
    const link = await admin(a, 'POST', '/tiered-oauth/links', { idp: b.issuer, sub: 'demo-patient', user_id: 'demo-clinician' });
    assert.equal(link.statusCode, 201, link.body);
    assert.equal(link.json<{ linked_by: string }>().linked_by, 'operator');

    const browser = new Browser();
    const { verifier, step: back, idpRequest } = await throughB(browser, 'patient', 'patient-demo');
    // IG §6: the data holder's authentication request to the IdP.
    const sent = Object.fromEntries(idpRequest.searchParams);
    assert.equal(sent.response_type, 'code');
    assert.equal(sent.scope, 'openid udap');
    assert.equal(sent.redirect_uri, `${a.issuer}/tiered-oauth/callback`);
    assert.equal(sent.code_challenge_method, 'S256');
    assert.ok(sent.nonce && sent.nonce.length >= 32 && sent.code_challenge && sent.state);
    assert.equal(sent.aud, undefined);
    assert.equal(sent.client_id, (await idpDatabase.database.db.selectFrom('udap_registrations').select('client_id').where('iss', '=', a.issuer).executeTakeFirstOrThrow()).client_id);
    // B signed the person in for the id_token only: no FHIR server named, none granted, from /auth to the resume.
    const atB = await idpDatabase.database.db.selectFrom('grant_contexts').select('fhir_base').where('client_id', '=', sent.client_id).execute();
    assert.deepEqual(atB, [], 'no launch context at B');

    // Back at A, signed in as the linked clinician: the patient picker, then consent.
    const step = await pickAndApprove(browser, a.issuer, back, 'demo-henry-nguyen');
    const { code, state } = appCallback(step);
    assert.equal(state, 'app-state');
    const token = await a.app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ grant_type: 'authorization_code', code: code!, redirect_uri: REDIRECT_URI, client_id: appId, code_verifier: verifier }) });
    assert.equal(token.statusCode, 200, token.body);
    const body = token.json<{ patient: string; scope: string; id_token: string }>();
    assert.equal(body.patient, 'demo-henry-nguyen');
    const idToken = decodeJwt(body.id_token);
    assert.equal(idToken.iss, a.issuer);
    assert.equal(idToken.sub, 'demo-clinician');
    assert.equal(idToken.fhirUser, `${a.issuer}/fhir/Practitioner/demo-practitioner`);
    assert.equal(await registrationsAtB(), 1);

    const events = await ctx.current.database.db.selectFrom('audit_events').select(['type', 'details']).where('type', 'in', ['tiered_oauth.registered', 'tiered_oauth.redirected', 'login.success']).orderBy('seq').execute();
    assert.deepEqual(events.map((e) => e.type), ['tiered_oauth.registered', 'tiered_oauth.redirected', 'login.success']);
    assert.deepEqual(events[2]!.details, { via: 'tiered_oauth', idp: b.issuer, link: 'existing' });
  });
  it('a second sign-in reuses the link and this server\'s registration at the IdP', async () => {
    const { step } = await throughB(new Browser(), 'patient', 'patient-demo');
    assert.match(title(step), /the record of the patient you choose/, 'the picker');
    assert.equal(await registrationsAtB(), 1);
    const registered = await ctx.current.database.db.selectFrom('audit_events').select('seq').where('type', '=', 'tiered_oauth.registered').execute();
    assert.equal(registered.length, 1);
    const links = await admin(a, 'GET', '/tiered-oauth/links?user_id=demo-clinician');
    const [link] = links.json<{ items: { idp: string; sub: string; last_used_at: string | null }[] }>().items;
    assert.equal(link?.idp, b.issuer);
    assert.equal(link.sub, 'demo-patient');
    assert.ok(link.last_used_at !== null);
  });

  it("a sign-in at the IdP by someone else's browser (the IdP link forwarded) does not sign in the browser that started it", async () => {
    // The attacker starts an authorization at A and sends the IdP's sign-in link to the victim, who signs in at
    // B as the person linked at A (the end-to-end test's link). A must not hand that sign-in to the attacker's
    // interaction: the state is bound to the browser that was sent to the IdP (OAuth 2.0 Security BCP §4.7).
    const attacker = new Browser();
    const started = await authorize(attacker, b.issuer);
    const idpRequest = new URL(leaves(started.step, `${b.issuer}/auth?`));
    const [uid] = idpRequest.searchParams.get('state')!.split('.');
    const victim = new Browser();
    let step = await signIn(victim, b.issuer, await victim.go('GET', idpRequest.href), 'patient', 'patient-demo');
    if (/^Allow /.test(title(step))) step = await approve(victim, b.issuer, step);
    const atCallback = await victim.go('GET', leaves(step, `${a.issuer}/tiered-oauth/callback?`));
    assert.equal(atCallback.status, 400);
    assert.match(atCallback.body, /started in another browser/);
    const refused = await ctx.current.database.db.selectFrom('audit_events').select(['details', 'outcome', 'client_id']).where('type', '=', 'tiered_oauth.failed').orderBy('seq', 'desc').executeTakeFirst();
    assert.deepEqual(refused, { details: { idp: b.issuer, step: 'callback', error: 'invalid_request', reason: 'answered to a browser without the cookie set when it was sent to the identity provider' }, outcome: 'failure', client_id: appId });
    const taken = await attacker.go('GET', `${a.issuer}/interaction/${uid!}`);
    assert.doesNotMatch(title(taken), /the record of the patient you choose|^Allow /, "the attacker's interaction is not signed in as the victim");
    leaves(taken, `${b.issuer}/auth?`);
  });

  it('an identity linked to no local user under the operator policy: a page for the person, then access_denied for the app', async () => {
    const browser = new Browser();
    const { step } = await throughB(browser, 'clinician', 'clinician-demo');
    assert.equal(step.status, 403);
    assert.equal(title(step), 'Your account is not linked yet');
    assert.ok(step.body.includes(b.issuer) && step.body.includes('demo-clinician'), 'the page names the IdP and the identifier to give the operator');
    const back = await browser.go('POST', new URL(action(step.body, '/abort'), a.issuer).href, { csrf: field(step.body, 'csrf') });
    assert.deepEqual(appCallback(back), { error: 'access_denied', error_description: `the person signed in at ${b.issuer} is not linked to a user of this server`, state: 'app-state', iss: a.issuer });
    const failed = await ctx.current.database.db.selectFrom('audit_events').select('details').where('type', '=', 'tiered_oauth.failed').execute();
    assert.deepEqual(failed.at(-1)?.details, { idp: b.issuer, sub: 'demo-clinician', step: 'link', error: 'access_denied', reason: 'not linked to a local user' });
  });

  it('the admin API links and unlinks, and says why it cannot', async () => {
    const duplicate = await admin(a, 'POST', '/tiered-oauth/links', { idp: b.issuer, sub: 'demo-patient', user_id: 'demo-patient' });
    assert.equal(duplicate.statusCode, 409, duplicate.body);
    assert.deepEqual(duplicate.json(), { error: 'conflict', error_description: `demo-patient at ${b.issuer} is linked to a user already: unlink it first` });
    const unknown = await admin(a, 'POST', '/tiered-oauth/links', { idp: b.issuer, sub: 'someone', user_id: 'nobody' });
    assert.equal(unknown.statusCode, 404, unknown.body);
    const notUrl = await admin(a, 'POST', '/tiered-oauth/links', { idp: 'idp.example', sub: 'someone', user_id: 'demo-patient' });
    assert.equal(notUrl.statusCode, 400, notUrl.body);
    const created = await admin(a, 'POST', '/tiered-oauth/links', { idp: 'https://idp.example', sub: 'someone', user_id: 'demo-patient' });
    assert.equal(created.statusCode, 201, created.body);
    const removed = await admin(a, 'DELETE', `/tiered-oauth/links?${form({ idp: 'https://idp.example', sub: 'someone' })}`);
    assert.equal(removed.statusCode, 204, removed.body);
    const again = await admin(a, 'DELETE', `/tiered-oauth/links?${form({ idp: 'https://idp.example', sub: 'someone' })}`);
    assert.equal(again.statusCode, 404, again.body);
    assert.deepEqual(again.json(), { error: 'not_found', error_description: 'someone at https://idp.example is not linked to a user' });
  });

  it('idp that is not a URL: invalid_request before any page', async () => {
    const { step } = await authorize(new Browser(), 'not-a-url');
    assert.deepEqual(appCallback(step), { error: 'invalid_request', error_description: 'idp must be the https base URL of an identity provider; "not-a-url" is not', state: 'app-state', iss: a.issuer });
  });

  it('an IdP whose metadata is signed by a certificate outside the trust anchors: invalid_idp', async () => {
    const { step } = await authorize(new Browser(), outsider.base);
    const answer = appCallback(step);
    assert.equal(answer.error, 'invalid_idp');
    assert.match(answer.error_description!, new RegExp(`^${outsider.base} is not a trusted identity provider: its signed_metadata is not trusted: the certificate chain does not lead to a trust anchor of this community`));
    assert.equal(answer.state, 'app-state');
    assert.equal(outsider.registrations, 0);
  });

  it('a state that is not the one sent comes back to the app as server_error; an unknown one gets a page', async () => {
    const browser = new Browser();
    const started = await authorize(browser, b.issuer);
    let step = await signIn(browser, b.issuer, await browser.go('GET', started.step.appUrl!), 'patient', 'patient-demo');
    step = await approve(browser, b.issuer, step);
    const callback = new URL(step.appUrl!);
    const [uid] = callback.searchParams.get('state')!.split('.');
    callback.searchParams.set('state', `${uid!}.forged-state-value`);
    const back = await browser.go('GET', callback.href);
    assert.deepEqual(appCallback(back), { error: 'server_error', error_description: `the identity provider ${b.issuer} answered with a state that is not the one this server sent`, state: 'app-state', iss: a.issuer });

    callback.searchParams.set('state', 'no-such-interaction.x');
    const lost = await browser.go('GET', callback.href);
    assert.equal(lost.status, 400);
    assert.match(lost.body, /This sign-in cannot be continued/);
  });

  it('an answer that names another issuer (RFC 9207): invalid_idp', async () => {
    const browser = new Browser();
    const started = await authorize(browser, b.issuer);
    const step = await approve(browser, b.issuer, await signIn(browser, b.issuer, await browser.go('GET', leaves(started.step, `${b.issuer}/auth?`)), 'patient', 'patient-demo'));
    const callback = new URL(leaves(step, `${a.issuer}/tiered-oauth/callback?`));
    assert.equal(callback.searchParams.get('iss'), b.issuer, 'B names itself in its answers');
    callback.searchParams.set('iss', 'https://mix-up.example');
    const back = await browser.go('GET', callback.href);
    assert.deepEqual(appCallback(back), { error: 'invalid_idp', error_description: `the answer names the issuer https://mix-up.example, not ${b.issuer}`, state: 'app-state', iss: a.issuer });
  });

  it('an answer whose issuer is cut short mid-character: invalid_idp for the app, not a page that strands the person', async () => {
    const browser = new Browser();
    const started = await authorize(browser, b.issuer);
    const step = await approve(browser, b.issuer, await signIn(browser, b.issuer, await browser.go('GET', leaves(started.step, `${b.issuer}/auth?`)), 'patient', 'patient-demo'));
    const callback = new URL(leaves(step, `${a.issuer}/tiered-oauth/callback?`));
    // 199 characters, then one of two UTF-16 units: the description's cut at 200 falls inside it.
    const iss = `https://${'m'.repeat(191)}\u{1F600}.example`;
    callback.searchParams.set('iss', iss);
    const back = await browser.go('GET', callback.href);
    const answer = appCallback(back);
    assert.equal(answer.error, 'invalid_idp');
    assert.equal(answer.error_description, `the answer names the issuer ${iss.slice(0, 199)}…, not ${b.issuer}`);
  });

  for (const [mode, description] of [
    ['wrong-nonce', 'nonce is not the one this server sent'],
    ['wrong-aud', `aud: must be this server's client_id at the IdP, foreign-client-1`],
  ] as const) {
    it(`an id_token with the ${mode.replace('-', ' ')}: invalid_idp`, async () => {
      foreign.mode = mode;
      const browser = new Browser();
      const started = await authorize(browser, foreign.base);
      const atIdp = await browser.go('GET', started.step.appUrl!);
      const answer = appCallback(await browser.go('GET', atIdp.appUrl!));
      assert.deepEqual(answer, { error: 'invalid_idp', error_description: `the id_token of ${foreign.base} is not valid: ${description}`, state: 'app-state', iss: a.issuer });
    });
  }

  /** What the app gets back from an authorization through the foreign IdP answering in `mode`. */
  const appAnswerWith = async (mode: typeof foreign.mode) => {
    foreign.mode = mode;
    try {
      const browser = new Browser();
      const started = await authorize(browser, foreign.base);
      return appCallback(await browser.go('GET', (await browser.go('GET', started.step.appUrl!)).appUrl!));
    } finally {
      foreign.mode = 'ok';
    }
  };

  it('an id_token whose sub Postgres cannot store (NUL): invalid_idp for the app, not a server error', async () => {
    const answer = await appAnswerWith('unstorable-sub');
    assert.deepEqual(answer, { error: 'invalid_idp', error_description: `the id_token of ${foreign.base} is not valid: sub must be a string of 1 to 255 characters, without NUL or lone surrogates`, state: 'app-state', iss: a.issuer });
  });

  it('an IdP refusing the code in words Postgres cannot store (NUL): invalid_idp for the app, the words kept storable', async () => {
    const answer = await appAnswerWith('unstorable-error');
    assert.deepEqual(answer, { error: 'invalid_idp', error_description: `${foreign.base} refused the code: it answered 400: invalid_grant (the codeis spent)`, state: 'app-state', iss: a.issuer });
  });

  it('an IdP that no longer knows our client_id (invalid_client): A registers again and sends the person back there, once', async () => {
    foreign.mode = 'ok';
    assert.equal(foreign.registrations, 1);
    foreign.invalidClients = 1;
    const browser = new Browser();
    const first = await authorize(browser, foreign.base);
    assert.equal(new URL(leaves(first.step, `${foreign.base}/authorize?`)).searchParams.get('client_id'), 'foreign-client-1');
    const again = await browser.go('GET', leaves(await browser.go('GET', first.step.appUrl!), `${a.issuer}/tiered-oauth/callback?`));
    assert.equal(new URL(leaves(again, `${foreign.base}/authorize?`)).searchParams.get('client_id'), 'foreign-client-2');
    const done = await browser.go('GET', leaves(await browser.go('GET', again.appUrl!), `${a.issuer}/tiered-oauth/callback?`));
    assert.equal(title(done), 'Your account is not linked yet', 'the second attempt signed the person in');
    assert.equal(foreign.registrations, 2);

    foreign.invalidClients = 2;
    const retried = await authorize(browser, foreign.base);
    let step = await browser.go('GET', leaves(await browser.go('GET', retried.step.appUrl!), `${a.issuer}/tiered-oauth/callback?`));
    step = await browser.go('GET', leaves(await browser.go('GET', leaves(step, `${foreign.base}/authorize?`)), `${a.issuer}/tiered-oauth/callback?`));
    const answer = appCallback(step);
    assert.equal(answer.error, 'invalid_idp');
    assert.equal(answer.error_description, `${foreign.base} refused the code: it answered 401: invalid_client (unknown client)`);
    assert.equal(foreign.registrations, 3, 'one new registration per authorization, not a loop');
  });

  it('as identity provider, B keeps every other rule: openid without udap still needs aud', async () => {
    const client = (await idpDatabase.database.db.selectFrom('udap_registrations').select('client_id').where('iss', '=', a.issuer).executeTakeFirstOrThrow()).client_id;
    const { challenge } = pkce();
    const res = await b.app.inject({ method: 'GET', url: `/auth?${form({ response_type: 'code', client_id: client, redirect_uri: `${a.issuer}/tiered-oauth/callback`, scope: 'openid', state: 's', nonce: 'n', code_challenge: challenge, code_challenge_method: 'S256' })}` });
    assert.equal(res.statusCode, 303);
    const answer = Object.fromEntries(new URL(res.headers.location as string).searchParams);
    assert.equal(answer.error, 'invalid_request');
    assert.equal(answer.error_description, 'aud is required: the base URL of the FHIR server the app wants to access');
  });

  it('the create policy: a local user is made on first use, audited, and the launch goes on with it', async () => {
    const a2 = await instance(ctx.current.database, pki, 'a2', { link: 'create', createAs: 'Practitioner' });
    try {
      const client = await createClient(a2.app, { client_name: 'Tiered App 2', redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code'], token_endpoint_auth_method: 'none', scope: APP_SCOPE });
      const newcomer = await admin(b, 'POST', '/users', { username: 'newcomer', password: 'newcomer-password', fhirUser: 'Person/newcomer', name: 'Nina Newcomer' });
      assert.equal(newcomer.statusCode, 201, newcomer.body);
      const browser = new Browser();
      const { verifier, challenge } = pkce();
      const start = await browser.go('GET', `${a2.issuer}/auth?${form({ response_type: 'code', client_id: client.client_id, redirect_uri: REDIRECT_URI, scope: APP_SCOPE, state: 'app-state', aud: `${a2.issuer}/fhir`, idp: b.issuer, code_challenge: challenge, code_challenge_method: 'S256' })}`);
      let step = await signIn(browser, b.issuer, await browser.go('GET', start.appUrl!), 'newcomer', 'newcomer-password');
      step = await approve(browser, b.issuer, step);
      step = await browser.go('GET', step.appUrl!);
      step = await pickAndApprove(browser, a2.issuer, step, 'demo-henry-nguyen');
      const { code } = appCallback(step);
      const token = await a2.app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ grant_type: 'authorization_code', code: code!, redirect_uri: REDIRECT_URI, client_id: client.client_id, code_verifier: verifier }) });
      assert.equal(token.statusCode, 200, token.body);
      const idToken = decodeJwt(token.json<{ id_token: string }>().id_token);
      const links = (await admin(a2, 'GET', '/tiered-oauth/links')).json<{ items: { idp: string; sub: string; user_id: string; linked_by: string }[] }>().items;
      const link = links.find((l) => l.idp === b.issuer && l.sub === newcomer.json<{ id: string }>().id);
      assert.equal(link?.linked_by, 'auto');
      assert.equal(idToken.sub, link.user_id);
      assert.equal(idToken.fhirUser, `${a2.issuer}/fhir/Practitioner/${link.user_id}`);
      const created = await ctx.current.database.db.selectFrom('audit_events').select('details').where('type', '=', 'user.created').where('user_id', '=', link.user_id).executeTakeFirstOrThrow();
      assert.equal(created.details.by, 'tiered_oauth');
    } finally {
      await a2.app.close();
    }
  });
  it('the create policy, an id_token whose name Postgres cannot store (NUL): the name is left out, the user is made', async () => {
    const a3 = await instance(ctx.current.database, pki, 'a3', { link: 'create', createAs: 'Person' });
    foreign.mode = 'unstorable-name';
    try {
      const client = await createClient(a3.app, { client_name: 'Tiered App 3', redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code'], token_endpoint_auth_method: 'none', scope: 'openid fhirUser udap' });
      const browser = new Browser();
      const { challenge } = pkce();
      const start = await browser.go('GET', `${a3.issuer}/auth?${form({ response_type: 'code', client_id: client.client_id, redirect_uri: REDIRECT_URI, scope: 'openid fhirUser udap', state: 'app-state', aud: `${a3.issuer}/fhir`, idp: foreign.base, code_challenge: challenge, code_challenge_method: 'S256' })}`);
      const back = await browser.go('GET', (await browser.go('GET', leaves(start, `${foreign.base}/authorize?`))).appUrl!);
      assert.notEqual(back.status, 500, back.body.slice(0, 300));
      const link = (await admin(a3, 'GET', '/tiered-oauth/links')).json<{ items: { idp: string; sub: string; user_id: string }[] }>().items.find((l) => l.idp === foreign.base && l.sub === 'foreign-person');
      assert.ok(link, 'the person was linked to a new user');
      const user = (await admin(a3, 'GET', `/users/${link.user_id}`)).json<{ name: string }>();
      assert.equal(user.name, `foreign-person at ${new URL(foreign.base).host}`);
    } finally {
      foreign.mode = 'ok';
      await a3.app.close();
    }
  });

  it('a bad tieredOAuth setting stops the start, naming it', async () => {
    const problems = async (tieredOAuth: Record<string, unknown>): Promise<string[]> => {
      try {
        testConfig({ UDAP_CONFIG: await pki.configFile({ certificate: 'a.pem', privateKey: 'a.key', tieredOAuth }) });
      } catch (error) {
        assert.ok(error instanceof ConfigError, String(error));
        return error.problems.map((p) => p.replace(/^UDAP_CONFIG \(.*?\) /, ''));
      }
      return assert.fail('expected a ConfigError');
    };
    assert.deepEqual(await problems({ enabled: true }), [
      'communities[0].tieredOAuth.contact: is required when enabled: a mailto: address for the registrations this server makes at identity providers',
      'communities[0].tieredOAuth.logoUri: is required when enabled: an https URL of a logo for the registrations this server makes at identity providers',
    ]);
    assert.deepEqual(await problems({ ...TIERED, link: 'sometimes' }), ['communities[0].tieredOAuth.link: must be one of "operator", "create"']);
    assert.deepEqual(await problems({ ...TIERED, createAs: 'Person' }), ['communities[0].tieredOAuth.createAs: applies only with "link": "create"']);
    assert.deepEqual(await problems({ ...TIERED, idps: ['ftp://idp.example'] }), ['communities[0].tieredOAuth.idps[0]: must be an IdP base URL (http or https, no query or fragment)']);
    assert.deepEqual(await problems({ ...TIERED, logoUri: 'http://a.example/logo.png' }), ['communities[0].tieredOAuth.logoUri: must be an https URL']);
    assert.deepEqual(await problems({ ...TIERED, colour: 'blue' }), ['communities[0].tieredOAuth.colour: is not a known setting (enabled, idps, link, createAs, contact, logoUri, clientName)']);
  });
  it('a person linked to a disabled user: access_denied for the app', async () => {
    assert.equal((await admin(a, 'PATCH', '/users/demo-clinician', { disabled: true })).statusCode, 200);
    try {
      const { step } = await throughB(new Browser(), 'patient', 'patient-demo');
      assert.deepEqual(appCallback(step), { error: 'access_denied', error_description: `the user of this server linked to the person signed in at ${b.issuer} is disabled`, state: 'app-state', iss: a.issuer });
    } finally {
      assert.equal((await admin(a, 'PATCH', '/users/demo-clinician', { disabled: false })).statusCode, 200);
    }
  });
});

