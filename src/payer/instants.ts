import { fullFormats } from 'ajv-formats/dist/formats.js';

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

/** RFC 3339 §5.6 `date-time`, as the admin API's schemas check it (`format: 'date-time'`, ajv-formats). */
const isDateTime = fullFormats['date-time'] as { validate: (value: string) => boolean };

/**
 * An RFC 3339 date-time (a schema's `format: 'date-time'`) as a Date, or HttpProblem 400 naming it. Nothing
 * else is taken, though JavaScript would read it (`1` is 2001, `2026-02-30` is 2 March): a filter or a period
 * means what it says or is refused. The format allows a leap second (`23:59:60`), which JavaScript dates cannot
 * hold: it means the instant after `23:59:59`.
 */
export function instant(name: string, value: string, range: InstantRange): Date {
  if (!isDateTime.validate(value)) throw HttpProblem.invalid(`${name} ${value} is not a date-time this server can use: give an RFC 3339 date-time, as 2026-12-03T09:30:00Z`);
  // The forms RFC 3339 allows and JavaScript may not read: a lower-case `t` or `z`, a space between date and time.
  const normal = value.replace(/^(.{10})[Tt ]/, '$1T').replace(/z$/, 'Z');
  const leap = /:60(?=(\.\d+)?(Z|[+-]\d{2}:\d{2})$)/.test(normal);
  const date = new Date(leap ? normal.replace(/:60(?=(\.\d+)?(Z|[+-]\d{2}:\d{2})$)/, ':59') : normal);
  if (Number.isNaN(date.getTime())) throw HttpProblem.invalid(`${name} ${value} is not a date-time this server can use`);
  return withinRange(name, value, leap ? new Date(date.getTime() + 1000) : date, range);
}
