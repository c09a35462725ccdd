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

/** RFC 3339 §5.6 `date-time`: a full date, a time with seconds, and an offset (`Z` or ±hh:mm). */
const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|([+-])(\d{2}):(\d{2}))$/;

/**
 * An RFC 3339 date-time (a schema's `format: 'date-time'`) as a Date, or HttpProblem 400 naming it. Nothing
 * else is taken, though JavaScript would read it (`1` is 2001, `2026-02-30` is 2 March): a filter or a period
 * means what it says or is refused. The format allows a leap second (`23:59:60`), which JavaScript dates cannot
 * hold: it means the instant after `23:59:59`.
 */
export function instant(name: string, value: string, range: InstantRange): Date {
  const parts = DATE_TIME.exec(value);
  const [year, month, day, hour, minute, second] = (parts?.slice(1, 7) ?? []).map<number>(Number);
  const offset = parts?.[9] ? { hours: Number(parts[10]), minutes: Number(parts[11]) } : { hours: 0, minutes: 0 };
  const fits =
    parts !== null &&
    month! >= 1 &&
    month! <= 12 &&
    day! >= 1 &&
    day! <= daysIn(year!, month!) &&
    hour! <= 23 &&
    minute! <= 59 &&
    second! <= 60 &&
    offset.hours <= 23 &&
    offset.minutes <= 59;
  if (!fits) throw HttpProblem.invalid(`${name} ${value} is not a date-time this server can use: give an RFC 3339 date-time, as 2026-12-03T09:30:00Z`);
  const date = new Date(value.replace(/:60(?=(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$)/, ':59'));
  if (Number.isNaN(date.getTime())) throw HttpProblem.invalid(`${name} ${value} is not a date-time this server can use`);
  return withinRange(name, value, second === 60 ? new Date(date.getTime() + 1000) : date, range);
}

function daysIn(year: number, month: number): number {
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  return [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]!;
}
