import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance, LightMyRequestResponse } from 'fastify';

import { testApp, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { Browser, decodeEntities, inputValue } from './helpers/browser.js';
import { basicAuth, createClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization, tokenRequest } from './helpers/flow.js';

/**
 * The operator console over HTTP, as a browser without JavaScript drives it: signing in (accounts with a
 * role, ADMIN_TOKEN, the throttle), every page, every action and what it changed (through the admin API)
 * and audited, and the refusals: no session, CSRF missing or forged, an auditor changing something, unknown
 * ids.
 */
const ADMIN_TOKEN = 'console-admin-token-0123456789abcdefghij';
const OPERATOR = { username: 'op-admin', password: 'operator-pass-1' };
const AUDITOR = { username: 'op-auditor', password: 'auditor-pass-1' };
type Body = Record<string, unknown>;

function h1(res: LightMyRequestResponse): string {
  return decodeEntities((/<h1[^>]*>([\s\S]*?)<\/h1>/.exec(res.body)?.[1] ?? `(${res.statusCode}, no h1)`).replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim());
}
function alertOf(res: LightMyRequestResponse): string | undefined {
  const m = /<p class="alert" role="alert">([\s\S]*?)<\/p>/.exec(res.body);
  return m ? decodeEntities(m[1]!) : undefined;
}
function noticeOf(res: LightMyRequestResponse): string | undefined {
  const m = /<p class="notice" role="status">([\s\S]*?)<\/p>/.exec(res.body);
  return m ? decodeEntities(m[1]!) : undefined;
}

describeEachDatabase('operator console', (ctx) => {
  let app: FastifyInstance;
  let operatorId: string;
  let auditorId: string;
  const api = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: unknown) =>
    app.inject({ method, url: `/admin/api${url}`, headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, ...(payload === undefined ? {} : { payload: payload as string }) });
  const events = (type: string) => app.runtime.database.db.selectFrom('audit_events').selectAll().where('type', '=', type).orderBy('seq').execute();

  before(async () => {
    app = await testApp(ctx.current.database, { ADMIN_TOKEN, SEED_DEMO: 'true', REGISTRATION: 'open', REGISTRATION_STATUS: 'pending', REGISTRATION_PER_HOUR: '0' });
    operatorId = (await api('POST', '/users', { username: OPERATOR.username, password: OPERATOR.password, fhirUser: 'Practitioner/op-1', name: 'Olivia Operator', roles: ['admin'] })).json<Body>().id as string;
    auditorId = (await api('POST', '/users', { username: AUDITOR.username, password: AUDITOR.password, fhirUser: 'Practitioner/op-2', name: 'Aaron Auditor', roles: ['auditor'] })).json<Body>().id as string;
  });
  after(() => app.close());

  /** A browser on the sign-in page; `remoteAddress` keeps throttling tests apart. */
  async function signInPage(remoteAddress?: string): Promise<{ browser: Browser; csrf: string; send: (path: string, fields: Record<string, string>) => Promise<LightMyRequestResponse> }> {
    const browser = new Browser(app, TEST_ISSUER);
    const page = await browser.send('GET', '/admin/sign-in', undefined, remoteAddress);
    assert.equal(page.statusCode, 200);
    const csrf = inputValue(page.body, 'csrf');
    return { browser, csrf, send: (path, fields) => browser.send('POST', path, { csrf, ...fields }, remoteAddress) };
  }

  /** A signed-in browser and its session's CSRF token. */
  async function signedIn(who: { username: string; password: string } | 'token'): Promise<{ browser: Browser; csrf: string }> {
    const { browser, send } = await signInPage();
    const res = who === 'token' ? await send('/admin/sign-in/token', { admin_token: ADMIN_TOKEN }) : await send('/admin/sign-in', who);
    assert.equal(res.statusCode, 303, res.body);
    assert.equal(res.headers.location, '/admin');
    const dashboard = await browser.send('GET', '/admin');
    assert.equal(h1(dashboard), 'Dashboard');
    return { browser, csrf: inputValue(dashboard.body, 'csrf') };
  }

  it('without a session every page sends to the sign-in page, which has a CSRF-protected form and the security headers', async () => {
    const browser = new Browser(app, TEST_ISSUER);
    for (const path of ['/admin', '/admin/clients', '/admin/audit', '/admin/keys', '/admin/clients/demo-app']) {
      const res = await browser.send('GET', path);
      assert.equal(res.statusCode, 303, path);
      assert.equal(res.headers.location, '/admin/sign-in');
    }
    const post = await browser.send('POST', '/admin/grants/x/revoke', { csrf: 'x' });
    assert.equal(post.statusCode, 303, 'a change without a session signs in first, and changes nothing');
    const page = await browser.send('GET', '/admin/sign-in');
    assert.equal(h1(page), 'Sign in to the operator console');
    assert.equal(page.headers['cache-control'], 'no-store');
    assert.equal(page.headers['x-frame-options'], 'DENY');
    assert.match(String(page.headers['content-security-policy']), /script-src 'self'; style-src 'self';.*frame-ancestors 'none'/);
    assert.doesNotMatch(page.body, /<script|style="/, 'no inline script or style');
    assert.match(String(page.headers['set-cookie']), /^smart_console_sign_in=[A-Za-z0-9_-]{22}; Path=\/admin\/sign-in; HttpOnly; SameSite=Lax$/);
    assert.match(page.body, /<form method="post" action="\/admin\/sign-in\/token"/, 'ADMIN_TOKEN goes in a form body, never a URL');
  });

  it('signs in an operator with a role, and refuses wrong passwords, unknown users, users without a role and forged forms (audited)', async () => {
    const { send } = await signInPage('10.1.0.1');
    const wrong = await send('/admin/sign-in', { username: OPERATOR.username, password: 'not-it-at-all' });
    assert.equal(wrong.statusCode, 401);
    assert.equal(alertOf(wrong), 'Wrong user name or password.');
    const unknown = await send('/admin/sign-in', { username: 'nobody-here', password: 'not-it-at-all' });
    assert.equal(unknown.statusCode, 401);
    assert.equal(alertOf(unknown), 'Wrong user name or password.');
    const clinician = await send('/admin/sign-in', { username: 'clinician', password: 'clinician-demo' });
    assert.equal(clinician.statusCode, 403);
    assert.equal(alertOf(clinician), 'This account has neither the admin nor the auditor role: it cannot use the operator console.');
    assert.doesNotMatch(String(clinician.headers['set-cookie']), /smart_console=/);
    const failures = (await events('login.failure')).filter((e) => e.source_ip === '10.1.0.1');
    assert.deepEqual(failures.map((e) => [e.user_id, e.details]), [
      [operatorId, { reason: 'invalid', console: true }],
      [null, { reason: 'invalid', console: true }],
      ['demo-clinician', { reason: 'not_operator', console: true }],
    ]);

    const forged = await new Browser(app, TEST_ISSUER).send('POST', '/admin/sign-in', { csrf: 'forged', ...OPERATOR });
    assert.equal(forged.statusCode, 403);
    assert.equal(alertOf(forged), 'This form has expired. Try again.');

    const ok = await send('/admin/sign-in', OPERATOR);
    assert.equal(ok.statusCode, 303);
    const cookies = ([] as string[]).concat(ok.headers['set-cookie'] ?? []);
    const session = cookies.find((c) => c.startsWith('smart_console='));
    assert.match(session ?? '', /^smart_console=[A-Za-z0-9_-]{43}; Path=\/admin; Max-Age=43200; HttpOnly; SameSite=Lax$/);
    assert.ok(cookies.some((c) => /^smart_device=.*; Path=\/admin\/sign-in;/.test(c)), 'the throttle\'s device cookie, kept to the sign-in form');
    const value = /^smart_console=([^;]+)/.exec(session!)![1]!;
    const rows = await app.runtime.database.db.selectFrom('console_sessions').select(['id_hash', 'user_id']).execute();
    assert.ok(rows.some((r) => r.user_id === operatorId), 'the session row names the operator');
    assert.ok(rows.every((r) => r.id_hash !== value && !r.id_hash.includes(value)), 'the session id is stored only as a keyed hash');
    assert.equal((await events('login.success')).filter((e) => e.user_id === operatorId && (e.details as Body).console === true).length, 1);
  });

  it('the console sign-in is throttled like the sign-in page: the sixth attempt on a user name is refused with Retry-After', async () => {
    const { send } = await signInPage('10.2.0.1');
    for (let i = 0; i < 5; i++) assert.equal((await send('/admin/sign-in', { username: AUDITOR.username, password: `wrong-${i}-password` })).statusCode, 401);
    const refused = await send('/admin/sign-in', { username: AUDITOR.username, password: AUDITOR.password });
    assert.equal(refused.statusCode, 429);
    assert.match(String(refused.headers['retry-after']), /^\d+$/);
    assert.match(alertOf(refused) ?? '', /^Too many failed attempts\. Try again in \d+ minute\(s\)\.$/);
    // An operator's reset of the password lifts the slowdown on the user name (src/users/users.ts).
    assert.equal((await api('POST', `/users/${auditorId}/password`, { password: AUDITOR.password })).statusCode, 204);
    assert.equal((await send('/admin/sign-in', AUDITOR)).statusCode, 303);
  });

  it('ADMIN_TOKEN in the form opens an admin session; a wrong one is refused and audited', async () => {
    const { send } = await signInPage('10.3.0.1');
    const wrong = await send('/admin/sign-in/token', { admin_token: 'not-the-admin-token-0123456789abcdefghij' });
    assert.equal(wrong.statusCode, 401);
    assert.equal(alertOf(wrong), 'That is not the admin token.');
    const [failure] = (await events('login.failure')).filter((e) => e.source_ip === '10.3.0.1');
    assert.deepEqual([failure?.actor_type, failure?.details], ['anonymous', { reason: 'invalid', with: 'admin-token', console: true }]);
    const { browser } = await signedIn('token');
    const dashboard = await browser.send('GET', '/admin');
    assert.match(dashboard.body, /ADMIN_TOKEN <span class="badge">admin<\/span>/);
  });

  it('every page renders for an admin, never cached; unknown ids are a 404 page', async () => {
    const { browser } = await signedIn(OPERATOR);
    const pages: [string, string][] = [
      ['/admin', 'Dashboard'],
      ['/admin/clients', 'Clients'],
      ['/admin/clients?q=demo&status=active', 'Clients'],
      ['/admin/clients/new', 'Register a client'],
      ['/admin/clients/demo-app', 'Demo SMART app Active'],
      ['/admin/clients/demo-app/edit', 'Edit demo-app'],
      ['/admin/users', 'Users'],
      ['/admin/users/new', 'Create a user'],
      [`/admin/users/${operatorId}`, 'Olivia Operator'],
      ['/admin/patients', 'Patient directory'],
      ['/admin/patients/demo-amy-shaw', 'Amy V. Shaw'],
      ['/admin/launches', 'EHR launches'],
      ['/admin/grants', 'Grants'],
      ['/admin/audit', 'Audit trail'],
      ['/admin/audit?type=login.&outcome=failure&from=2020-01-01T00:00', 'Audit trail'],
      ['/admin/keys', 'Signing keys'],
      ['/admin/api/docs', 'smart-auth-server admin API'],
    ];
    for (const [path, title] of pages) {
      const res = await browser.send('GET', path);
      assert.equal(res.statusCode, 200, `${path}: ${res.body.slice(0, 300)}`);
      assert.equal(h1(res), title, path);
      assert.equal(res.headers['cache-control'], 'no-store', path);
    }
    for (const path of ['/admin/clients/no-such', '/admin/clients/no-such/edit', '/admin/users/no-such', '/admin/patients/no-such']) {
      const res = await browser.send('GET', path);
      assert.equal(res.statusCode, 404, path);
      assert.equal(h1(res), 'Not found');
      assert.match(alertOf(res) ?? '', /^no (client|user|patient) no-such$/);
    }
    const { csrf } = await signedIn(OPERATOR);
    for (const path of ['/admin/clients/no-such/approve', '/admin/clients/no-such/secret', '/admin/clients/no-such/delete', '/admin/users/no-such/disable', '/admin/grants/no-such/revoke', '/admin/patients/no-such/delete']) {
      const res = await (await signedIn(OPERATOR)).browser.send('POST', path, { csrf });
      assert.equal(res.statusCode, 403, `${path}: another session's CSRF token is refused`);
    }
    for (const path of ['/admin/clients/no-such/approve', '/admin/clients/no-such/secret', '/admin/clients/no-such/delete', '/admin/users/no-such/disable', '/admin/grants/no-such/revoke', '/admin/patients/no-such/delete']) {
      const { browser: own, csrf: ownCsrf } = await signedIn(OPERATOR);
      const res = await own.send('POST', path, { csrf: ownCsrf });
      assert.equal(res.statusCode, 404, path);
      assert.equal(h1(res), 'Not found');
    }
  });

  it('CSRF: a change with the token missing or forged is refused with 403 and changes nothing', async () => {
    const { browser, csrf } = await signedIn(OPERATOR);
    const client = await createClient(app, { client_name: 'Kept', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'system/Patient.rs' });
    const forms: Record<string, string>[] = [{}, { csrf: 'forged-token' }, { csrf: csrf.slice(0, -2) + (csrf.endsWith('AA') ? 'BB' : 'AA') }];
    for (const fields of forms) {
      const res = await browser.send('POST', `/admin/clients/${client.client_id}/delete`, fields);
      assert.equal(res.statusCode, 403, res.body.slice(0, 200));
      assert.equal(alertOf(res), 'this form has expired or did not come from the console: reload the page and try again');
    }
    assert.equal((await api('GET', `/clients/${client.client_id}`)).statusCode, 200, 'still there');
    assert.equal((await browser.send('POST', `/admin/clients/${client.client_id}/delete`, { csrf })).statusCode, 303);
    assert.equal((await api('GET', `/clients/${client.client_id}`)).statusCode, 404);
  });

  it('clients: register (secret shown once), refuse what the client rules refuse, edit, suspend and reactivate, rotate the secret, search, delete', async () => {
    const { browser, csrf } = await signedIn(OPERATOR);
    const created = await browser.send('POST', '/admin/clients', {
      csrf,
      client_id: 'console-made',
      status: 'active',
      client_name: 'Console Made',
      redirect_uris: 'https://app.example/cb\r\nhttps://app.example/cb2',
      grant_types: ['authorization_code', 'client_credentials'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'openid   launch/patient\npatient/*.rs system/Patient.rs',
      contacts: 'ops@example.org',
      consent: 'required',
    });
    assert.equal(created.statusCode, 200, created.body.slice(0, 500));
    assert.equal(noticeOf(created), 'The client was created.');
    const secret = /<code id="client-secret" class="copy">([A-Za-z0-9_-]{43})<\/code>/.exec(created.body)?.[1];
    assert.ok(secret, 'the secret is on the page');
    const read = (await api('GET', '/clients/console-made')).json<Body>();
    assert.deepEqual([read.client_name, read.redirect_uris, read.grant_types, read.scope, read.contacts, read.status], ['Console Made', ['https://app.example/cb', 'https://app.example/cb2'], ['authorization_code', 'client_credentials'], 'openid launch/patient patient/*.rs system/Patient.rs', ['ops@example.org'], 'active']);
    const cc = () => tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, { authorization: basicAuth('console-made', secret) });
    assert.equal((await cc()).statusCode, 200);
    const [createdEvent] = (await events('client.created')).filter((e) => e.client_id === 'console-made');
    assert.deepEqual([createdEvent?.actor_type, createdEvent?.actor_id], ['user', operatorId]);
    assert.doesNotMatch((await browser.send('GET', '/admin/clients/console-made')).body, new RegExp(secret), 'shown once only');

    const refused = await browser.send('POST', '/admin/clients', { csrf, client_name: 'Bad', redirect_uris: 'http://app.example/cb', token_endpoint_auth_method: 'none' });
    assert.equal(refused.statusCode, 400);
    assert.equal(h1(refused), 'Register a client');
    assert.match(alertOf(refused) ?? '', /redirect_uris/);
    assert.match(refused.body, /value="Bad"/, 'the form keeps what was typed');
    const badJwks = await browser.send('POST', '/admin/clients', { csrf, client_name: 'Bad', token_endpoint_auth_method: 'private_key_jwt', grant_types: 'client_credentials', jwks: '{not json' });
    assert.equal(alertOf(badJwks), 'jwks is not JSON: paste a JWK Set, {"keys": [ … ]}');
    const taken = await browser.send('POST', '/admin/clients', { csrf, client_id: 'console-made', grant_types: 'client_credentials', scope: 'system/Patient.rs' });
    assert.equal(taken.statusCode, 409);
    assert.equal(alertOf(taken), 'client_id console-made is taken');

    const edited = await browser.send('POST', '/admin/clients/console-made', {
      csrf,
      client_name: 'Console Renamed',
      redirect_uris: 'https://app.example/cb\nhttps://app.example/cb2',
      grant_types: ['authorization_code', 'client_credentials'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'openid launch/patient patient/*.rs system/Patient.rs',
      contacts: '',
      consent: 'required',
    });
    assert.equal(edited.statusCode, 303, edited.body.slice(0, 300));
    assert.equal(edited.headers.location, '/admin/clients/console-made?notice=client-updated');
    const after = (await api('GET', '/clients/console-made')).json<Body>();
    assert.deepEqual([after.client_name, after.contacts], ['Console Renamed', undefined]);
    const [updated] = (await events('client.updated')).filter((e) => e.client_id === 'console-made');
    assert.deepEqual((updated?.details as Body).changed, ['client_name', 'contacts'], 'exactly the fields changed');

    assert.equal((await browser.send('POST', '/admin/clients/console-made/suspend', { csrf })).headers.location, '/admin/clients/console-made?notice=client-suspended');
    assert.equal((await cc()).statusCode, 401, 'a suspended client gets no token');
    assert.equal((await browser.send('POST', '/admin/clients/console-made/activate', { csrf })).statusCode, 303);
    const rotated = await browser.send('POST', '/admin/clients/console-made/secret', { csrf });
    const newSecret = /<code id="client-secret" class="copy">([A-Za-z0-9_-]{43})<\/code>/.exec(rotated.body)?.[1];
    assert.ok(newSecret && newSecret !== secret);
    assert.equal((await cc()).statusCode, 401, 'the old secret no longer works');

    const search = await browser.send('GET', '/admin/clients?q=RENAMED');
    assert.match(search.body, /<code>console-made<\/code>/);
    assert.doesNotMatch(search.body, /<code>demo-app<\/code>/);
    assert.equal((await browser.send('POST', '/admin/clients/console-made/delete', { csrf })).headers.location, '/admin/clients?notice=client-deleted');
    assert.equal((await api('GET', '/clients/console-made')).statusCode, 404);
  });

  it('approves or rejects a pending registration with the reason; only a pending one', async () => {
    const { browser, csrf } = await signedIn(OPERATOR);
    const metadata = { client_name: 'Self Registered', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', response_types: [], redirect_uris: [], scope: 'system/Patient.rs' };
    const register = async () => (await app.inject({ method: 'POST', url: '/reg', payload: metadata })).json<{ client_id: string; client_secret: string; registration_access_token: string }>();
    const reviewedOn = async (id: string) => /name="reviewed" value="([^"]+)"/.exec((await browser.send('GET', `/admin/clients/${id}`)).body)?.[1] ?? '';
    const first = await register();
    const second = await register();
    const page = await browser.send('GET', `/admin/clients/${first.client_id}`);
    assert.match(page.body, /Approve or reject this registration/);
    assert.match((await browser.send('GET', '/admin')).body, new RegExp(`Self Registered</a> <span class="muted">\\(<code>${first.client_id}</code>`), 'the dashboard lists it');
    const cc = (c: { client_id: string; client_secret: string }) => tokenRequest(app, { grant_type: 'client_credentials', scope: 'system/Patient.rs' }, { authorization: basicAuth(c.client_id, c.client_secret) });
    assert.equal((await cc(first)).statusCode, 401);

    // The decision is on the registration as the page showed it: one the client changed since is a 409.
    const reviewed = await reviewedOn(first.client_id);
    assert.match(reviewed, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal((await browser.send('POST', `/admin/clients/${first.client_id}/approve`, { csrf, reviewed: 'yesterday' })).statusCode, 400);
    await new Promise((resolve) => setTimeout(resolve, 5));
    const changed = await app.inject({ method: 'PUT', url: `/reg/${first.client_id}`, headers: { authorization: `Bearer ${first.registration_access_token}` }, payload: { ...metadata, client_id: first.client_id, client_name: 'Self Registered, changed after review' } });
    assert.equal(changed.statusCode, 200, changed.body);
    const stale = await browser.send('POST', `/admin/clients/${first.client_id}/approve`, { csrf, reviewed });
    assert.equal(stale.statusCode, 409);
    assert.match(alertOf(stale) ?? '', new RegExp(`^client ${first.client_id} changed its registration at .+, after the version reviewed \\(${reviewed}\\): review it again$`));
    assert.equal((await cc(first)).statusCode, 401, 'still pending');
    const approved = await browser.send('POST', `/admin/clients/${first.client_id}/approve`, { csrf, reason: '  Contract 17 signed  ', reviewed: await reviewedOn(first.client_id) });
    assert.equal(approved.headers.location, `/admin/clients/${encodeURIComponent(first.client_id)}?notice=client-approved`);
    assert.equal((await cc(first)).statusCode, 200);
    const again = await browser.send('POST', `/admin/clients/${first.client_id}/approve`, { csrf, reviewed });
    assert.equal(again.statusCode, 409);
    assert.equal(alertOf(again), `client ${first.client_id} is active, not pending: only a pending registration is approved or rejected`);

    const secondReviewed = await reviewedOn(second.client_id);
    const noReason = await browser.send('POST', `/admin/clients/${second.client_id}/reject`, { csrf, reason: ' ', reviewed: secondReviewed });
    assert.equal(noReason.statusCode, 400);
    assert.equal(alertOf(noReason), 'reason: say why the registration is rejected');
    assert.equal((await browser.send('POST', `/admin/clients/${second.client_id}/reject`, { csrf, reason: 'Unknown vendor', reviewed: secondReviewed })).statusCode, 303);
    assert.equal((await api('GET', `/clients/${second.client_id}`)).json<Body>().status, 'suspended', 'a rejected client is suspended, not deleted');
    assert.equal((await cc(second)).statusCode, 401);
    const decisions = [...(await events('client.approved')), ...(await events('client.rejected'))].filter((e) => [first.client_id, second.client_id].includes(e.client_id!));
    assert.deepEqual(decisions.map((e) => [e.type, e.client_id, e.actor_id, e.details]), [
      ['client.approved', first.client_id, operatorId, { status: 'active', reason: 'Contract 17 signed' }],
      ['client.rejected', second.client_id, operatorId, { status: 'suspended', reason: 'Unknown vendor' }],
    ]);
    const history = await browser.send('GET', `/admin/clients/${second.client_id}`);
    assert.match(history.body, /client\.rejected/);
    assert.match(history.body, /Unknown vendor/);
  });

  it('users: create with a role, refuse bad input, change roles and linked patients, reset the password, disable (which ends their console session)', async () => {
    const { browser, csrf } = await signedIn(OPERATOR);
    const bad = await browser.send('POST', '/admin/users', { csrf, username: 'new-op', name: 'New Op', fhirUser: 'Doctor/1' });
    assert.equal(bad.statusCode, 400);
    assert.equal(alertOf(bad), 'fhirUser is not in the expected form: Practitioner/<id>, PractitionerRole/<id>, Patient/<id>, RelatedPerson/<id> or Person/<id>');
    const short = await browser.send('POST', '/admin/users', { csrf, username: 'new-op', name: 'New Op', fhirUser: 'Practitioner/n1', password: 'short' });
    assert.equal(alertOf(short), 'password must NOT have fewer than 10 characters');
    const created = await browser.send('POST', '/admin/users', { csrf, username: 'new-op', id: 'new-op', name: 'New Op', fhirUser: 'Practitioner/n1', password: 'new-op-password', roles: 'auditor', other_roles: 'clinician', patients: '' });
    assert.equal(created.headers.location, '/admin/users/new-op?notice=user-created');
    assert.deepEqual((await api('GET', '/users/new-op')).json<Body>().roles, ['auditor', 'clinician']);
    const operator = await signedIn({ username: 'new-op', password: 'new-op-password' });

    const unknownPatient = await browser.send('POST', '/admin/users/new-op', { csrf, name: 'New Op', fhirUser: 'Practitioner/n1', roles: 'auditor', other_roles: 'clinician', patients: 'no-such-patient' });
    assert.equal(unknownPatient.statusCode, 400);
    assert.equal(alertOf(unknownPatient), 'patients: not in the directory: no-such-patient');
    const changed = await browser.send('POST', '/admin/users/new-op', { csrf, name: 'New Operator', fhirUser: 'Practitioner/n1', roles: ['admin', 'auditor'], other_roles: 'clinician', patients: 'demo-amy-shaw' });
    assert.equal(changed.statusCode, 303);
    const user = (await api('GET', '/users/new-op')).json<Body>();
    assert.deepEqual([user.name, user.roles, user.patients], ['New Operator', ['admin', 'auditor', 'clinician'], ['demo-amy-shaw']]);
    const [update] = (await events('user.updated')).filter((e) => e.user_id === 'new-op');
    assert.deepEqual((update?.details as Body).changed, ['name', 'roles', 'patients']);

    const tooShort = await browser.send('POST', '/admin/users/new-op/password', { csrf, password: 'short' });
    assert.equal(tooShort.statusCode, 400);
    assert.equal(alertOf(tooShort), 'New password: password must NOT have fewer than 10 characters');
    assert.equal((await operator.browser.send('GET', '/admin/clients')).statusCode, 200, 'now an admin');
    assert.equal((await browser.send('POST', '/admin/users/new-op/password', { csrf, password: 'another-password' })).headers.location, '/admin/users/new-op?notice=password-set');
    assert.equal((await events('user.password_reset')).filter((e) => e.user_id === 'new-op').length, 1);
    assert.equal((await operator.browser.send('GET', '/admin')).headers.location, '/admin/sign-in', 'a new password signs out whoever signed in with the old one');

    const reset = await signedIn({ username: 'new-op', password: 'another-password' });
    assert.equal((await browser.send('POST', '/admin/users/new-op/disable', { csrf })).headers.location, '/admin/users/new-op?notice=user-disabled');
    const after = await reset.browser.send('GET', '/admin');
    assert.equal(after.statusCode, 303, 'a disabled operator is signed out at their next request');
    assert.equal(after.headers.location, '/admin/sign-in');
    const self = await browser.send('POST', `/admin/users/${operatorId}/disable`, { csrf });
    assert.equal(self.statusCode, 409);
    assert.equal(alertOf(self), 'you cannot disable the account you are signed in with');
    assert.equal((await browser.send('POST', '/admin/users/new-op/enable', { csrf })).statusCode, 303);

    // Taking the role away ends the session at the next request, and the sign-in page shows its form.
    const again = await signedIn({ username: 'new-op', password: 'another-password' });
    assert.equal((await browser.send('POST', '/admin/users/new-op', { csrf, name: 'New Operator', fhirUser: 'Practitioner/n1', other_roles: 'clinician', patients: 'demo-amy-shaw' })).statusCode, 303);
    const copy = new Browser(app, TEST_ISSUER);
    copy.setCookie('smart_console', again.browser.cookie('smart_console')!, '/admin');
    const signInPageFirst = await copy.send('GET', '/admin/sign-in');
    assert.equal(signInPageFirst.statusCode, 200, 'no redirect loop between the sign-in page and the dashboard');
    const demoted = await again.browser.send('GET', '/admin/audit');
    assert.equal(demoted.headers.location, '/admin/sign-in');
    assert.equal(h1(await again.browser.send('GET', '/admin/sign-in')), 'Sign in to the operator console');
  });

  it('patients: import NDJSON or a Bundle (all or nothing), read one with its encounters, remove one', async () => {
    const { browser, csrf } = await signedIn(OPERATOR);
    const ndjson = [
      { resourceType: 'Patient', id: 'con-p1', name: [{ family: 'Console', given: ['Pat'] }], birthDate: '1970-01-02' },
      { resourceType: 'Encounter', id: 'con-e1', status: 'finished', class: { code: 'AMB' }, subject: { reference: 'Patient/con-p1' } },
    ].map((r) => JSON.stringify(r)).join('\n');
    const imported = await browser.send('POST', '/admin/patients/import', { csrf, resources: ndjson });
    assert.equal(imported.statusCode, 200);
    assert.equal(noticeOf(imported), 'Imported 1 patient(s) and 1 encounter(s).');
    const bundle = JSON.stringify({ resourceType: 'Bundle', type: 'collection', entry: [{ resource: { resourceType: 'Patient', id: 'con-p2', name: [{ text: 'Bundle Person' }] } }] });
    assert.equal(noticeOf(await browser.send('POST', '/admin/patients/import', { csrf, resources: bundle })), 'Imported 1 patient(s) and 0 encounter(s).');
    const bad = await browser.send('POST', '/admin/patients/import', { csrf, resources: `${JSON.stringify({ resourceType: 'Patient', id: 'con-p3' })}\n{"resourceType":"Observation","id":"o"}` });
    assert.equal(bad.statusCode, 400);
    assert.equal(alertOf(bad), 'Nothing was imported: resource 2: only Patient and Encounter resources are imported, not Observation');
    assert.match(bad.body, /Observation/, 'the text area keeps what was pasted');
    assert.equal((await api('GET', '/patients/con-p3')).statusCode, 404);
    const found = await browser.send('GET', '/admin/patients?q=console');
    assert.match(found.body, /<a href="\/admin\/patients\/con-p1">Pat Console<\/a>/);
    const patient = await browser.send('GET', '/admin/patients/con-p1');
    assert.equal(h1(patient), 'Pat Console');
    assert.match(patient.body, /con-e1/);
    assert.equal((await browser.send('POST', '/admin/patients/con-p2/delete', { csrf })).headers.location, '/admin/patients?notice=patient-deleted');
    assert.equal((await api('GET', '/patients/con-p2')).statusCode, 404);
  });

  it('EHR launches: creates one, shows its id once with the app\'s launch URL; refuses what the API refuses', async () => {
    const { browser, csrf } = await signedIn(OPERATOR);
    const res = await browser.send('POST', '/admin/launches', { csrf, client_id: 'demo-app', aud: TEST_FHIR_BASE, patient: 'demo-amy-shaw', intent: 'reconcile-medications', need_patient_banner: 'true' });
    assert.equal(res.statusCode, 200, res.body.slice(0, 300));
    const launch = /<code id="launch-id" class="copy">([^<]+)<\/code>/.exec(res.body)?.[1];
    assert.ok(launch);
    assert.match(res.body, new RegExp(`launch=${launch}`), 'the app\'s launch URL carries it');
    const [event] = (await events('launch.created')).filter((e) => e.patient_id === 'demo-amy-shaw' && e.actor_id === operatorId);
    assert.deepEqual([event?.client_id, (event?.details as Body).intent], ['demo-app', 'reconcile-medications']);
    const rows = await app.runtime.database.db.selectFrom('launches').select('id').execute();
    assert.ok(rows.every((r) => r.id !== launch), 'only its keyed hash is stored');
    const refused = await browser.send('POST', '/admin/launches', { csrf, encounter: 'e1' });
    assert.equal(refused.statusCode, 400);
    assert.equal(alertOf(refused), 'encounter needs patient');
    const badAud = await browser.send('POST', '/admin/launches', { csrf, aud: 'https://elsewhere.example/fhir' });
    assert.equal(alertOf(badAud), 'aud https://elsewhere.example/fhir is not one of this server\'s FHIR base URLs');
  });

  it('grants: lists the live grants, revokes one (its refresh token is dead), audited; an auditor reads them and cannot revoke', async () => {
    const client = await createClient(app, { client_name: 'Grant App', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'], scope: 'openid fhirUser launch/patient patient/*.rs offline_access' });
    const flow = await startAuthorization(app, { client_id: client.client_id, scope: 'openid fhirUser launch/patient patient/*.rs offline_access' });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    const tokens = (await exchange(app, flow)).json<{ refresh_token: string }>();
    const grantId = (await api('GET', `/grants?client=${client.client_id}`)).json<{ items: { grant_id: string }[] }>().items[0]!.grant_id;

    const auditor = await signedIn(AUDITOR);
    const list = await auditor.browser.send('GET', `/admin/grants?client=${client.client_id}`);
    assert.equal(list.statusCode, 200);
    assert.match(list.body, /Grant App/);
    assert.doesNotMatch(list.body, /\/revoke"/, 'no revoke button for an auditor');
    const forbidden = await auditor.browser.send('POST', `/admin/grants/${grantId}/revoke`, { csrf: auditor.csrf });
    assert.equal(forbidden.statusCode, 403);
    assert.equal(alertOf(forbidden), 'an auditor reads the audit trail and the grants and changes nothing: this needs the admin role');
    assert.equal((await api('GET', `/grants?client=${client.client_id}`)).json<{ items: unknown[] }>().items.length, 1, 'still live');

    const { browser, csrf } = await signedIn(OPERATOR);
    assert.equal((await browser.send('POST', `/admin/grants/${grantId}/revoke`, { csrf })).headers.location, '/admin/grants?notice=grant-revoked');
    assert.equal((await api('GET', `/grants?client=${client.client_id}`)).json<{ items: unknown[] }>().items.length, 0);
    const refreshed = await tokenRequest(app, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: client.client_id });
    assert.equal(refreshed.json<Body>().error, 'invalid_grant');
    const [revoked] = (await events('grant.revoked')).filter((e) => e.grant_id === grantId);
    assert.deepEqual([revoked?.actor_type, revoked?.actor_id, revoked?.client_id, revoked?.user_id], ['user', operatorId, client.client_id, 'demo-patient']);
    assert.equal((await browser.send('POST', `/admin/grants/${grantId}/revoke`, { csrf })).statusCode, 404, 'gone');
  });

  it('an auditor reads the dashboard, the audit trail and the grants; every other page and every change is 403', async () => {
    const { browser, csrf } = await signedIn(AUDITOR);
    for (const path of ['/admin', '/admin/audit', '/admin/grants', '/admin/audit/export?format=ndjson']) assert.equal((await browser.send('GET', path)).statusCode, 200, path);
    for (const path of ['/admin/clients', '/admin/clients/demo-app', '/admin/users', '/admin/patients', '/admin/launches', '/admin/keys']) {
      const res = await browser.send('GET', path);
      assert.equal(res.statusCode, 403, path);
      assert.equal(h1(res), 'Not allowed');
    }
    for (const [path, fields] of [['/admin/clients', { client_name: 'x' }], ['/admin/clients/demo-app/suspend', {}], ['/admin/users/demo-patient/disable', {}], ['/admin/keys/rotate', { force: 'true' }], ['/admin/launches', {}], ['/admin/patients/import', { resources: '{}' }]] as const) {
      assert.equal((await browser.send('POST', path, { csrf, ...fields })).statusCode, 403, path);
    }
    assert.equal((await api('GET', '/clients/demo-app')).json<Body>().status, 'active', 'nothing changed');
    const nav = [...(await browser.send('GET', '/admin')).body.matchAll(/<li><a href="([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(nav, ['/admin', '/admin/grants', '/admin/audit', '/admin/payer', '/admin/api/docs']);
    assert.equal((await browser.send('POST', '/admin/audit/verify', { csrf })).statusCode, 200, 'verifying changes nothing');
  });

  it('audit trail: filters, pages back, exports FHIR AuditEvents, verifies the chain and checkpoints; console requests are audited', async () => {
    const { browser, csrf } = await signedIn(OPERATOR);
    const failures = await browser.send('GET', '/admin/audit?type=login.failure');
    const rows = [...failures.body.matchAll(/<tr class="event-(success|failure)">[\s\S]*?<code>([a-z_.]+)<\/code>/g)].map((m) => m[2]);
    assert.ok(rows.length >= 1 && rows.every((t) => t === 'login.failure'), `only login.failure: ${rows.join(',')}`);
    const family = await browser.send('GET', '/admin/audit?type=client.&outcome=success');
    assert.ok([...family.body.matchAll(/<td><code>([a-z_.]+)<\/code><\/td>/g)].every((m) => m[1]!.startsWith('client.')));
    const page1 = await browser.send('GET', '/admin/audit');
    const older = /<a href="([^"]+)">Older events<\/a>/.exec(page1.body)?.[1];
    assert.ok(older, 'more than one page of events by now');
    const page2 = await browser.send('GET', decodeEntities(older));
    const first = (body: string) => Number(/<tr class="event-\w+">\s*<td>(\d+)<\/td>/.exec(body)?.[1]);
    assert.ok(first(page2.body) < first(page1.body), 'older events on the next page');

    const bad = await browser.send('GET', '/admin/audit?from=2026-02-01T00:00&to=2026-01-01T00:00');
    assert.equal(bad.statusCode, 400);
    assert.equal(alertOf(bad), 'from is after to');
    // What the database cannot be asked about is a 400 of the console's own, as the admin API answers it.
    for (const [url, alert] of [
      ['/admin/audit?to=0000-01-01T00:00', 'to 0000-01-01T00:00:00Z is out of range: the audit trail is searched from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z'],
      // Only an RFC 3339 date-time (or the form's own local time, read as UTC), not whatever JavaScript reads.
      ['/admin/audit?from=%2B275760-09-13T00:00:00Z', 'from +275760-09-13T00:00:00Z is not a date-time this server can use: give an RFC 3339 date-time, as 2026-12-03T09:30:00Z'],
      ['/admin/audit?from=1', 'from 1 is not a date-time this server can use: give an RFC 3339 date-time, as 2026-12-03T09:30:00Z'],
      ['/admin/audit?from=2026-01-01', 'from 2026-01-01 is not a date-time this server can use: give an RFC 3339 date-time, as 2026-12-03T09:30:00Z'],
      ['/admin/audit?from=2026-02-30T00:00', 'from 2026-02-30T00:00:00Z is not a date-time this server can use: give an RFC 3339 date-time, as 2026-12-03T09:30:00Z'],
      ['/admin/audit?from=December%203%2C%202026', 'from December 3, 2026 is not a date-time this server can use: give an RFC 3339 date-time, as 2026-12-03T09:30:00Z'],
      ['/admin/audit?to=9999-12-31T23:59:60Z', 'to 9999-12-31T23:59:60Z is out of range: the audit trail is searched from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z'],
      ['/admin/audit/export?format=bundle&to=0000-01-01T00:00:00Z', 'to 0000-01-01T00:00:00Z is out of range: the audit trail is searched from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z'],
      ['/admin/audit?before=9999999999999999999', 'before 9999999999999999999 is past the largest event number (9223372036854775807)'],
    ]) {
      const refused = await browser.send('GET', url!);
      assert.equal(refused.statusCode, 400, url);
      assert.equal(alertOf(refused), alert, url);
    }
    for (const url of ['/admin/audit?from=0001-01-01T00:00&to=9999-12-31T23:59', '/admin/audit?from=2024-02-29T12:00:30.5&to=2026-12-03T10:00:00%2B01:00', '/admin/audit?before=9223372036854775807']) assert.equal((await browser.send('GET', url)).statusCode, 200, url);
    assert.equal((await browser.send('GET', '/admin/audit?type=nonsense')).statusCode, 400);

    const ndjson = await browser.send('GET', '/admin/audit/export?format=ndjson&type=login.failure');
    assert.equal(ndjson.headers['content-type'], 'application/fhir+ndjson; charset=utf-8');
    assert.match(String(ndjson.headers['content-disposition']), /^attachment; filename="audit-events-\d{8}T\d{6}Z\.ndjson"$/);
    const exported = ndjson.body.trim().split('\n').map((l) => JSON.parse(l) as { resourceType: string; subtype: { code: string }[] });
    assert.ok(exported.length >= 1 && exported.every((e) => e.resourceType === 'AuditEvent' && e.subtype[0]!.code === 'login.failure'));
    const bundle = await browser.send('GET', '/admin/audit/export?format=bundle');
    assert.equal(bundle.json<Body>().resourceType, 'Bundle');

    await app.runtime.audit.flush();
    await app.runtime.maintenance.auditCheckpoint();
    const verified = await browser.send('POST', '/admin/audit/verify', { csrf });
    assert.equal(h1(verified), 'Audit trail');
    assert.match(verified.body, /<h2 id="verify-title">The audit trail verifies<\/h2>/);
    assert.match(verified.body, /held to [1-9]\d* stored checkpoint\(s\)/);

    const signed = await browser.send('POST', '/admin/audit/checkpoint', { csrf });
    const shown = decodeEntities(/<pre class="json" id="checkpoint"[^>]*>([\s\S]*?)<\/pre>/.exec(signed.body)?.[1] ?? '');
    const checkpoint = JSON.parse(shown) as { jws: string; header: { typ: string } };
    assert.equal(checkpoint.header.typ, 'audit-checkpoint+jwt');
    const held = await browser.send('POST', '/admin/audit/verify', { csrf, checkpoints: JSON.stringify([checkpoint, checkpoint.jws]) });
    assert.match(held.body, /The audit trail verifies[\s\S]*and 2 pasted checkpoint\(s\)/);
    const forged = await browser.send('POST', '/admin/audit/verify', { csrf, checkpoints: `${checkpoint.jws.slice(0, -4)}AAAA` });
    assert.match(forged.body, /The audit trail does not verify[\s\S]*pasted checkpoint 1: it is refused: the signature does not verify/);
    const garbage = await browser.send('POST', '/admin/audit/verify', { csrf, checkpoints: '{"not": "a checkpoint"}' });
    assert.equal(garbage.statusCode, 400);
    assert.equal(alertOf(garbage), 'pasted checkpoint 1 is not a checkpoint: paste the JSON of an exported checkpoint, or its compact JWS');
    const auditor = await signedIn(AUDITOR);
    assert.equal((await auditor.browser.send('POST', '/admin/audit/checkpoint', { csrf: auditor.csrf })).statusCode, 403, 'signing is a change: admins only');

    await app.runtime.audit.flush();
    const requests = (await events('admin.request')).filter((e) => (e.details as Body).console === true && e.actor_id === operatorId);
    assert.ok(requests.some((e) => (e.details as Body).path === '/admin/audit?type=login.failure' && (e.details as Body).status === 200));
    assert.ok(requests.some((e) => (e.details as Body).path === '/admin/audit?from=2026-02-01T00:00&to=2026-01-01T00:00' && e.outcome === 'failure'));
  });

  it('keys: shows their states; rotation refused while the next keys are new, done when forced, audited', async () => {
    const { browser, csrf } = await signedIn(OPERATOR);
    const page = await browser.send('GET', '/admin/keys');
    assert.equal([...page.body.matchAll(/<span class="badge active">active<\/span>/g)].length, app.runtime.config.signingAlgs.length);
    const refused = await browser.send('POST', '/admin/keys/rotate', { csrf, algs: 'RS256' });
    assert.equal(refused.statusCode, 409);
    assert.match(alertOf(refused) ?? '', /^the next RS256 key \(.+\) has been published for \d+ s, less than the \d+ s every server process and client cache needs/);
    const before = (await api('GET', '/keys')).json<{ items: { kid: string; alg: string; state: string }[] }>().items;
    const rotated = await browser.send('POST', '/admin/keys/rotate', { csrf, algs: 'RS256', force: 'true' });
    assert.equal(rotated.statusCode, 200);
    const nextKid = before.find((k) => k.alg === 'RS256' && k.state === 'next')!.kid;
    assert.match(rotated.body, new RegExp(`RS256: <code>${nextKid}</code> signs now`));
    const [event] = (await events('key.rotated')).filter((e) => e.actor_id === operatorId);
    assert.ok(event);
  });

  it('sign-out ends the session in the database: the cookie no longer opens anything', async () => {
    const { browser, csrf } = await signedIn(OPERATOR);
    const cookie = browser.cookie('smart_console')!;
    assert.equal((await browser.send('POST', '/admin/sign-out', {})).statusCode, 403, 'a sign-out needs the form: another site cannot sign the operator out');
    const out = await browser.send('POST', '/admin/sign-out', { csrf });
    assert.equal(out.headers.location, '/admin/sign-in?notice=signed-out');
    assert.equal(browser.cookie('smart_console'), undefined);
    const replay = new Browser(app, TEST_ISSUER);
    replay.setCookie('smart_console', cookie, '/admin');
    const res = await replay.send('GET', '/admin');
    assert.equal(res.statusCode, 303);
    assert.equal(res.headers.location, '/admin/sign-in');
    assert.match(String(res.headers['set-cookie']), /^smart_console=; Path=\/admin; Max-Age=0/);
    assert.equal(noticeOf(await replay.send('GET', '/admin/sign-in?notice=signed-out')), 'You are signed out.');
    assert.equal(noticeOf(await replay.send('GET', '/admin/sign-in?notice=<b>hi</b>')), undefined, 'only fixed notices are shown');
  });

  it('with REGISTRATION=token, an initial access token is created on the clients page, shown once, and lets an app register', async () => {
    const tokenApp = await testApp(ctx.current.database, { ADMIN_TOKEN, REGISTRATION: 'token', REGISTRATION_STATUS: 'active' });
    try {
      const browser = new Browser(tokenApp, TEST_ISSUER);
      const page = await browser.send('GET', '/admin/sign-in');
      assert.equal((await browser.send('POST', '/admin/sign-in/token', { csrf: inputValue(page.body, 'csrf'), admin_token: ADMIN_TOKEN })).statusCode, 303);
      const clients = await browser.send('GET', '/admin/clients');
      assert.match(clients.body, /Create an initial access token/);
      const created = await browser.send('POST', '/admin/clients/registration-token', { csrf: inputValue(clients.body, 'csrf'), expires_in: '3600' });
      const token = /<code id="initial-access-token" class="copy">([^<]+)<\/code>/.exec(created.body)?.[1];
      assert.ok(token);
      const registered = await tokenApp.inject({ method: 'POST', url: '/reg', headers: { authorization: `Bearer ${token}` }, payload: { client_name: 'Vouched', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', response_types: [], redirect_uris: [], scope: 'system/Patient.rs' } });
      assert.equal(registered.statusCode, 201, registered.body);
      assert.doesNotMatch((await browser.send('GET', '/admin/clients')).body, new RegExp(token), 'shown once');
    } finally {
      await tokenApp.close();
    }
    const { browser, csrf } = await signedIn(OPERATOR);
    const refused = await browser.send('POST', '/admin/clients/registration-token', { csrf, expires_in: '3600' });
    assert.equal(refused.statusCode, 409, 'not with REGISTRATION=open');
    assert.equal(alertOf(refused), 'dynamic registration is open: initial access tokens are used only with REGISTRATION=token');
  });

  it('the admin API\'s OpenAPI document is browsable at /admin/api/docs without a session or any script', async () => {
    const res = await app.inject({ method: 'GET', url: '/admin/api/docs' });
    assert.equal(res.statusCode, 200);
    assert.doesNotMatch(res.body, /<script/);
    const doc = (await app.inject({ method: 'GET', url: '/admin/api/openapi.json' })).json<{ paths: Record<string, Record<string, unknown>> }>();
    for (const [path, methods] of Object.entries(doc.paths)) {
      for (const method of Object.keys(methods)) assert.ok(res.body.includes(`<code>${method.toUpperCase()} ${path}</code>`), `${method} ${path} is listed`);
    }
    assert.match(res.body, /reason/, 'with the body schemas');
  });
});
