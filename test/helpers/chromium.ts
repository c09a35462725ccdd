import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { chromium, type Browser, type Page } from 'playwright-core';

/**
 * Headless Chromium for the end-to-end tests: Debian's chromium (CHROMIUM_PATH to use another). Without one
 * the browser suites skip, unless REQUIRE_BROWSER=true (CI), which makes a missing browser fail instead.
 */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** The `skip` option of a browser suite: false when Chromium is there, else why it is skipped. */
export function chromiumSkip(): false | string {
  if (existsSync(CHROMIUM)) return false;
  if (process.env.REQUIRE_BROWSER === 'true') throw new Error(`REQUIRE_BROWSER is set but there is no browser at ${CHROMIUM}`);
  return `no browser at ${CHROMIUM} (apt-get install chromium)`;
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

interface AxeResult {
  readonly violations: { readonly id: string; readonly impact: string | null; readonly help: string; readonly nodes: { readonly target: unknown; readonly failureSummary?: string }[] }[];
}

let axeSource: Promise<string> | undefined;

/**
 * What axe-core finds wrong in the page, one line per violation with the nodes it names (evaluated through the
 * DevTools protocol: our pages' CSP allows no injected script).
 */
export async function axeViolations(page: Page): Promise<string[]> {
  axeSource ??= readFile(join(createRequire(import.meta.url).resolve('axe-core'), '..', 'axe.min.js'), 'utf8');
  await page.evaluate(await axeSource);
  const result = await page.evaluate<AxeResult>("axe.run(document, { resultTypes: ['violations'] })");
  return result.violations.map((v) => `${v.id} (${String(v.impact)}): ${v.help}\n${v.nodes.map((n) => `  ${JSON.stringify(n.target)} ${n.failureSummary ?? ''}`).join('\n')}`);
}
