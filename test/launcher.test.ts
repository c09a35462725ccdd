import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance, LightMyRequestResponse } from 'fastify';

import { startFhirServer } from '../src/fhir/server.js';
import { MISSING_PATIENT } from '../src/smart/simulated-errors.js';
import { createUser, updateUser } from '../src/users/users.js';
import { testApp, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { Browser, choices, decodeEntities, inputValue } from './helpers/browser.js';
import { clientAssertion, clientKey, JWT_BEARER } from './helpers/assertions.js';
import { registerClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { AMY, DANIEL, testRecords } from './helpers/fhir-data.js';
import { callback, consent, exchange, login, REDIRECT_URI, startAuthorization, title, tokenRequest, type Authorization } from './helpers/flow.js';

/**
 * The sandbox launcher (issue 13, items 4 and 5), driven as a developer's browser and their app would: the
 * options reach the app as the context, pages and errors they name. The app under test is typed in, not
 * registered (an unregistered app, registered by the launcher in sandbox mode), at https://app.example.
 */
const LAUNCH_URL = 'https://app.example/launch';
const APP = 'my-sandbox-app';
const EHR_SCOPE = 'launch openid fhirUser patient/*.rs offline_access';

interface TokenResponse {
  readonly access_token: string;
  readonly refresh_token?: string;
  readonly patient?: string;
  readonly encounter?: string;
  readonly intent?: string;
  readonly need_patient_banner?: boolean;
  readonly smart_style_url?: string;
  readonly fhirContext?: readonly { readonly reference: string; readonly role?: string }[];
}
interface OAuthError {
  readonly error: string;
  readonly error_description: string;
}
interface Bundle {
  readonly entry?: { readonly resource: { readonly resourceType: string; readonly id: string; readonly subject?: { readonly reference: string } } }[];
}
interface Outcome {
  readonly resourceType: string;
  readonly issue: { readonly code: string }[];
}
interface AuditRow {
  readonly type: string;
  readonly client_id: string | null;
  readonly patient_id: string | null;
  readonly details: Record<string, unknown>;
}

function errorAtAppOf(flow: Authorization): OAuthError {
  const params = callback(flow);
  return { error: params.error!, error_description: params.error_description! };
}

const SANDBOX = { SANDBOX: 'true', SEED_DEMO: 'true', REGISTRATION: '', REGISTRATION_STATUS: '' };

describeEachDatabase('sandbox launcher', (ctx) => {
  let app: FastifyInstance;
  let upstream: Awaited<ReturnType<typeof startFhirServer>>;

  before(async () => {
    upstream = await startFhirServer();
    await upstream.fhir.load(testRecords() as never);
    app = await testApp(ctx.current.database, { ...SANDBOX, FHIR_UPSTREAMS: `${TEST_FHIR_BASE}=${upstream.url}` });
  });
  after(async () => {
    await app.close();
    await upstream.close();
  });

  /** The launcher form submitted in a browser; `fields` on top of an unregistered public app. */
  const submit = async (browser: Browser, fields: Record<string, string | string[]>): Promise<LightMyRequestResponse> => {
    const page = await browser.send('GET', '/launcher');
    assert.equal(page.statusCode, 200);
    return browser.send('POST', '/launcher', { csrf: inputValue(page.body, 'csrf'), app: 'custom', client_id: APP, client_type: 'public', launch_url: LAUNCH_URL, redirect_uri: REDIRECT_URI, go: 'launch', ...fields });
  };

  /** Launches, then follows the app's launch URL into an authorization request as the app would. */
  const launch = async (fields: Record<string, string | string[]>, scope = EHR_SCOPE): Promise<Authorization> => {
    const browser = new Browser(app, TEST_ISSUER);
    const res = await submit(browser, fields);
    assert.equal(res.statusCode, 303, res.body);
    const target = new URL(String(res.headers.location));
    assert.equal(`${target.origin}${target.pathname}`, LAUNCH_URL);
    assert.equal(target.searchParams.get('iss'), TEST_FHIR_BASE);
    return startAuthorization(app, { client_id: APP, scope, launch: target.searchParams.get('launch')!, aud: target.searchParams.get('iss')! }, { browser });
  };

  const errorAtApp = errorAtAppOf;

  const fhir = (token: string, path: string) => app.inject({ method: 'GET', url: `/fhir/${path}`, headers: { authorization: `Bearer ${token}` } });

  it('shows the launch URL and a fhirclient configuration before launching, and audits the launch', async () => {
    const browser = new Browser(app, TEST_ISSUER);
    const res = await submit(browser, { go: 'prepare', patient: AMY, user: 'demo-clinician' });
    assert.equal(res.statusCode, 200, res.body);
    const launchUrl = decodeEntities(/id="launch-url">([^<]+)</.exec(res.body)![1]!);
    const url = new URL(launchUrl);
    assert.equal(`${url.origin}${url.pathname}`, LAUNCH_URL);
    assert.equal(url.searchParams.get('iss'), TEST_FHIR_BASE);
    const config = JSON.parse(decodeEntities(/id="fhirclient-config"[^>]*>([^<]+)</.exec(res.body)![1]!)) as Record<string, unknown>;
    assert.deepEqual(config, { clientId: APP, scope: 'launch openid fhirUser patient/*.rs user/*.rs offline_access', redirectUri: REDIRECT_URI, iss: TEST_FHIR_BASE });
    await app.runtime.audit.flush();
    const rows = (await ctx.current.database.db.selectFrom('audit_events').select(['type', 'client_id', 'patient_id', 'details']).where('type', '=', 'launch.created').execute()) as AuditRow[];
    const row = rows.at(-1)!;
    assert.equal(row.client_id, APP);
    assert.equal(row.patient_id, AMY);
    assert.equal(row.details.via, 'sandbox launcher');
    // The launch URL works: the app's authorization request reaches sign-in.
    const flow = await startAuthorization(app, { client_id: APP, scope: EHR_SCOPE, launch: url.searchParams.get('launch')! }, { browser });
    assert.equal(title(flow.page), 'Sign in');
  });

  it('an EHR launch with its context: the app gets patient, encounter, fhirContext, intent, banner and style, and only that patient\'s data', async () => {
    const flow = await launch(
      { patient: AMY, encounter: 'demo-enc-amy-1', fhir_context: 'DiagnosticReport/dr-1\nCondition/cond-amy https://example.org/role', intent: 'reconcile', need_patient_banner: 'true', smart_style_url: 'https://ehr.example/style.json' },
      `${EHR_SCOPE} launch/encounter`,
    );
    await login(flow, 'clinician', 'clinician-demo');
    await consent(flow);
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    const token = res.json<TokenResponse>();
    assert.equal(token.patient, AMY);
    assert.equal(token.encounter, 'demo-enc-amy-1');
    assert.equal(token.intent, 'reconcile');
    assert.equal(token.need_patient_banner, true);
    assert.equal(token.smart_style_url, 'https://ehr.example/style.json');
    assert.deepEqual(token.fhirContext, [{ reference: 'DiagnosticReport/dr-1' }, { reference: 'Condition/cond-amy', role: 'https://example.org/role' }]);
    const observations = await fhir(token.access_token, 'Observation');
    assert.equal(observations.statusCode, 200, observations.body);
    const subjects = new Set(observations.json<Bundle>().entry!.map((e) => e.resource.subject?.reference));
    assert.deepEqual([...subjects], [`Patient/${AMY}`]);
  });

  it('skips sign-in (as the user chosen) and consent: the authorization request comes straight back with a code', async () => {
    const flow = await launch({ patient: DANIEL, user: 'demo-clinician', skip_login: 'true', skip_consent: 'true' });
    // The launcher's page and its form (2 requests), then /auth, the interaction (signed in, launch taken, decided)
    // and one resume: no second interaction and resume for the sign-in alone.
    assert.equal(flow.browser.requests, 5);
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.json<TokenResponse>().patient, DANIEL);
    const id = await app.inject({ method: 'GET', url: `/fhir/Patient/${DANIEL}`, headers: { authorization: `Bearer ${res.json<TokenResponse>().access_token}` } });
    assert.equal(id.statusCode, 200);
  });

  it('several patients: the picker offers exactly those', async () => {
    const flow = await launch({ patient: [AMY, DANIEL], user: 'demo-clinician', skip_login: 'true' });
    assert.match(title(flow.page), /^Allow .* to access the record of the patient you choose\?$/, 'the picker, asking for consent too');
    assert.deepEqual(choices(flow.page.res.body, 'patient').map((c) => c.value).sort(), [AMY, DANIEL].sort());
    // The decision's patient is checked as the picker's own answer is: one of those offered, not any in the directory.
    const body = flow.page.res.body;
    const action = /<form method="post" action="([^"]*\/consent)"/.exec(body)![1]!;
    const scope = choices(body, 'scope').filter((o) => o.checked).map((o) => o.value);
    const other = await flow.browser.send('POST', action, { csrf: inputValue(body, 'csrf'), patient: 'demo-henry-nguyen', decision: 'approve', scope });
    assert.equal(other.statusCode, 400);
    assert.match(other.body, /That patient cannot be chosen here/);
    const chosen = await flow.browser.send('POST', action, { csrf: inputValue(body, 'csrf'), patient: DANIEL, decision: 'approve', scope });
    assert.equal(chosen.statusCode, 303, chosen.body);
    flow.page = await flow.browser.go('GET', String(chosen.headers.location));
    assert.equal((await exchange(app, flow)).json<{ patient?: string }>().patient, DANIEL);
  });

  it("lists and skips sign-in as app users, never operators: the launcher names none, refuses one, and a launch whose user became one since asks for the password", async () => {
    await createUser(ctx.current.database.db, { id: 'sandbox-operator', username: 'sandbox-operator', password: 'operator-password', fhirUser: 'Practitioner/demo-practitioner', name: 'Sandbox Operator', roles: ['clinician', 'admin'] });
    const browser = new Browser(app, TEST_ISSUER);
    // Nor does the launcher name operators among its users: its page is public, their names are not for it.
    const select = /<select id="user" name="user">([\s\S]*?)<\/select>/.exec((await browser.send('GET', '/launcher')).body)?.[1] ?? '';
    const offered = [...select.matchAll(/<option value="([^"]+)"/g)].map((m) => m[1]);
    assert.ok(offered.includes('demo-clinician'), `app users are offered: ${offered.join(' ')}`);
    assert.ok(!offered.includes('sandbox-operator'), `no operator is: ${offered.join(' ')}`);
    const refused = await submit(browser, { patient: AMY, user: 'sandbox-operator', skip_login: 'true', skip_consent: 'true' });
    assert.equal(refused.statusCode, 400);
    assert.match(decodeEntities(refused.body), /skip sign-in: sandbox-operator is an operator \(admin\), who signs in with a password; choose another user, or leave sign-in on/);
    // A clinician's launch with sign-in skipped; the clinician is made an auditor before the app takes it.
    await createUser(ctx.current.database.db, { id: 'soon-auditor', username: 'soon-auditor', password: 'auditor-password', fhirUser: 'Practitioner/demo-practitioner', name: 'Soon Auditor', roles: ['clinician'] });
    const launched = await submit(browser, { patient: AMY, user: 'soon-auditor', skip_login: 'true', skip_consent: 'true' });
    assert.equal(launched.statusCode, 303, launched.body);
    await updateUser(ctx.current.database.db, 'soon-auditor', { roles: ['clinician', 'auditor'] });
    const target = new URL(String(launched.headers.location));
    const flow = await startAuthorization(app, { client_id: APP, scope: EHR_SCOPE, launch: target.searchParams.get('launch')!, aud: TEST_FHIR_BASE }, { browser });
    assert.equal(title(flow.page), 'Sign in', 'the sign-in page, not a code');
  });

  it('needs a user to skip sign-in, a well-formed fhirContext, and a client_id no registered app holds', async () => {
    const browser = new Browser(app, TEST_ISSUER);
    const noUser = await submit(browser, { skip_login: 'true' });
    assert.equal(noUser.statusCode, 400);
    assert.match(noUser.body, /skip sign-in: choose the user to sign in as/);
    const badContext = await submit(browser, { fhir_context: 'not a reference' });
    assert.equal(badContext.statusCode, 400);
    assert.match(decodeEntities(badContext.body), /fhirContext: "not a reference" is not "Type\/id"/);
    const taken = await submit(browser, { client_id: 'demo-app' });
    assert.equal(taken.statusCode, 409);
    assert.match(taken.body, /client_id demo-app belongs to a registered app/);
    const page = await browser.send('GET', '/launcher');
    const json = await app.inject({ method: 'POST', url: '/launcher', headers: { accept: 'application/json', cookie: `smart_launcher=${browser.cookie('smart_launcher')!}` }, payload: { csrf: inputValue(page.body, 'csrf'), app: 'custom', client_id: 'x', redirect_uri: 'javascript:alert(1)' } });
    assert.equal(json.statusCode, 400);
    assert.equal(json.json<OAuthError>().error, 'invalid_request');
  });

  it('the form\'s token is bound to the browser that loaded it: another site cannot make a browser launch, and sign in, as it chooses', async () => {
    const launches = async () => {
      await app.runtime.audit.flush();
      return (await ctx.current.database.db.selectFrom('audit_events').select('seq').where('type', '=', 'launch.created').execute()).length;
    };
    const mine = new Browser(app, TEST_ISSUER);
    const theirs = new Browser(app, TEST_ISSUER);
    const myPage = await mine.send('GET', '/launcher');
    assert.match(String(myPage.headers['set-cookie']), /^smart_launcher=[A-Za-z0-9_-]{22}; Path=\/launcher; HttpOnly; SameSite=Lax$/);
    const myToken = inputValue(myPage.body, 'csrf');
    const theirToken = inputValue((await theirs.send('GET', '/launcher')).body, 'csrf');
    assert.notEqual(myToken, theirToken, 'each browser its own token');
    const again = await mine.send('GET', '/launcher?tab=standalone');
    assert.equal(inputValue(again.body, 'csrf'), myToken, 'the same browser keeps its token: forms in several tabs all work');
    assert.equal(again.headers['set-cookie'], undefined);

    const fields = { app: 'demo-app', user: 'demo-clinician', skip_login: 'true', go: 'launch' };
    const before = await launches();
    // A cross-site form post carries no SameSite=Lax cookie; the token is one the other site loaded for itself.
    const crossSite = await app.inject({
      method: 'POST',
      url: '/launcher',
      headers: { accept: 'text/html,application/xhtml+xml', origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' },
      payload: new URLSearchParams({ csrf: theirToken, ...fields }).toString(),
    });
    assert.equal(crossSite.statusCode, 403);
    assert.equal(crossSite.headers['content-type'], 'text/html; charset=utf-8');
    assert.equal(crossSite.headers.location, undefined);
    assert.match(crossSite.body, /<h1 id="error-title">Not allowed<\/h1>/);
    assert.match(crossSite.body, /<dd>the launcher form has expired or was not loaded in this browser: reload the launcher<\/dd>/);
    assert.equal((await mine.send('POST', '/launcher', { csrf: theirToken, ...fields })).statusCode, 403, 'another browser\'s token');
    assert.equal((await mine.send('POST', '/launcher', { ...fields })).statusCode, 400, 'no token at all fails the form\'s schema');
    const forged = new Browser(app, TEST_ISSUER);
    forged.setCookie('smart_launcher', 'A'.repeat(22), '/launcher');
    assert.equal((await forged.send('POST', '/launcher', { csrf: myToken, ...fields })).statusCode, 403, 'a nonce of one\'s own making');
    assert.equal(await launches(), before, 'nothing was launched');

    const mineLaunched = await mine.send('POST', '/launcher', { csrf: myToken, ...fields });
    assert.equal(mineLaunched.statusCode, 303, mineLaunched.body);
    assert.equal(await launches(), before + 1);
  });

  it('a symmetric app: registered with a secret shown once, which authenticates it at the token endpoint', async () => {
    const browser = new Browser(app, TEST_ISSUER);
    const res = await submit(browser, { client_id: 'sym-app', client_type: 'symmetric', go: 'prepare', user: 'demo-clinician', skip_login: 'true', skip_consent: 'true', patient: AMY });
    assert.equal(res.statusCode, 200, res.body);
    const secret = /id="client-secret">([^<]+)</.exec(res.body)![1]!;
    const launchUrl = new URL(decodeEntities(/id="launch-url">([^<]+)</.exec(res.body)![1]!));
    const flow = await startAuthorization(app, { client_id: 'sym-app', scope: EHR_SCOPE, launch: launchUrl.searchParams.get('launch')! }, { browser });
    const { code } = callback(flow);
    const token = await tokenRequest(app, { grant_type: 'authorization_code', code: code!, redirect_uri: REDIRECT_URI, code_verifier: flow.verifier }, { authorization: `Basic ${Buffer.from(`sym-app:${secret}`).toString('base64')}` });
    assert.equal(token.statusCode, 200, token.body);
    const again = await submit(browser, { client_id: 'sym-app', client_type: 'symmetric', go: 'prepare' });
    assert.doesNotMatch(again.body, /id="client-secret"/, 'shown once');
  });

  it('an asymmetric app: registered with the public JWKS pasted, it authenticates with private_key_jwt', async () => {
    const key = await clientKey('ES384');
    const browser = new Browser(app, TEST_ISSUER);
    const res = await submit(browser, { client_id: 'jwt-app', client_type: 'asymmetric', jwks: JSON.stringify({ keys: [key.jwk] }), user: 'demo-clinician', skip_login: 'true', skip_consent: 'true', patient: AMY });
    assert.equal(res.statusCode, 303, res.body);
    const flow = await startAuthorization(app, { client_id: 'jwt-app', scope: EHR_SCOPE, launch: new URL(String(res.headers.location)).searchParams.get('launch')! }, { browser });
    const params = { grant_type: 'authorization_code', code: callback(flow).code!, redirect_uri: REDIRECT_URI, code_verifier: flow.verifier, client_assertion_type: JWT_BEARER };
    const token = await tokenRequest(app, { ...params, client_assertion: await clientAssertion(key, { clientId: 'jwt-app', audience: `${TEST_ISSUER}/token` }) });
    assert.equal(token.statusCode, 200, token.body);
    assert.equal(token.json<TokenResponse>().patient, AMY);
    const badJwks = await submit(browser, { client_id: 'jwt-app-2', client_type: 'asymmetric', jwks: '{not json' });
    assert.equal(badJwks.statusCode, 400);
    assert.match(badJwks.body, /JWKS: not JSON/);
  });

  it('PKCE policy: required by default; an app let off may authorize without it, and its code exchanges without a verifier', async () => {
    const withoutPkce = { code_challenge: '', code_challenge_method: '' };
    const required = await launch({ patient: AMY, user: 'demo-clinician', skip_login: 'true', skip_consent: 'true' });
    const refused = await startAuthorization(app, { client_id: APP, scope: EHR_SCOPE, launch: 'unused', ...withoutPkce }, { browser: required.browser });
    assert.deepEqual(errorAtApp(refused), { error: 'invalid_request', error_description: 'Authorization Server policy requires PKCE to be used for this request' });
    const browser = new Browser(app, TEST_ISSUER);
    const res = await submit(browser, { client_id: 'no-pkce-app', pkce: 'optional', patient: AMY, user: 'demo-clinician', skip_login: 'true', skip_consent: 'true' });
    assert.equal(res.statusCode, 303, res.body);
    const launchId = new URL(String(res.headers.location)).searchParams.get('launch')!;
    const flow = await startAuthorization(app, { client_id: 'no-pkce-app', scope: EHR_SCOPE, launch: launchId, ...withoutPkce }, { browser });
    const token = await tokenRequest(app, { grant_type: 'authorization_code', code: callback(flow).code!, redirect_uri: REDIRECT_URI, client_id: 'no-pkce-app' });
    assert.equal(token.statusCode, 200, token.body);
    assert.equal(token.json<TokenResponse>().patient, AMY);
  });

  it('simulates an invalid and an expired launch: invalid_request at the app', async () => {
    for (const simulate of ['launch_invalid', 'launch_expired']) {
      const flow = await launch({ patient: AMY, simulate });
      assert.deepEqual(errorAtApp(flow), { error: 'invalid_request', error_description: 'launch is unknown or expired: the EHR must create a new one' }, simulate);
    }
  });

  it('simulates a bad aud: invalid_request at the app, before any page', async () => {
    const flow = await launch({ patient: AMY, simulate: 'bad_aud' });
    assert.deepEqual(errorAtApp(flow), { error: 'invalid_request', error_description: 'aud is not a FHIR server this server issues tokens for (simulated by the sandbox launcher)' });
  });

  it('simulates the user denying consent: access_denied at the app', async () => {
    const flow = await launch({ patient: AMY, user: 'demo-clinician', skip_login: 'true', simulate: 'consent_denied' });
    assert.deepEqual(errorAtApp(flow), { error: 'access_denied', error_description: 'the user denied access (simulated by the sandbox launcher)' });
  });

  it('simulates a token endpoint failure and bad client credentials: the code exchange fails, and no token is left', async () => {
    for (const [simulate, status, error] of [
      ['token_failure', 500, { error: 'server_error', error_description: 'the token endpoint failed (simulated by the sandbox launcher)' }],
      ['bad_client_credentials', 401, { error: 'invalid_client', error_description: 'client authentication failed (simulated by the sandbox launcher)' }],
    ] as const) {
      const flow = await launch({ patient: AMY, user: 'demo-clinician', skip_login: 'true', skip_consent: 'true', simulate });
      const res = await exchange(app, flow);
      assert.equal(res.statusCode, status, simulate);
      assert.deepEqual(res.json<OAuthError>(), error);
      const again = await exchange(app, flow);
      assert.equal(again.json<OAuthError>().error, 'invalid_grant', 'the code is spent');
    }
  });

  it('simulates an invalid refresh token: the first token works, the refresh gets invalid_grant', async () => {
    const flow = await launch({ patient: AMY, user: 'demo-clinician', skip_login: 'true', skip_consent: 'true', simulate: 'invalid_refresh_token' });
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    const token = res.json<TokenResponse>();
    assert.equal((await fhir(token.access_token, `Patient/${AMY}`)).statusCode, 200);
    const refreshed = await tokenRequest(app, { grant_type: 'refresh_token', refresh_token: token.refresh_token!, client_id: APP });
    assert.equal(refreshed.statusCode, 400);
    assert.deepEqual(refreshed.json<OAuthError>(), { error: 'invalid_grant', error_description: 'the refresh token is invalid (simulated by the sandbox launcher)' });
  });

  it('simulates an expired access token: the FHIR server answers 401 invalid_token; a refresh gets a working one', async () => {
    const flow = await launch({ patient: AMY, user: 'demo-clinician', skip_login: 'true', skip_consent: 'true', simulate: 'expired_access_token' });
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    const read = await fhir(res.json<TokenResponse>().access_token, `Patient/${AMY}`);
    assert.equal(read.statusCode, 401);
    assert.match(String(read.headers['www-authenticate']), /error="invalid_token"/);
    const refreshed = await tokenRequest(app, { grant_type: 'refresh_token', refresh_token: res.json<TokenResponse>().refresh_token!, client_id: APP });
    assert.equal(refreshed.statusCode, 200, refreshed.body);
  });

  it('simulates a patient not found: the token names a patient the FHIR server answers 404 for', async () => {
    const flow = await launch({ patient: AMY, user: 'demo-clinician', skip_login: 'true', skip_consent: 'true', simulate: 'patient_not_found' });
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    const token = res.json<TokenResponse>();
    assert.equal(token.patient, MISSING_PATIENT);
    const read = await fhir(token.access_token, `Patient/${MISSING_PATIENT}`);
    assert.equal(read.statusCode, 404);
    assert.equal(read.json<Outcome>().resourceType, 'OperationOutcome');
    assert.equal(read.json<Outcome>().issue[0]!.code, 'not-found');
  });

  it('the standalone tab gives the iss and the client settings to paste', async () => {
    const browser = new Browser(app, TEST_ISSUER);
    const page = await browser.send('GET', '/launcher?tab=standalone');
    assert.equal(page.statusCode, 200);
    assert.match(page.body, new RegExp(`<code class="copy">${TEST_FHIR_BASE}</code>`));
    const res = await browser.send('POST', '/launcher', { csrf: inputValue(page.body, 'csrf'), tab: 'standalone', app: 'demo-app' });
    assert.equal(res.statusCode, 200, res.body);
    const config = JSON.parse(decodeEntities(/id="fhirclient-config"[^>]*>([^<]+)</.exec(res.body)![1]!)) as Record<string, unknown>;
    assert.deepEqual(config, { clientId: 'demo-app', scope: 'launch/patient openid fhirUser patient/*.rs offline_access', redirectUri: `${TEST_ISSUER}/sample-app/`, iss: TEST_FHIR_BASE });
  });
});

describeEachDatabase('unregistered apps in sandbox mode', (ctx) => {
  let app: FastifyInstance;
  before(async () => {
    app = await testApp(ctx.current.database, SANDBOX);
  });
  after(() => app.close());

  interface ClientRow {
    readonly metadata: { readonly redirect_uris: readonly string[]; readonly token_endpoint_auth_method: string };
  }
  const stored = async (clientId: string): Promise<ClientRow | undefined> =>
    (await ctx.current.database.db.selectFrom('clients').select('metadata').where('client_id', '=', clientId).executeTakeFirst()) as ClientRow | undefined;

  it('any client_id with any redirect URI the client rules accept: signed in, consented, a token; PKCE optional', async () => {
    const flow = await startAuthorization(app, { client_id: 'never-registered', scope: 'openid launch/patient patient/*.rs', code_challenge: '', code_challenge_method: '' });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    const res = await exchange(app, flow, { code_verifier: '' });
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.json<TokenResponse>().patient, AMY);
    assert.deepEqual((await stored('never-registered'))?.metadata.redirect_uris, [REDIRECT_URI]);
    assert.equal((await stored('never-registered'))?.metadata.token_endpoint_auth_method, 'none');
    const audit = await ctx.current.database.db.selectFrom('audit_events').select(['type', 'details']).where('client_id', '=', 'never-registered').where('type', '=', 'client.created').execute();
    assert.equal(audit.length, 1);
  });

  it('a sandbox app asked for with another redirect URI gains it; a registered app does not', async () => {
    const first = await startAuthorization(app, { client_id: 'roaming-app', scope: 'openid launch/patient' });
    assert.doesNotMatch(first.page.res.body, /invalid_redirect_uri|invalid_client/);
    const elsewhere = 'https://elsewhere.example/cb';
    const second = await startAuthorization(app, { client_id: 'roaming-app', scope: 'openid launch/patient', redirect_uri: elsewhere });
    assert.doesNotMatch(second.page.res.body, /invalid_redirect_uri|invalid_client/);
    assert.deepEqual((await stored('roaming-app'))?.metadata.redirect_uris, [REDIRECT_URI, elsewhere]);

    await registerClient(app, { client_id: 'real-app', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], response_types: ['code'] });
    const stray = await startAuthorization(app, { client_id: 'real-app', scope: 'openid launch/patient', redirect_uri: elsewhere });
    assert.match(stray.page.res.body, /invalid_redirect_uri/);
    assert.deepEqual((await stored('real-app'))?.metadata.redirect_uris, [REDIRECT_URI]);
  });

  it('a redirect URI the client rules refuse registers nothing', async () => {
    const flow = await startAuthorization(app, { client_id: 'plain-http-app', scope: 'openid launch/patient', redirect_uri: 'http://app.example/cb' });
    assert.match(flow.page.res.body, /invalid_client/);
    assert.equal(await stored('plain-http-app'), undefined);
  });
});

describeEachDatabase('sandbox launcher, sandbox mode off', (ctx) => {
  let app: FastifyInstance;
  before(async () => {
    app = await testApp(ctx.current.database, { SANDBOX: 'false' });
  });
  after(() => app.close());

  it('there is no launcher, and an unregistered client_id is refused', async () => {
    assert.equal((await app.inject({ method: 'GET', url: '/launcher' })).statusCode, 404);
    assert.equal((await app.inject({ method: 'POST', url: '/launcher', payload: { csrf: 'x', app: 'custom', client_id: APP, redirect_uri: REDIRECT_URI } })).statusCode, 404);
    const flow = await startAuthorization(app, { client_id: APP, scope: 'openid launch/patient' });
    assert.match(flow.page.res.body, /invalid_client/);
  });

  it('a sandbox app left in the database keeps no sandbox setting: PKCE is required of it', async () => {
    await registerClient(app, { client_id: 'left-over', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], response_types: ['code'], sandbox_app: { pkce: 'optional' } });
    const flow = await startAuthorization(app, { client_id: 'left-over', scope: 'openid launch/patient', code_challenge: '', code_challenge_method: '' });
    assert.deepEqual(errorAtAppOf(flow), { error: 'invalid_request', error_description: 'Authorization Server policy requires PKCE to be used for this request' });
  });
});
