/**
 * Audit values as Postgres can store them. `text` and `jsonb` refuse NUL (U+0000), and `jsonb` refuses the
 * escape of a lone UTF-16 surrogate; a lone surrogate in a `text` parameter is replaced by U+FFFD on its way
 * (UTF-8 has no encoding for it), so the stored value would differ from the one hashed. Audit values come
 * from requests (a client_id, a reason quoting input), so each is cleaned before it is hashed and written:
 * NUL removed, lone surrogates replaced by U+FFFD, lengths capped, details reduced to what JSON holds.
 */
export const AUDIT_LIMITS = {
  /** Identifiers, addresses, request ids. */
  text: 1024,
  /** A granted scope can be a long list of granular scopes. */
  scope: 8192,
  detailString: 1024,
  detailKey: 128,
  /** Values in all of one event's details, nested ones included: bounds the row whatever the input. */
  detailValues: 256,
  detailDepth: 6,
} as const;

/** Marks a value cut at its limit. */
const ELLIPSIS = '…';

export function cleanText(value: string, limit: number = AUDIT_LIMITS.text): string {
  const clean = value.replaceAll('\u0000', '').toWellFormed();
  if (clean.length <= limit) return clean;
  let end = limit - ELLIPSIS.length;
  // Never cut a surrogate pair in two: that would leave a lone surrogate again.
  if (isHighSurrogate(clean.charCodeAt(end - 1))) end--;
  return clean.slice(0, end) + ELLIPSIS;
}

export function cleanOptionalText(value: string | undefined, limit: number = AUDIT_LIMITS.text): string | null {
  return value === undefined ? null : cleanText(value, limit);
}

/**
 * Details as jsonb will return them: what JSON.stringify keeps (undefined, functions and symbols dropped,
 * toJSON applied, non-finite numbers as null), bigints as strings, every key and string cleaned, and the
 * whole bounded in values and depth.
 */
export function cleanDetails(details: Readonly<Record<string, unknown>> | undefined): Record<string, unknown> {
  const budget = { values: AUDIT_LIMITS.detailValues };
  const cleaned = cleanJson(details ?? {}, 0, budget);
  return cleaned && typeof cleaned === 'object' && !Array.isArray(cleaned) ? (cleaned as Record<string, unknown>) : {};
}

function cleanJson(value: unknown, depth: number, budget: { values: number }): unknown {
  if (budget.values <= 0) return undefined;
  budget.values--;
  switch (typeof value) {
    case 'string':
      return cleanText(value, AUDIT_LIMITS.detailString);
    case 'number':
      return Number.isFinite(value) ? value : null;
    case 'boolean':
      return value;
    case 'bigint':
      return value.toString();
    case 'undefined':
    case 'function':
    case 'symbol':
      return undefined;
    case 'object':
      break;
  }
  if (value === null) return null;
  if (depth >= AUDIT_LIMITS.detailDepth) return ELLIPSIS;
  const toJSON = (value as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === 'function') return cleanJson((toJSON as () => unknown).call(value), depth + 1, budget);
  if (Array.isArray(value)) {
    const out: unknown[] = [];
    for (const item of value) {
      if (budget.values <= 0) break;
      out.push(cleanJson(item, depth + 1, budget) ?? null);
    }
    return out;
  }
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    if (budget.values <= 0) break;
    const cleaned = cleanJson(item, depth + 1, budget);
    if (cleaned !== undefined) out[cleanText(key, AUDIT_LIMITS.detailKey)] = cleaned;
  }
  return out;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
