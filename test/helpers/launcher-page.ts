import type { BrowserContext, Page } from 'playwright-core';

/** What the sample app read, as it reports it on its body (data-loaded). */
export interface Loaded {
  readonly vitals: string[];
  readonly labs: string[];
}

/** What the sample app ended with: its data, or the error it reports (sign-in: data-error; FHIR read: data-fhir-error). */
export interface AppOutcome {
  readonly loaded?: Loaded;
  readonly error?: string;
  readonly fhirError?: string;
}

/** The launcher at `base`, the demo app chosen. */
export async function openLauncher(context: BrowserContext, base: string): Promise<Page> {
  const page = await context.newPage();
  await page.goto(`${base}/launcher`);
  await page.selectOption('#app', 'demo-app');
  return page;
}

/** Launches as the demo clinician, sign-in and consent skipped, for one patient, with an error to simulate if given. */
export async function launchSkipping(page: Page, patient: string, simulate?: string): Promise<void> {
  await page.selectOption('#user', 'demo-clinician');
  await page.check('input[name="skip_login"]');
  await page.check('input[name="skip_consent"]');
  await page.check(`input[name="patient"][value="${patient}"]`);
  if (simulate) await page.selectOption('#simulate', simulate);
  await page.click('button[name="go"][value="launch"]');
}

/** Waits for the sample app to finish, and says how. */
export async function appOutcome(page: Page, timeout = 20_000): Promise<AppOutcome> {
  await page.waitForSelector('body[data-loaded], body[data-error], body[data-fhir-error]', { timeout });
  const [loaded, error, fhirError] = await Promise.all([page.getAttribute('body', 'data-loaded'), page.getAttribute('body', 'data-error'), page.getAttribute('body', 'data-fhir-error')]);
  return { ...(loaded ? { loaded: JSON.parse(loaded) as Loaded } : {}), ...(error ? { error } : {}), ...(fhirError ? { fhirError } : {}) };
}
