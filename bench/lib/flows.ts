import { createHash, randomBytes } from 'node:crypto';

/** A browser over fetch: cookies by name and path, redirects followed on our origin, forms by field name. */
export class HttpBrowser {
  /** Keyed by `name path`, as a browser keeps them: the same name on two paths is two cookies. */
  readonly #cookies = new Map<string, { name: string; value: string; path: string }>();

  constructor(readonly origin: string) {}

  async request(method: 'GET' | 'POST', url: string, form?: Record<string, string | string[]>): Promise<{ status: number; location: string | null; body: string }> {
    const target = new URL(url, this.origin);
    const cookie = [...this.#cookies.values()].filter((c) => target.pathname.startsWith(c.path)).map((c) => `${c.name}=${c.value}`).join('; ');
    let body: string | undefined;
    if (form) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(form)) for (const item of ([] as string[]).concat(v)) params.append(k, item);
      body = params.toString();
    }
    const res = await fetch(target, {
      method,
      redirect: 'manual',
      headers: { accept: 'text/html', ...(cookie ? { cookie } : {}), ...(body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
      ...(body ? { body } : {}),
    });
    for (const line of res.headers.getSetCookie()) {
      const [pair = '', ...attributes] = line.split(';').map((p) => p.trim());
      const eq = pair.indexOf('=');
      const path = attributes.find((a) => a.toLowerCase().startsWith('path='))?.slice(5) ?? '/';
      const expired = attributes.some((a) => a.toLowerCase().startsWith('expires=') && Date.parse(a.slice(8)) < Date.now());
      const name = pair.slice(0, eq);
      if (expired || pair.slice(eq + 1) === '') this.#cookies.delete(`${name} ${path}`);
      else this.#cookies.set(`${name} ${path}`, { name, value: pair.slice(eq + 1), path });
    }
    return { status: res.status, location: res.headers.get('location'), body: await res.text() };
  }

  /** Follows redirects on our origin; stops at a page, or where the browser leaves for the app. */
  async follow(method: 'GET' | 'POST', url: string, form?: Record<string, string | string[]>): Promise<{ status: number; body: string; appUrl: string | undefined }> {
    let res = await this.request(method, url, form);
    let current = new URL(url, this.origin);
    for (let hops = 0; hops < 12 && res.status >= 300 && res.status < 400 && res.location; hops++) {
      const next = new URL(res.location, current);
      if (next.origin !== new URL(this.origin).origin) return { status: res.status, body: res.body, appUrl: next.href };
      current = next;
      res = await this.request('GET', next.href);
    }
    return { status: res.status, body: res.body, appUrl: undefined };
  }
}

export function field(html: string, name: string): string {
  const value = new RegExp(`name="${name}" value="([^"]*)"`).exec(html)?.[1];
  if (value === undefined) throw new Error(`no field ${name} in the page:\n${html.slice(0, 500)}`);
  return value.replace(/&amp;/g, '&');
}

/** The hidden inputs of the form whose action ends with `suffix`, as a browser submits them with it. */
export function hiddenFields(html: string, suffix: string): Record<string, string> {
  const form = [...html.matchAll(/<form[^>]*action="([^"]*)"[^>]*>([\s\S]*?)<\/form>/g)].find((m) => m[1]!.endsWith(suffix));
  if (!form) throw new Error(`no form ending ${suffix}`);
  const inputs = [...form[2]!.matchAll(/<input type="hidden" name="([^"]*)" value="([^"]*)">/g)];
  return Object.fromEntries(inputs.map((m) => [m[1]!, m[2]!.replace(/&amp;/g, '&')]));
}

/** Whether the page has a form that answers to an action ending `suffix` (the picker's …/patient, say). */
export function hasForm(html: string, suffix: string): boolean {
  return [...html.matchAll(/<form[^>]*action="([^"]*)"/g)].some((m) => m[1]!.endsWith(suffix));
}

/** Whether the page's form chooses the patient itself (the picker that asks for consent on the same page). */
export function choosesPatient(html: string): boolean {
  return html.includes('type="radio" name="patient"');
}

export function action(html: string, suffix: string): string {
  const found = [...html.matchAll(/action="([^"]*)"/g)].map((m) => m[1]!).find((a) => a.endsWith(suffix));
  if (!found) throw new Error(`no form ending ${suffix}`);
  return found;
}

export const VERIFIER = randomBytes(32).toString('base64url');
export const CHALLENGE = createHash('sha256').update(VERIFIER).digest('base64url');
export const REDIRECT_URI = 'https://bench.example/cb';

export interface LaunchOptions {
  readonly clientId: string;
  readonly scope: string;
  readonly fhirBase: string;
}

/**
 * One standalone launch as a browser drives it: authorize, sign in (unless the browser has a session),
 * choose the patient and consent (one page or two), and the app's code exchange. Returns the token response.
 */
export async function standaloneLaunch(browser: HttpBrowser, options: LaunchOptions & { username: string; password: string; patient?: string }): Promise<Record<string, unknown>> {
  const query = new URLSearchParams({ response_type: 'code', client_id: options.clientId, redirect_uri: REDIRECT_URI, scope: options.scope, state: 's', aud: options.fhirBase, code_challenge: CHALLENGE, code_challenge_method: 'S256' });
  let page = await browser.follow('GET', `/auth?${query.toString()}`);
  if (page.body.includes('name="password"')) page = await browser.follow('POST', action(page.body, '/login'), { csrf: field(page.body, 'csrf'), username: options.username, password: options.password });
  // The picker: its form answers to …/patient (the consent page's form carries a patient too, sealed, in a hidden field).
  if (hasForm(page.body, '/patient')) page = await browser.follow('POST', action(page.body, '/patient'), { ...hiddenFields(page.body, '/patient'), patient: options.patient ?? '' });
  if (page.body.includes('name="decision"')) {
    const scopes = [...page.body.matchAll(/name="scope" value="([^"]*)" checked/g)].map((m) => m[1]!.replace(/&amp;/g, '&'));
    // The picker that asks for consent on the same page: the patient is one of its radio buttons.
    const picked: Record<string, string> = choosesPatient(page.body) ? { patient: options.patient ?? '' } : {};
    page = await browser.follow('POST', action(page.body, '/consent'), { ...hiddenFields(page.body, '/consent'), ...picked, decision: 'approve', scope: scopes });
  }
  if (!page.appUrl) throw new Error(`the launch did not reach the app (${page.status}):\n${page.body.slice(0, 300)}`);
  const code = new URL(page.appUrl).searchParams.get('code');
  if (!code) throw new Error(`no code: ${page.appUrl}`);
  return exchange(browser.origin, options.clientId, code);
}

export async function exchange(origin: string, clientId: string, code: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${origin}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, client_id: clientId, code_verifier: VERIFIER }).toString(),
  });
  if (res.status !== 200) throw new Error(`token ${res.status}: ${await res.text()}`);
  return (await res.json()) as Record<string, unknown>;
}

/**
 * Codes for the code-exchange scenario, minted through the real authorization endpoint by browsers that
 * already have a session (one authorization at a time each, as people do), for a pre-approved client:
 * authorize → our interaction decides → code.
 */
export async function mintCodes(browsers: readonly HttpBrowser[], options: LaunchOptions, n: number): Promise<string[]> {
  const codes: string[] = [];
  const query = new URLSearchParams({ response_type: 'code', client_id: options.clientId, redirect_uri: REDIRECT_URI, scope: options.scope, state: 's', aud: options.fhirBase, code_challenge: CHALLENGE, code_challenge_method: 'S256' }).toString();
  await Promise.all(
    browsers.map(async (browser) => {
      while (codes.length < n) {
        const page = await browser.follow('GET', `/auth?${query}`);
        const code = page.appUrl ? new URL(page.appUrl).searchParams.get('code') : null;
        if (!code) throw new Error(`minting a code failed (${page.status}): ${(/<dl class="details">[\s\S]*?<\/dl>/.exec(page.body) ?? [page.body.slice(0, 300)])[0]}`);
        codes.push(code);
      }
    }),
  );
  return codes.slice(0, n);
}
