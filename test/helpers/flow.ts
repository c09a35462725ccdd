import assert from 'node:assert/strict';

import type { FastifyInstance, LightMyRequestResponse } from 'fastify';

import { TEST_FHIR_BASE, TEST_ISSUER } from './app.js';
import { choosesPatient, hasForm, hiddenFields } from '../../bench/lib/flows.js';
import { Browser, choices, formAction, inputValue } from './browser.js';
import { form, pkce } from './clients.js';

export const REDIRECT_URI = 'https://app.example/callback';

export interface Page {
  readonly res: LightMyRequestResponse;
  /** Where the browser was sent off our origin (the app's redirect_uri), if it was. */
  readonly location: string | undefined;
}

/** The page's <h1> text, or a description of a redirect. */
export function title(page: Page): string {
  if (page.location) return `redirect ${page.location}`;
  return (/<h1[^>]*>([\s\S]*?)<\/h1>/.exec(page.res.body)?.[1] ?? `(${page.res.statusCode}, no title)`).trim();
}

export interface Authorization {
  readonly browser: Browser;
  readonly verifier: string;
  readonly clientId: string;
  page: Page;
  /** The patient chosen on a picker that asks for consent on the same page: sent with the decision. */
  picked?: string;
}

/** Starts an authorization like an app does: GET /auth with PKCE and aud. */
export async function startAuthorization(app: FastifyInstance, params: Record<string, string>, options: { browser?: Browser; method?: 'GET' | 'POST' } = {}): Promise<Authorization> {
  const browser = options.browser ?? new Browser(app, TEST_ISSUER);
  const { verifier, challenge } = pkce();
  const all: Record<string, string> = { response_type: 'code', redirect_uri: REDIRECT_URI, state: 'state-1', aud: TEST_FHIR_BASE, code_challenge: challenge, code_challenge_method: 'S256', ...params };
  const page = options.method === 'POST' ? await browser.go('POST', '/auth', all) : await browser.go('GET', `/auth?${form(all)}`);
  return { browser, verifier, clientId: all.client_id ?? '', page };
}

export async function login(flow: Authorization, username: string, password: string): Promise<Page> {
  assert.equal(title(flow.page), 'Sign in', 'expected the sign-in page');
  const body = flow.page.res.body;
  flow.page = await flow.browser.go('POST', formAction(body, '/login'), { csrf: inputValue(body, 'csrf'), username, password });
  return flow.page;
}

export async function pickPatient(flow: Authorization, patient: string): Promise<Page> {
  const body = flow.page.res.body;
  assert.ok(choices(body, 'patient').some((c) => c.value === patient), `patient ${patient} is offered: ${title(flow.page)}`);
  // A picker that asks for consent too answers to …/consent: the choice goes with the decision (see consent).
  if (!hasForm(body, '/patient')) {
    flow.picked = patient;
    return flow.page;
  }
  flow.page = await flow.browser.go('POST', formAction(body, '/patient'), { csrf: inputValue(body, 'csrf'), patient });
  return flow.page;
}

export async function pickEncounter(flow: Authorization, encounter: string): Promise<Page> {
  const body = flow.page.res.body;
  flow.page = await flow.browser.go('POST', formAction(body, '/encounter'), { csrf: inputValue(body, 'csrf'), encounter });
  return flow.page;
}

/** Submits the consent form; by default with what the page checked. */
export async function consent(flow: Authorization, options: { decision?: 'approve' | 'deny'; scopes?: (offered: { value: string; checked: boolean }[]) => string[] } = {}): Promise<Page> {
  const body = flow.page.res.body;
  assert.match(title(flow.page), /^Allow /, `expected the consent page, got ${title(flow.page)}`);
  const offered = choices(body, 'scope');
  const scopes = options.scopes ? options.scopes(offered) : offered.filter((o) => o.checked).map((o) => o.value);
  // As a browser sends the form: its hidden fields (the CSRF token; the patient the page was shown for, sealed, when the interaction does not hold it yet), the choice and the button.
  const picked: Record<string, string> = flow.picked !== undefined && choosesPatient(body) ? { patient: flow.picked } : {};
  flow.page = await flow.browser.go('POST', formAction(body, '/consent'), { ...hiddenFields(body, '/consent'), ...picked, decision: options.decision ?? 'approve', scope: scopes });
  flow.picked = undefined;
  return flow.page;
}

/** The code (or error) the app received at its redirect_uri. */
export function callback(flow: Authorization): Record<string, string> {
  const location = flow.page.location;
  if (!location?.startsWith(`${REDIRECT_URI}?`)) assert.fail(`expected a redirect to the app, got ${title(flow.page)}`);
  return Object.fromEntries(new URL(location).searchParams);
}

export async function tokenRequest(app: FastifyInstance, params: Record<string, string>, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, payload: form(params) });
}

/** Exchanges the code as a public client. */
export async function exchange(app: FastifyInstance, flow: Authorization, overrides: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  const { code } = callback(flow);
  return tokenRequest(app, { grant_type: 'authorization_code', code: code!, redirect_uri: REDIRECT_URI, client_id: flow.clientId, code_verifier: flow.verifier, ...overrides });
}
