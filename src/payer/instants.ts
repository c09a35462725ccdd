import { HttpProblem } from '../errors.js';

/*
 * The instants the admin API and the operator console accept, and the range each may fall in. Postgres holds
 * 4713 BC to 294276 AD, but PGlite sends a Date as its ISO string, which Postgres refuses for the year 0000
 * and for the six-digit years JavaScript writes past 9999; and PGlite reads a stored year before 100 back as
 * 19xx or 20xx (JavaScript's two-digit years). Kept beside the payer's tables, the lowest layer that checks
 * its input with it (an ATR Group's periods): a store imports nothing above it.
 */

export interface InstantRange {
  readonly earliest: string;
  readonly latest: string;
  /** What the range is for, as a 400 says it: `<name> <value> is out of range: <use> from <earliest> to <latest>`. */
  readonly use: string;
}

const LATEST = '9999-12-31T23:59:59.999Z';

/** What a search may name: nothing is kept, so nothing is read back. */
export const SEARCHED_RANGE = { earliest: '0001-01-01T00:00:00Z', latest: LATEST } as const;

/** What a row may keep: an instant read back as it was written. */
export const KEPT_RANGE = { earliest: '0100-01-01T00:00:00Z', latest: LATEST, use: 'this server keeps instants' } as const satisfies InstantRange;

/** `at` (given as `value`, named `name`), or HttpProblem 400 when it falls outside `range`. */
export function withinRange(name: string, value: string, at: Date, range: InstantRange): Date {
  if (at < new Date(range.earliest) || at > new Date(range.latest)) throw HttpProblem.invalid(`${name} ${value} is out of range: ${range.use} from ${range.earliest} to ${range.latest}`);
  return at;
}

/**
 * An RFC 3339 date-time (a schema's `format: 'date-time'`) as a Date, or HttpProblem 400 naming it. The format
 * allows a leap second (`23:59:60`), which JavaScript dates cannot hold: it means the instant after `23:59:59`.
 */
export function instant(name: string, value: string, range: InstantRange): Date {
  const date = new Date(value.replace(/:60(?=(\.\d+)?(Z|[+-]\d{2}:\d{2})$)/i, ':59'));
  if (Number.isNaN(date.getTime())) throw HttpProblem.invalid(`${name} ${value} is not a date-time this server can use`);
  return withinRange(name, value, value.includes(':60') ? new Date(date.getTime() + 1000) : date, range);
}
