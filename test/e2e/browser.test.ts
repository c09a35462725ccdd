import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { type Browser, type Page } from 'playwright-core';

import { listeningApp } from '../helpers/app.js';
import { axeViolations, chromiumSkip, launchChromium } from '../helpers/chromium.js';
import { createTestDatabase, type TestDatabase } from '../helpers/databases.js';

/**
 * The SMART JavaScript client (fhirclient) as the app, in headless Chromium, against the server over real
 * HTTP: the sample app's launch page, our sign-in, picker and consent pages, and back. Needs Debian's
 * chromium (CHROMIUM_PATH); CI sets REQUIRE_BROWSER=true so that a missing browser fails instead of skipping.
 */

interface TokenView {
  patient?: string;
  encounter?: string;
  scope?: string;
  need_patient_banner?: boolean;
  fhirUser?: string;
  refresh?: boolean;
}

describe('fhirclient in headless Chromium', { skip: chromiumSkip() }, () => {
  let database: TestDatabase;
  let app: FastifyInstance;
  let issuer: string;
  let browser: Browser;

  before(async () => {
    database = await createTestDatabase('pglite');
    ({ app, issuer } = await listeningApp(database.database, { SEED_DEMO: 'true', SANDBOX: 'true' }));
    browser = await launchChromium();
  });
  after(async () => {
    await browser.close();
    await app.close();
    await database.drop();
  });

  async function signIn(page: Page, username: string, password: string): Promise<void> {
    await page.waitForSelector('#username');
    await page.fill('#username', username);
    await page.fill('#password', password);
    await page.click('button[type="submit"].primary');
  }

  async function tokenResponse(page: Page): Promise<TokenView> {
    await page.waitForSelector('body[data-token-response], body[data-error]', { timeout: 15_000 });
    const error = await page.getAttribute('body', 'data-error');
    assert.equal(error, null, `the app reported: ${String(error)}`);
    return JSON.parse((await page.getAttribute('body', 'data-token-response'))!) as TokenView;
  }

  it('standalone launch: launch page → sign-in → patient → encounter → consent → the app holds token and context', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    // Nothing on the way fails or complains: no request answered 4xx/5xx (a missing favicon was one), no console error.
    const problems: string[] = [];
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(`console: ${message.text()}`);
    });
    page.on('response', (response) => {
      if (response.status() >= 400) problems.push(`${response.status()} ${response.url()}`);
    });
    await page.goto(`${issuer}/sample-app/launch.html?iss=${encodeURIComponent(`${issuer}/fhir`)}`);
    await signIn(page, 'clinician', 'clinician-demo');
    await page.waitForSelector('input[name="patient"]');
    await page.check('input[name="patient"][value="demo-amy-shaw"]');
    await page.click('button.primary');
    await page.waitForSelector('input[name="encounter"]');
    await page.check('input[name="encounter"][value="demo-enc-amy-2"]');
    await page.click('button.primary');
    await page.waitForSelector('button[name="decision"][value="approve"]');
    await page.click('button[name="decision"][value="approve"]');
    const token = await tokenResponse(page);
    assert.equal(token.patient, 'demo-amy-shaw');
    assert.equal(token.encounter, 'demo-enc-amy-2');
    assert.equal(token.fhirUser, 'Practitioner/demo-practitioner');
    assert.equal(token.scope, 'launch/patient launch/encounter openid fhirUser patient/*.rs offline_access');
    assert.equal(token.refresh, true);
    assert.deepEqual(problems, []);
    await context.close();
  });

  it('standalone launch without an encounter: the picker asks for consent on the same page, its search keeps the choices; Deny needs no patient chosen', async () => {
    const scope = 'openid fhirUser launch/patient patient/*.rs';
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${issuer}/sample-app/launch.html?iss=${encodeURIComponent(`${issuer}/fhir`)}&scope=${encodeURIComponent(scope)}`);
    await signIn(page, 'clinician', 'clinician-demo');
    await page.waitForSelector('input[name="patient"]');
    assert.match((await page.textContent('h1')) ?? '', /^Allow .* to access the record of the patient you choose\?$/);
    assert.equal(await page.isVisible('input[name="scope"][value="patient/*.rs"]'), true, 'the consent choices are on the picker');
    assert.deepEqual(await axeViolations(page), [], 'axe-core on the picker that asks for consent');
    // Allow without a patient: the browser keeps the form (the choice is required) and says so.
    await page.click('button[name="decision"][value="approve"]');
    assert.equal(await page.evaluate('document.querySelector(\'input[name="patient"]\').validity.valid'), false);
    assert.equal(await page.isVisible('button[name="decision"][value="approve"]'), true, 'still on the page');
    // A choice, then a search by Enter in the search field: the results, and the choice kept.
    await page.uncheck('input[name="scope"][value="fhirUser"]');
    await page.fill('#q', 'okafor');
    await Promise.all([page.waitForURL(/\/consent$/), page.press('#q', 'Enter')]);
    assert.equal(await page.textContent('legend'), 'Patients matching "okafor"');
    assert.deepEqual(await page.evaluate('[...document.querySelectorAll(\'input[name="patient"]\')].map((i) => [i.value, i.checked])'), [['demo-daniel-okafor', true]]);
    assert.equal(await page.isChecked('input[name="scope"][value="fhirUser"]'), false, 'the scope unchecked before the search stays unchecked');
    assert.equal(await page.isChecked('input[name="scope"][value="patient/*.rs"]'), true);
    assert.deepEqual(await axeViolations(page), [], 'axe-core on the results of a search');
    await page.click('button[name="decision"][value="approve"]');
    const token = await tokenResponse(page);
    assert.equal(token.patient, 'demo-daniel-okafor');
    assert.equal(token.encounter, undefined);
    assert.equal(token.scope, 'openid launch/patient patient/*.rs');

    // Deny is sent without a patient (formnovalidate): the app hears access_denied.
    const denied = await context.newPage();
    await denied.goto(`${issuer}/sample-app/launch.html?iss=${encodeURIComponent(`${issuer}/fhir`)}&scope=${encodeURIComponent(scope)}`);
    await denied.waitForSelector('button[name="decision"][value="deny"]');
    await denied.click('button[name="decision"][value="deny"]');
    await denied.waitForSelector('body[data-error]', { timeout: 15_000 });
    assert.match((await denied.getAttribute('body', 'data-error')) ?? '', /access_denied|denied/);
    await context.close();
  });

  it('EHR launch: the launcher opens the app with a launch; the app gets the EHR context without a picker', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${issuer}/launcher`);
    await page.selectOption('#app', 'demo-app');
    await page.check('input[name="patient"][value="demo-daniel-okafor"]');
    await page.selectOption('#encounter', 'demo-enc-daniel-1');
    await page.click('details.more > summary');
    await page.uncheck('input[name="need_patient_banner"]');
    await page.click('button[name="go"][value="launch"]');
    await signIn(page, 'clinician', 'clinician-demo');
    await page.waitForSelector('button[name="decision"][value="approve"]');
    assert.match((await page.textContent('h1')) ?? '', /Daniel Okafor/);
    await page.click('button[name="decision"][value="approve"]');
    const token = await tokenResponse(page);
    assert.equal(token.patient, 'demo-daniel-okafor');
    assert.equal(token.encounter, 'demo-enc-daniel-1');
    assert.equal(token.need_patient_banner, false);
    assert.match(token.scope ?? '', /^launch openid fhirUser patient\/\*\.rs user\/\*\.rs offline_access$/);
    await context.close();
  });

  it('authorize-post over plain http in a real browser: the form post reaches sign-in and the code comes back', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${issuer}/sample-app/launch.html?iss=`); // any page on the origin: the form below is posted from it
    await page.setContent(`<form method="post" action="${issuer}/auth">
      ${Object.entries({ response_type: 'code', client_id: 'demo-app', redirect_uri: `${issuer}/sample-app/`, scope: 'launch/patient patient/Patient.rs', state: 'post-state', aud: `${issuer}/fhir`, code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' })
        .map(([k, v]) => `<input type="hidden" name="${k}" value="${v}">`)
        .join('')}<button id="go">go</button></form>`);
    await page.click('#go');
    await signIn(page, 'patient', 'patient-demo');
    await page.waitForSelector('button[name="decision"][value="approve"]');
    // Listen before the click: the sample app exchanges the code at once and takes it out of the address bar,
    // so on a slow machine a wait that starts after the click can miss the URL it is waiting for.
    const redirected = page.waitForURL(/\/sample-app\/\?code=[^&]+&state=post-state/, { waitUntil: 'commit' });
    await page.click('button[name="decision"][value="approve"]');
    await redirected;
    await context.close();
  });
});
