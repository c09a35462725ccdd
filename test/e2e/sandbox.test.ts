import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { type Browser, type Page } from 'playwright-core';

import { startFhirServer } from '../../src/fhir/server.js';
import { freePort, testApp } from '../helpers/app.js';
import { axeViolations, chromiumSkip, launchChromium } from '../helpers/chromium.js';
import { createTestDatabase, type TestDatabase } from '../helpers/databases.js';
import { AMY, CATEGORY, DANIEL, LOINC, testRecords } from '../helpers/fhir-data.js';
import { appOutcome, launchSkipping, openLauncher, type Loaded } from '../helpers/launcher-page.js';

/**
 * The sandbox as a developer meets it (issue 13), in headless Chromium over real HTTP: the launcher opens
 * the sample app (fhirclient), which reads the chosen patient's vital signs and lab results through the FHIR
 * base with its token; with sign-in and consent, and with both skipped; a simulated error reaches the app.
 * axe-core finds no violation on the landing page, the launcher, the sample app and the consent page, in
 * light and dark mode. With SCREENSHOT_DIR set, each page is saved at desktop and phone size, as the screen
 * shows it and whole (scripts/sandbox-screenshots.sh).
 */
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR;
const SIZES = { desktop: { width: 1280, height: 800 }, phone: { width: 390, height: 844 } } as const;

/** Observations with values and dates, as the sample app's tables show them. */
function records(): Record<string, unknown>[] {
  const vital = (id: string, patient: string, date: string, value: number) => ({
    resourceType: 'Observation', id, status: 'final', category: [{ coding: [{ system: CATEGORY, code: 'vital-signs' }] }],
    code: { coding: [{ system: LOINC, code: '8867-4', display: 'Heart rate' }], text: 'Heart rate' }, subject: { reference: `Patient/${patient}` },
    effectiveDateTime: date, valueQuantity: { value, unit: '/min' },
  });
  const lab = (id: string, patient: string, date: string, value: number) => ({
    resourceType: 'Observation', id, status: 'final', category: [{ coding: [{ system: CATEGORY, code: 'laboratory' }] }],
    code: { coding: [{ system: LOINC, code: '2345-7', display: 'Glucose' }], text: 'Glucose' }, subject: { reference: `Patient/${patient}` },
    effectiveDateTime: date, valueQuantity: { value, unit: 'mg/dL' },
  });
  return [...testRecords(), vital('hr-amy-1', AMY, '2026-11-20', 72), lab('glu-amy-1', AMY, '2026-11-21', 98), vital('hr-daniel-1', DANIEL, '2026-10-02', 64), lab('glu-daniel-1', DANIEL, '2026-10-03', 131)];
}

describe('the sandbox in headless Chromium', { skip: chromiumSkip() }, () => {
  let database: TestDatabase;
  let upstream: Awaited<ReturnType<typeof startFhirServer>>;
  let app: FastifyInstance;
  let issuer: string;
  let browser: Browser;
  const checked = new Set<string>();

  before(async () => {
    database = await createTestDatabase('pglite');
    upstream = await startFhirServer();
    await upstream.fhir.load(records() as never);
    const port = await freePort();
    issuer = `http://127.0.0.1:${port}`;
    app = await testApp(database.database, { SANDBOX: 'true', SEED_DEMO: 'true', REGISTRATION: '', REGISTRATION_STATUS: '', ISSUER: issuer, FHIR_BASE_URLS: `${issuer}/fhir`, FHIR_UPSTREAMS: `${issuer}/fhir=${upstream.url}` });
    await app.listen({ port, host: '127.0.0.1' });
    browser = await launchChromium();
    if (SCREENSHOT_DIR) mkdirSync(SCREENSHOT_DIR, { recursive: true });
  });
  after(async () => {
    await browser.close();
    await app.close();
    await upstream.close();
    await database.drop();
  });

  /** axe-core in light and dark mode (evaluated through the DevTools protocol: the CSP allows no injected script); screenshots when asked. */
  async function accessible(page: Page, name: string): Promise<void> {
    for (const colorScheme of ['light', 'dark'] as const) {
      await page.emulateMedia({ colorScheme });
      const found = await axeViolations(page);
      assert.deepEqual(found, [], `axe-core on ${name}, ${colorScheme} mode (${page.url()})`);
    }
    await page.emulateMedia({ colorScheme: 'light' });
    checked.add(name);
    if (!SCREENSHOT_DIR) return;
    const viewport = page.viewportSize();
    for (const [size, dimensions] of Object.entries(SIZES)) {
      await page.setViewportSize(dimensions);
      // What fits the screen (the consent page's decision stays in view), and the whole page.
      await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}-${size}.png`) });
      await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}-${size}-full.png`), fullPage: true });
    }
    if (viewport) await page.setViewportSize(viewport);
  }

  async function loaded(page: Page): Promise<Loaded> {
    const outcome = await appOutcome(page);
    assert.equal(outcome.error, undefined, 'the sign-in worked');
    assert.equal(outcome.fhirError, undefined, 'the record was read');
    return outcome.loaded!;
  }

  it('the landing page leads to the launcher and the sample app', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${issuer}/`);
    assert.equal(await page.textContent('#mode'), 'Sandbox mode');
    await accessible(page, 'landing');
    await page.click('#launcher-link');
    await page.waitForURL(`${issuer}/launcher`);
    await accessible(page, 'launcher');
    await page.goto(`${issuer}/launcher?tab=standalone`);
    await accessible(page, 'launcher-standalone');
    await context.close();
  });

  it('launcher → sign-in → consent → the sample app reads exactly the chosen patient\'s vital signs and lab results', async () => {
    const context = await browser.newContext();
    const page = await openLauncher(context, issuer);
    await page.check(`input[name="patient"][value="${AMY}"]`);
    await page.click('button[name="go"][value="prepare"]');
    await page.waitForSelector('#launch-url');
    await accessible(page, 'launcher-ready');
    await page.click('#open-app');
    await page.waitForSelector('#username');
    await page.fill('#username', 'clinician');
    await page.fill('#password', 'clinician-demo');
    await page.click('button[type="submit"].primary');
    await page.waitForSelector('button[name="decision"][value="approve"]');
    assert.equal(await page.isVisible('button[name="decision"][value="approve"]'), true, 'the decision is in view');
    await accessible(page, 'consent');
    await page.click('button[name="decision"][value="approve"]');
    const data = await loaded(page);
    assert.deepEqual(data.vitals.sort(), ['hr-amy-1', 'obs-amy-vital']);
    assert.deepEqual(data.labs.sort(), ['glu-amy-1', 'obs-amy-contained', 'obs-amy-lab']);
    assert.equal(await page.textContent('#banner-name'), 'Amy Shaw');
    const token = (await page.textContent('#token-response')) ?? '';
    assert.match(token, /"access_token": "[^"]{4}… \(\d+ characters, masked\)"/);
    assert.equal(await page.isVisible('#encounter'), false, 'no encounter: the row is hidden');
    assert.equal(await page.getAttribute('#launch-again', 'href'), '../launcher');
    await accessible(page, 'sample-app');
    await page.click('#launch-again');
    await page.waitForURL(`${issuer}/launcher`);
    await context.close();
  });

  it('with sign-in and consent skipped the app opens straight on the chosen patient\'s data', async () => {
    const context = await browser.newContext();
    const page = await openLauncher(context, issuer);
    await launchSkipping(page, DANIEL);
    const data = await loaded(page);
    assert.deepEqual(data.vitals.sort(), ['hr-daniel-1', 'obs-daniel-vital']);
    assert.deepEqual(data.labs.sort(), ['glu-daniel-1', 'obs-daniel-lab']);
    await context.close();
  });

  it('each simulated error reaches the app as the error it names', async () => {
    const expected: Record<string, { attribute: 'data-error' | 'data-fhir-error'; match: RegExp }> = {
      launch_invalid: { attribute: 'data-error', match: /invalid_request[\s\S]*launch is unknown or expired/ },
      launch_expired: { attribute: 'data-error', match: /invalid_request[\s\S]*launch is unknown or expired/ },
      bad_aud: { attribute: 'data-error', match: /invalid_request[\s\S]*aud is not a FHIR server/ },
      consent_denied: { attribute: 'data-error', match: /access_denied/ },
      token_failure: { attribute: 'data-error', match: /500[\s\S]*server_error/ },
      bad_client_credentials: { attribute: 'data-error', match: /401[\s\S]*invalid_client/ },
      patient_not_found: { attribute: 'data-fhir-error', match: /404/ },
    };
    for (const [simulate, { attribute, match }] of Object.entries(expected)) {
      const context = await browser.newContext();
      const page = await openLauncher(context, issuer);
      await launchSkipping(page, AMY, simulate);
      await page.waitForSelector(`body[${attribute}]`, { timeout: 20_000 });
      assert.match((await page.getAttribute('body', attribute)) ?? '', match, simulate);
      await context.close();
    }
  });

  it('axe-core checked every sandbox page', () => {
    assert.deepEqual([...checked].sort(), ['consent', 'landing', 'launcher', 'launcher-ready', 'launcher-standalone', 'sample-app']);
  });
});
