import assert from 'node:assert/strict';

import type { FastifyInstance, LightMyRequestResponse } from 'fastify';

/**
 * A browser without JavaScript over `app.inject`: keeps cookies by path, follows redirects on our origin,
 * submits forms by their fixed field names. Enough to drive every page the way a person (or a
 * no-JavaScript client) would.
 */
export class Browser {
  readonly #app: FastifyInstance;
  readonly #origin: string;
  /** Keyed by name and path, as a browser keeps them: the same name on two paths is two cookies. */
  readonly #cookies = new Map<string, { name: string; value: string; path: string }>();

  constructor(app: FastifyInstance, origin: string) {
    this.#app = app;
    this.#origin = origin;
  }

  cookieNames(): string[] {
    return [...new Set([...this.#cookies.values()].map((c) => c.name))];
  }

  clearCookies(): void {
    this.#cookies.clear();
  }

  /** The value of a cookie the browser holds. */
  cookie(name: string): string | undefined {
    return [...this.#cookies.values()].find((c) => c.name === name)?.value;
  }

  /** Stores a cookie as if a response had set it: to copy one into another browser, or forge one. */
  setCookie(name: string, value: string, path: string): void {
    this.#cookies.set(`${name} ${path}`, { name, value, path });
  }

  /** The HTTP requests this browser has sent. */
  requests = 0;

  /** One request, no redirect followed; from `remoteAddress` (default 127.0.0.1). */
  async send(method: 'GET' | 'POST', url: string, form?: Record<string, string | string[]>, remoteAddress?: string): Promise<LightMyRequestResponse> {
    const target = new URL(url, this.#origin);
    assert.equal(target.origin, this.#origin, `the browser only talks to the server under test, not ${target.origin}`);
    const cookie = [...this.#cookies.values()].filter((c) => target.pathname.startsWith(c.path)).map((c) => `${c.name}=${c.value}`).join('; ');
    const payload = form ? encodeForm(form) : undefined;
    this.requests++;
    if (process.env.SHOW_SQL) process.stderr.write(`HTTP ${method} ${target.pathname}\n`);
    const res = await this.#app.inject({
      method,
      url: `${target.pathname}${target.search}`,
      headers: { accept: 'text/html,application/xhtml+xml', ...(cookie ? { cookie } : {}), ...(payload !== undefined ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
      ...(payload !== undefined ? { payload } : {}),
      ...(remoteAddress ? { remoteAddress } : {}),
    });
    const setCookies = res.headers['set-cookie'];
    for (const line of Array.isArray(setCookies) ? setCookies : setCookies ? [setCookies] : []) this.#store(line);
    return res;
  }

  /** A request, then every redirect on our origin; stops at a page, or at a redirect elsewhere (the app). */
  async go(method: 'GET' | 'POST', url: string, form?: Record<string, string | string[]>): Promise<{ res: LightMyRequestResponse; location: string | undefined }> {
    let res = await this.send(method, url, form);
    for (let hops = 0; hops < 15; hops++) {
      const location = res.headers.location;
      if (!(res.statusCode >= 300 && res.statusCode < 400) || typeof location !== 'string') return { res, location: undefined };
      const next = new URL(location, `${this.#origin}${new URL(url, this.#origin).pathname}`);
      if (next.origin !== this.#origin || !next.pathname.startsWith(new URL(this.#origin).pathname)) return { res, location: next.href };
      res = await this.send('GET', next.href);
      url = next.href;
    }
    assert.fail('too many redirects');
  }

  #store(line: string): void {
    const [pair = '', ...attributes] = line.split(';').map((p) => p.trim());
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq);
    const value = pair.slice(eq + 1);
    let path = '/';
    let expired = false;
    for (const attribute of attributes) {
      const [key = '', v = ''] = attribute.split('=');
      if (key.toLowerCase() === 'path') path = v;
      if (key.toLowerCase() === 'expires' && Date.parse(v) < Date.now()) expired = true;
      if (key.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
    }
    if (expired || value === '') this.#cookies.delete(`${name} ${path}`);
    else this.#cookies.set(`${name} ${path}`, { name, value, path });
  }
}

function encodeForm(form: Record<string, string | string[]>): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(form)) for (const v of ([] as string[]).concat(value)) params.append(key, v);
  return params.toString();
}

/** The value of a hidden or text input in a page. */
export function inputValue(html: string, name: string): string {
  const match = new RegExp(`<input[^>]*name="${name}"[^>]*value="([^"]*)"`).exec(html) ?? new RegExp(`<input[^>]*value="([^"]*)"[^>]*name="${name}"`).exec(html);
  assert.ok(match, `no input ${name} in the page`);
  return decodeEntities(match[1]!);
}

/** The action of the form whose submit or fields mention `hint`. */
export function formAction(html: string, hint: string): string {
  const forms = [...html.matchAll(/<form[^>]*action="([^"]*)"[^>]*>([\s\S]*?)<\/form>/g)];
  const form = forms.find((f) => f[1]!.includes(hint) || f[2]!.includes(hint));
  assert.ok(form, `no form for ${hint}`);
  return decodeEntities(form[1]!);
}

/** The values of the checkboxes (or radios) named `name`, with whether they are checked. */
export function choices(html: string, name: string): { value: string; checked: boolean }[] {
  return [...html.matchAll(new RegExp(`<input type="(?:checkbox|radio)" name="${name}" value="([^"]*)"([^>]*)>`, 'g'))].map((m) => ({ value: decodeEntities(m[1]!), checked: /\bchecked\b/.test(m[2]!) }));
}

export function decodeEntities(text: string): string {
  return text.replace(/&#34;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&amp;/g, '&');
}
