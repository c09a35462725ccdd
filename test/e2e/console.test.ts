import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { type Browser, type BrowserContext, type Page } from 'playwright-core';

import { listeningApp } from '../helpers/app.js';
import { Browser as FormBrowser } from '../helpers/browser.js';
import { basicAuth, createClient, form } from '../helpers/clients.js';
import { axeViolations, chromiumSkip, launchChromium } from '../helpers/chromium.js';
import { createTestDatabase, type TestDatabase } from '../helpers/databases.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization, tokenRequest } from '../helpers/flow.js';

/**
 * The operator console in headless Chromium, as an operator uses it: sign in (after a failed attempt), approve
 * a pending dynamic registration and see the client get tokens, revoke a grant, find the failed sign-in in
 * the audit trail; and axe-core, injected into each page, finds no accessibility violation on any console
 * page. SCREENSHOT_DIR, when set, keeps a PNG of each page. Needs Debian's chromium, as browser.test.ts.
 */
const ADMIN_TOKEN = 'console-e2e-admin-token-0123456789abcdef';
const OPERATOR = { username: 'ops-admin', password: 'operator-password-1' };
const AUDITOR = { username: 'ops-auditor', password: 'auditor-password-1' };

describe('operator console in headless Chromium', { skip: chromiumSkip() }, () => {
  let database: TestDatabase;
  let app: FastifyInstance;
  let issuer: string;
  let browser: Browser;
  let operatorId: string;
  const checked: string[] = [];

  before(async () => {
    database = await createTestDatabase('pglite');
    ({ app, issuer } = await listeningApp(database.database, { SEED_DEMO: 'true', ADMIN_TOKEN, REGISTRATION: 'open', REGISTRATION_STATUS: 'pending' }));
    const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const made = await app.inject({ method: 'POST', url: '/admin/api/users', headers: admin, payload: { username: OPERATOR.username, password: OPERATOR.password, fhirUser: 'Practitioner/ops-1', name: 'Olivia Operator', roles: ['admin'] } });
    assert.equal(made.statusCode, 201, made.body);
    operatorId = made.json<{ id: string }>().id;
    const auditor = await app.inject({ method: 'POST', url: '/admin/api/users', headers: admin, payload: { username: AUDITOR.username, password: AUDITOR.password, fhirUser: 'Practitioner/ops-2', name: 'Aaron Auditor', roles: ['auditor'] } });
    assert.equal(auditor.statusCode, 201, auditor.body);
    browser = await launchChromium();
  });
  after(async () => {
    await browser.close();
    await app.close();
    await database.drop();
  });

  /** axe-core in the page (evaluated through the DevTools protocol: the page's CSP allows no injected script). */
  async function accessible(page: Page, name: string): Promise<void> {
    const found = await axeViolations(page);
    assert.deepEqual(found, [], `axe-core on ${name} (${page.url()})`);
    checked.push(name);
    if (process.env.SCREENSHOT_DIR) await page.screenshot({ path: join(process.env.SCREENSHOT_DIR, `console-${name}.png`), fullPage: true });
  }

  async function signIn(context: BrowserContext, who: { username: string; password: string }): Promise<Page> {
    const page = await context.newPage();
    await page.goto(`${issuer}/admin`);
    await page.waitForSelector('#username');
    await page.fill('#username', who.username);
    await page.fill('#password', who.password);
    await page.click('button[type="submit"].primary');
    await page.waitForSelector('h1:text("Dashboard")');
    return page;
  }

  it('a failed sign-in, then the operator signs in; approves a pending registration, and the client gets tokens', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${issuer}/admin`);
    assert.match(page.url(), /\/admin\/sign-in$/);
    await accessible(page, 'sign-in');
    await page.fill('#username', OPERATOR.username);
    await page.fill('#password', 'not-the-password');
    await page.click('button[type="submit"].primary');
    await page.waitForSelector('p.alert');
    assert.equal(await page.textContent('p.alert'), 'Wrong user name or password.');
    await accessible(page, 'sign-in-failed');
    await page.fill('#password', OPERATOR.password);
    await page.click('button[type="submit"].primary');
    await page.waitForSelector('h1:text("Dashboard")');

    // An app registers itself; with REGISTRATION_STATUS=pending it cannot get a token yet.
    const registered = await fetch(`${issuer}/reg`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ client_name: 'Pending Backend', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', response_types: [], redirect_uris: [], scope: 'system/Patient.rs' }) });
    assert.equal(registered.status, 201);
    const client = (await registered.json()) as { client_id: string; client_secret: string };
    const token = () => fetch(`${issuer}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basicAuth(client.client_id, client.client_secret) }, body: form({ grant_type: 'client_credentials', scope: 'system/Patient.rs' }) });
    assert.equal((await token()).status, 401, 'a pending client gets no token');

    await page.reload();
    await accessible(page, 'dashboard');
    await page.click(`a:text("Pending Backend")`);
    await page.waitForSelector('h2:text("Approve or reject this registration")');
    await accessible(page, 'client-pending');
    await page.fill('#approve-reason', 'Vendor contract 2026-117 signed');
    await page.click('button:text("Approve")');
    await page.waitForSelector('p.notice');
    assert.equal(await page.textContent('p.notice'), 'The registration was approved: the client is active.');
    await accessible(page, 'client');

    const issued = await token();
    assert.equal(issued.status, 200);
    assert.equal(((await issued.json()) as { scope: string }).scope, 'system/Patient.rs');
    const [approval] = (await app.runtime.database.db.selectFrom('audit_events').selectAll().where('type', '=', 'client.approved').execute());
    assert.deepEqual([approval?.client_id, approval?.actor_type, approval?.actor_id, approval?.details], [client.client_id, 'user', operatorId, { status: 'active', reason: 'Vendor contract 2026-117 signed' }]);
    await context.close();
  });

  it('revokes a grant: the app\'s refresh token is refused at once', async () => {
    const app2 = await createClient(app, { client_name: 'Patient App', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'], scope: 'openid fhirUser launch/patient patient/*.rs offline_access' });
    const flow = await startAuthorization(app, { client_id: app2.client_id, scope: 'openid fhirUser launch/patient patient/*.rs offline_access', aud: `${issuer}/fhir` }, { browser: new FormBrowser(app, issuer) });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    const tokens = (await exchange(app, flow)).json<{ refresh_token: string }>();
    assert.ok(tokens.refresh_token);

    const context = await browser.newContext();
    const page = await signIn(context, OPERATOR);
    await page.goto(`${issuer}/admin/grants?client=${encodeURIComponent(app2.client_id)}`);
    await accessible(page, 'grants');
    await page.click('td button:text("Revoke")');
    await page.waitForSelector('p.notice');
    assert.equal(await page.textContent('p.notice'), 'The grant and every token issued under it were revoked.');
    assert.doesNotMatch((await page.textContent('main')) ?? '', /Patient App/, 'the grant is no longer listed');
    const refreshed = await tokenRequest(app, { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: app2.client_id });
    assert.equal(refreshed.statusCode, 400);
    assert.equal(refreshed.json<{ error: string }>().error, 'invalid_grant');
    await context.close();
  });

  it('finds the failed sign-in in the audit trail, exports it and verifies the chain', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, OPERATOR);
    await page.click('nav a:text("Audit trail")');
    await page.selectOption('#type', 'login.failure');
    await page.click('form.filters button');
    await page.waitForSelector('table');
    const rows: string[][] = [];
    for (const row of await page.locator('tbody tr').all()) rows.push((await row.locator('td').allTextContents()).map((cell) => cell.trim()));
    const failure = rows.find((cells) => cells[2] === 'login.failure' && cells[5] === `user ${operatorId}`);
    assert.ok(failure, `the failed sign-in of ${OPERATOR.username} is listed: ${JSON.stringify(rows)}`);
    assert.match(failure[7] ?? '', /"reason":"invalid"/);
    assert.match(failure[7] ?? '', /"console":true/);
    await accessible(page, 'audit');
    const download = page.waitForEvent('download');
    await page.click('a:text("NDJSON")');
    const exported = await readFile((await (await download).path()), 'utf8');
    assert.ok(exported.trim().split('\n').every((line) => (JSON.parse(line) as { resourceType: string }).resourceType === 'AuditEvent'));
    await page.click('button:text("Verify the audit trail")');
    await page.waitForSelector('#verify-title');
    assert.equal(await page.textContent('#verify-title'), 'The audit trail verifies');
    await accessible(page, 'audit-verified');
    await page.click('button:text("Sign a checkpoint")');
    await page.waitForSelector('#checkpoint');
    assert.match((await page.textContent('#checkpoint')) ?? '', /"typ": "audit-checkpoint\+jwt"/);
    await accessible(page, 'audit-checkpoint');
    await context.close();
  });

  it('axe-core finds no violation on any other console page, for an admin and an auditor', async () => {
    const context = await browser.newContext();
    const page = await signIn(context, OPERATOR);
    const visit = async (path: string, name: string) => {
      await page.goto(`${issuer}/admin${path}`);
      await accessible(page, name);
    };
    await visit('/clients', 'clients');
    await visit('/clients/new', 'client-new');
    await visit('/clients/demo-app/edit', 'client-edit');
    await visit('/users', 'users');
    await visit('/users/new', 'user-new');
    await visit(`/users/${operatorId}`, 'user');
    await visit('/patients', 'patients');
    await visit('/patients/demo-amy-shaw', 'patient');
    await visit('/launches', 'launches');
    await page.selectOption('#client_id', 'demo-app');
    await page.fill('#patient', 'demo-amy-shaw');
    await page.click('button:text("Create the launch")');
    await page.waitForSelector('#launch-id');
    await accessible(page, 'launch-created');
    await visit('/keys', 'keys');
    await visit('/payer', 'payer');
    await visit('/api/docs', 'api-docs');
    await visit('/clients/no-such-client', 'not-found');
    await context.close();

    const auditorContext = await browser.newContext();
    const auditorPage = await signIn(auditorContext, AUDITOR);
    assert.deepEqual(await auditorPage.locator('nav[aria-label="Console"] a').allTextContents(), ['Dashboard', 'Grants', 'Audit trail', 'CMS-0057-F', 'API']);
    await accessible(auditorPage, 'auditor-dashboard');
    await auditorPage.goto(`${issuer}/admin/clients`);
    assert.equal(await auditorPage.textContent('h1'), 'Not allowed');
    await accessible(auditorPage, 'auditor-forbidden');
    await auditorContext.close();
    assert.equal(checked.length, 25, `pages checked: ${checked.join(", ")}`);
  });
  it("the member's privacy choices page works in a browser without script and has no accessibility violation", async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${issuer}/account/privacy`);
    await page.waitForSelector('#username');
    await page.fill('#username', 'patient');
    await page.fill('#password', 'patient-demo');
    await page.click('button[type="submit"].primary');
    await page.waitForSelector('h1:text("Connected apps")');
    await page.click('a:text("Privacy choices")');
    await page.waitForSelector('h1:text("Privacy choices")');
    await accessible(page, 'account-privacy');
    await page.click('button:text("Opt out of sharing with my providers")');
    await page.waitForSelector('p.notice');
    assert.equal(await page.textContent('p.notice'), 'Provider organisations can no longer see your information through the payer.');
    await page.fill('#username', 'nobody');
    await page.click('button:text("Ask them to act for me")');
    await page.waitForSelector('p.alert');
    await accessible(page, 'account-privacy-error');
    await context.close();
  });
});
