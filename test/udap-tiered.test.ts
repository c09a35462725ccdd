import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { decodeJwt, exportJWK, SignJWT } from 'jose';

import { action, field, HttpBrowser } from '../bench/lib/flows.js';
import { freePort, testApp, TEST_ADMIN_TOKEN } from './helpers/app.js';
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
  assert.equal(title(step), 'Sign in', `expected the sign-in page of ${origin}`);
  return browser.go('POST', new URL(action(step.body, '/login'), origin).href, { csrf: field(step.body, 'csrf'), username, password });
}

async function approve(browser: Browser, origin: string, step: Step): Promise<Step> {
  assert.match(title(step), /^Allow /, `expected the consent page of ${origin}, got ${title(step)}`);
  const scopes = choices(step.body, 'scope').filter((c) => c.checked).map((c) => c.value);
  return browser.go('POST', new URL(action(step.body, '/consent'), origin).href, { csrf: field(step.body, 'csrf'), decision: 'approve', scope: scopes });
}

async function pick(browser: Browser, origin: string, step: Step, patient: string): Promise<Step> {
  assert.ok(choices(step.body, 'patient').some((c) => c.value === patient), `patient ${patient} is offered: ${title(step)}`);
  return browser.go('POST', new URL(action(step.body, '/patient'), origin).href, { csrf: field(step.body, 'csrf'), patient });
}

function appCallback(step: Step): Record<string, string> {
  if (!step.appUrl?.startsWith(`${REDIRECT_URI}?`)) assert.fail(`expected a redirect to the app, got ${title(step)}: ${step.body.slice(0, 300)}`);
  return Object.fromEntries(new URL(step.appUrl).searchParams);
}

describeEachDatabase('UDAP Tiered OAuth: this server as data holder and as identity provider', (ctx, kind) => {
  let pki: TestPki;
  let idpDatabase: TestDatabase;
  let a: Instance;
  let b: Instance;
  let appId: string;

  before(async () => {
    pki = await TestPki.create([]);
    idpDatabase = await createTestDatabase(kind);
    b = await instance(idpDatabase.database, pki, 'b', {});
    a = await instance(ctx.current.database, pki, 'a', { link: 'operator' });
    appId = (await createClient(a.app, { client_name: 'Tiered App', redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code'], token_endpoint_auth_method: 'none', scope: APP_SCOPE })).client_id;
  });
  after(async () => {
    await a.app.close();
    await b.app.close();
    await idpDatabase.drop();
    await pki.close();
  });

  const admin = (instance: Instance, method: 'GET' | 'POST' | 'DELETE', url: string, payload?: Record<string, unknown>) =>
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
    assert.ok(started.step.appUrl?.startsWith(`${b.issuer}/auth?`), `A sends the browser to B's authorization endpoint: ${title(started.step)}`);
    const idpRequest = new URL(started.step.appUrl);
    let step = await browser.go('GET', idpRequest.href);
    if (title(step) === 'Sign in') step = await signIn(browser, b.issuer, step, username, password);
    if (/^Allow /.test(title(step))) step = await approve(browser, b.issuer, step);
    assert.ok(step.appUrl?.startsWith(`${a.issuer}/tiered-oauth/callback?`), `B sends the browser back to A's callback: ${title(step)}`);
    return { verifier: started.verifier, step: await browser.go('GET', step.appUrl), idpRequest };
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

    // Back at A, signed in as the linked clinician: the patient picker, then consent.
    let step = await pick(browser, a.issuer, back, 'demo-henry-nguyen');
    step = await approve(browser, a.issuer, step);
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
});

void randomUUID;
void generateKeyPairSync;
void createServer;
void exportJWK;
void SignJWT;
export type { IncomingMessage, Server, AddressInfo };
