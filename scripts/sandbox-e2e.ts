/**
 * The sandbox as a developer first meets it, checked against a running server (`npm start` from a clean
 * clone): in headless Chromium, for several patients of the data pack, the launcher opens the sample app
 * (fhirclient), which reads the chosen patient's vital signs and lab results through /fhir; every
 * Observation it shows is read back with a backend token and must belong to that patient. Then with sign-in
 * and consent skipped, and each simulated error the launcher offers.
 *
 *   npx tsx scripts/sandbox-e2e.ts [http://localhost:3000]
 *
 * Exits non-zero on the first difference. CHROMIUM_PATH overrides /usr/bin/chromium.
 */
import type { Browser, Page } from 'playwright-core';

import { HttpBrowser, REDIRECT_URI, standaloneLaunch } from '../bench/lib/flows.js';
import { launchChromium } from '../test/helpers/chromium.js';
import { appOutcome, launchSkipping, openLauncher, type AppOutcome, type Loaded } from '../test/helpers/launcher-page.js';

const BASE = (process.argv[2] ?? 'http://localhost:3000').replace(/\/$/, '');
const PATIENTS = ['demo-amy-shaw', 'demo-daniel-okafor', 'demo-grace-miller'];


function fail(message: string): never {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

/**
 * A token to read back what the app saw: an app registered through open registration, the demo clinician
 * signing in with user/Observation.rs (open registration gives no system/ scopes).
 */
async function checkerToken(): Promise<string> {
  const reg = await fetch(`${BASE}/reg`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ client_name: 'sandbox-e2e checker', redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none', scope: 'user/Observation.rs' }),
  });
  if (reg.status !== 201) fail(`registration: ${reg.status} ${await reg.text()}`);
  const { client_id: clientId } = (await reg.json()) as { client_id: string };
  const token = await standaloneLaunch(new HttpBrowser(BASE), { clientId, scope: 'user/Observation.rs', fhirBase: `${BASE}/fhir`, username: 'clinician', password: 'clinician-demo' });
  return token.access_token as string;
}

async function subjectOf(token: string, id: string): Promise<string> {
  const res = await fetch(`${BASE}/fhir/Observation/${encodeURIComponent(id)}`, { headers: { authorization: `Bearer ${token}`, accept: 'application/fhir+json' } });
  if (res.status !== 200) fail(`Observation/${id}: ${res.status}`);
  return ((await res.json()) as { subject?: { reference?: string } }).subject?.reference ?? '';
}

async function loaded(page: Page): Promise<Loaded> {
  const outcome = await appOutcome(page, 30_000);
  if (outcome.error ?? outcome.fhirError) fail(`the sample app reported: ${outcome.error ?? outcome.fhirError ?? ''}`);
  return outcome.loaded!;
}

async function launch(browser: Browser, patient: string, skip: boolean): Promise<Loaded> {
  const context = await browser.newContext();
  const page = await openLauncher(context, BASE);
  if (skip) await launchSkipping(page, patient);
  else {
    await page.check(`input[name="patient"][value="${patient}"]`);
    await page.click('button[name="go"][value="prepare"]');
    await page.waitForSelector('#launch-url');
    await page.click('#open-app');
    await page.waitForSelector('#username');
    await page.fill('#username', 'clinician');
    await page.fill('#password', 'clinician-demo');
    await page.click('button[type="submit"].primary');
    await page.waitForSelector('button[name="decision"][value="approve"]');
    await page.click('button[name="decision"][value="approve"]');
  }
  const data = await loaded(page);
  await context.close();
  return data;
}

async function main(): Promise<void> {
  const browser = await launchChromium();
  try {
    const token = await checkerToken();
    for (const skip of [false, true]) {
      for (const patient of PATIENTS) {
        const data = await launch(browser, patient, skip);
        const ids = [...data.vitals, ...data.labs];
        if (!data.vitals.length || !data.labs.length) fail(`${patient}: the app showed ${data.vitals.length} vital signs and ${data.labs.length} lab results`);
        for (const id of ids) {
          const subject = await subjectOf(token, id);
          if (subject !== `Patient/${patient}`) fail(`${patient}: the app showed Observation/${id} of ${subject}`);
        }
        console.log(`ok   ${skip ? 'skipped sign-in and consent' : 'sign-in and consent'}: ${patient}: ${data.vitals.length} vital signs, ${data.labs.length} lab results, all hers or his`);
      }
    }
    // Each simulated error the launcher offers reaches the app (or the FHIR server's answer) as the error it names.
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${BASE}/launcher`);
    const simulations: { value: string; label: string }[] = [];
    for (const option of await page.$$('#simulate option')) {
      const value = (await option.getAttribute('value')) ?? '';
      if (value) simulations.push({ value, label: (await option.textContent()) ?? '' });
    }
    await context.close();
    for (const simulation of simulations) {
      const named = /\(([a-z_]+)\)\s*$/.exec(simulation.label)?.[1] ?? '';
      const ctx = await browser.newContext();
      const p = await openLauncher(ctx, BASE);
      await launchSkipping(p, PATIENTS[0]!, simulation.value);
      const outcome: AppOutcome = await appOutcome(p, 30_000).catch(() => ({}));
      const seen = `${outcome.error ?? ''} ${outcome.fhirError ?? ''} ${p.url()}`;
      console.log(`${seen.includes(named) ? 'ok  ' : 'note'} simulated ${simulation.value}: the app ${seen.includes(named) ? 'got' : 'did not show'} ${named}`);
      await ctx.close();
    }
  } finally {
    await browser.close();
  }
}

await main();
