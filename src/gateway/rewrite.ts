/**
 * The upstream's base URL, wherever an answer says it (a Bundle's `link` and `fullUrl`, a reference, a
 * CapabilityStatement's `implementation.url`, `Location`), becomes the public FHIR base; and the public base
 * in a request body (absolute references, a transaction's `fullUrl`) becomes the upstream's, so that the
 * upstream sees its own URLs.
 */
export class BaseRewriter {
  readonly #from: string;
  readonly #to: string;

  constructor(from: string, to: string) {
    this.#from = from.replace(/\/$/, '');
    this.#to = to.replace(/\/$/, '');
  }

  /** A URL under the `from` base, under the `to` base; anything else as it is. */
  url(value: string): string {
    if (!value.startsWith(this.#from)) return value;
    const rest = value.slice(this.#from.length);
    return rest === '' || rest.startsWith('/') || rest.startsWith('?') ? `${this.#to}${rest}` : value;
  }

  /** Every string of a JSON value that is a URL under the `from` base. A new value; the given one is not changed. */
  json(value: unknown): unknown {
    if (typeof value === 'string') return this.url(value);
    if (Array.isArray(value)) return value.map((v) => this.json(v));
    if (value === null || typeof value !== 'object') return value;
    const out: Record<string, unknown> = {};
    for (const [key, child] of Object.entries(value)) out[key] = this.json(child);
    return out;
  }
}
