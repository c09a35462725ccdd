import type { Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import { HttpProblem } from '../errors.js';
import { KEPT_RANGE, withinRange } from './instants.js';

/**
 * Attribution lists of provider organisations (CMS-0057-F §422.121(b)(2): the payer attributes members to
 * providers), imported as Da Vinci ATR Group resources: Group.id names the list, Group.identifier the
 * organisation (NPI or TIN), each Group.member a patient with its period and `inactive`. A list is replaced
 * whole by each import of its Group, so members added and removed over time follow the Group as it is.
 */

export const NPI_SYSTEM = 'http://hl7.org/fhir/sid/us-npi';
export const TIN_SYSTEM = 'urn:oid:2.16.840.1.113883.4.4';
const ID = /^[A-Za-z0-9\-.]{1,64}$/;
/** FHIR R4 dateTime (and date), with the precision it was given. */
const DATE_TIME = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?)?)?$/;
const LATEST_KEPT = new Date(KEPT_RANGE.latest);
/** More members than this in one Group are refused (a list that large is sent in parts, one Group each). */
export const MAX_MEMBERS = 100_000;

export interface AttributionMember {
  readonly patientId: string;
  readonly periodStart: Date | null;
  /** Exclusive: the first instant the member is no longer attributed. */
  readonly periodEnd: Date | null;
  readonly inactive: boolean;
}

export interface AttributionList {
  readonly id: string;
  readonly organization: string;
  readonly name: string | null;
  readonly members: readonly AttributionMember[];
}

export interface AttributionListSummary {
  readonly id: string;
  readonly organization: string;
  readonly name: string | null;
  readonly members: number;
  /** Members attributed now (active, within their period). */
  readonly attributedNow: number;
  readonly updatedAt: Date;
}

/**
 * A Group (Da Vinci ATR) as an attribution list. @throws {HttpProblem} 400 naming what does not fit.
 * `organization` (system|value) overrides the Group's identifiers.
 */
export function attributionListOf(value: unknown, organization?: string): AttributionList {
  const group = value as Record<string, unknown> | null;
  if (typeof group !== 'object' || group === null || group.resourceType !== 'Group') throw HttpProblem.invalid('the body must be a FHIR R4 Group (Da Vinci ATR member attribution list)');
  if (typeof group.id !== 'string' || !ID.test(group.id)) throw HttpProblem.invalid('Group.id is required: it names the attribution list (1-64 of A-Z a-z 0-9 - .)');
  const org = organization ?? organizationOf(group.identifier);
  if (!org) throw HttpProblem.invalid(`Group.identifier must hold the organisation's NPI (${NPI_SYSTEM}) or TIN (${TIN_SYSTEM})`);
  const members = group.member === undefined ? [] : group.member;
  if (!Array.isArray(members)) throw HttpProblem.invalid('Group.member must be an array');
  if (members.length > MAX_MEMBERS) throw HttpProblem.invalid(`Group.member has ${members.length} members; at most ${MAX_MEMBERS} per Group`);
  const byPatient = new Map<string, AttributionMember>();
  for (const [i, raw] of members.entries()) {
    const at = `Group.member[${i}]`;
    const member = raw as { entity?: { reference?: unknown }; period?: { start?: unknown; end?: unknown }; inactive?: unknown } | null;
    const reference = member?.entity?.reference;
    const patientId = typeof reference === 'string' ? /^Patient\/([A-Za-z0-9\-.]{1,64})$/.exec(reference)?.[1] : undefined;
    if (!patientId) throw HttpProblem.invalid(`${at}.entity.reference must be Patient/<id>`);
    if (member?.inactive !== undefined && typeof member.inactive !== 'boolean') throw HttpProblem.invalid(`${at}.inactive must be true or false`);
    const periodStart = bound(member?.period?.start, 'start', `${at}.period.start`);
    const periodEnd = bound(member?.period?.end, 'end', `${at}.period.end`);
    if (periodStart && periodEnd && periodEnd <= periodStart) throw HttpProblem.invalid(`${at}.period ends before it starts`);
    if (byPatient.has(patientId)) throw HttpProblem.invalid(`${at}: Patient/${patientId} is listed twice`);
    byPatient.set(patientId, { patientId, periodStart, periodEnd, inactive: member?.inactive === true });
  }
  const name = typeof group.name === 'string' ? group.name.slice(0, 200) : null;
  return { id: group.id, organization: org, name, members: [...byPatient.values()] };
}

function organizationOf(identifiers: unknown): string | undefined {
  if (!Array.isArray(identifiers)) return undefined;
  const pick = (system: string) => identifiers.find((i: { system?: unknown; value?: unknown } | null) => i?.system === system && typeof i.value === 'string' && /^[^|\s]{1,64}$/.test(i.value)) as { value: string } | undefined;
  const npi = pick(NPI_SYSTEM);
  if (npi) return `${NPI_SYSTEM}|${npi.value}`;
  const tin = pick(TIN_SYSTEM);
  return tin ? `${TIN_SYSTEM}|${tin.value}` : undefined;
}

/**
 * A period's start or end as an instant. FHIR R4 §Period: the end is inclusive at the precision given, so
 * an end of `2026-06-30` lasts through that day (stored as the start of the next, exclusive). What it names
 * must be an instant this server keeps (src/payer/instants.ts).
 */
function bound(value: unknown, which: 'start' | 'end', at: string): Date | null {
  if (value === undefined) return null;
  const match = typeof value === 'string' ? DATE_TIME.exec(value) : null;
  if (!match) throw HttpProblem.invalid(`${at} must be a FHIR date or dateTime`);
  const [, y, mo, d, h, mi, s, zone] = match;
  let first: Date;
  let next: Date;
  if (h !== undefined) {
    first = new Date(`${y!}-${mo!}-${d!}T${h}:${mi!}:${s ?? '00'}${zone === 'Z' ? 'Z' : zone!}`);
    if (Number.isNaN(first.getTime())) throw HttpProblem.invalid(`${at} is not a valid dateTime`);
    next = new Date(first.getTime() + (s === undefined ? 60_000 : 1000));
  } else {
    const year = Number(y);
    const month = mo === undefined ? 0 : Number(mo) - 1;
    const day = d === undefined ? 1 : Number(d);
    first = utcDate(year, month, day);
    if (first.getUTCMonth() !== month || first.getUTCDate() !== day) throw HttpProblem.invalid(`${at} is not a valid date`);
    next = d !== undefined ? utcDate(year, month, day + 1) : mo !== undefined ? utcDate(year, month + 1, 1) : utcDate(year + 1, 0, 1);
  }
  withinRange(at, match[0], first, KEPT_RANGE);
  if (which === 'start') return first;
  // An end of 9999-12-31 (a common "no end") would be kept as the year 10000, which the database cannot be
  // given: it ends at the last instant kept instead.
  return next > LATEST_KEPT ? LATEST_KEPT : next;
}

/** Midnight UTC of a calendar day; Date.UTC would read the years 0-99 as 1900-1999. */
function utcDate(year: number, month: number, day: number): Date {
  const date = new Date(0);
  date.setUTCFullYear(year, month, day);
  return date;
}

/** Replaces the list (and its members) with the imported Group, in one transaction. */
export async function saveAttributionList(db: Kysely<DB>, list: AttributionList): Promise<{ created: boolean }> {
  return db.transaction().execute(async (trx) => {
    const existing = await trx.selectFrom('attribution_lists').select(['id', 'organization']).where('id', '=', list.id).forUpdate().executeTakeFirst();
    // A Group re-imported replaces its own organisation's list; under another organisation it would hand that
    // organisation every member of the list (a Group.id reused, a wrong ?organization=), without anyone asking.
    if (existing && existing.organization !== list.organization) {
      throw HttpProblem.conflict(`attribution list ${list.id} is the list of ${existing.organization}, not of ${list.organization}: delete it first to import it for another organisation, or give the Group another id`);
    }
    if (existing) {
      await trx.updateTable('attribution_lists').set({ organization: list.organization, name: list.name, updated_at: new Date() }).where('id', '=', list.id).execute();
      await trx.deleteFrom('attribution_members').where('list_id', '=', list.id).execute();
    } else {
      await trx.insertInto('attribution_lists').values({ id: list.id, organization: list.organization, name: list.name }).execute();
    }
    // In chunks: a statement carries at most 65535 parameters.
    for (let i = 0; i < list.members.length; i += 5000) {
      const chunk = list.members.slice(i, i + 5000);
      await trx
        .insertInto('attribution_members')
        .values(chunk.map((m) => ({ list_id: list.id, patient_id: m.patientId, period_start: m.periodStart, period_end: m.periodEnd, inactive: m.inactive })))
        .execute();
    }
    return { created: !existing };
  });
}

export async function deleteAttributionList(db: Kysely<DB>, id: string): Promise<boolean> {
  const result = await db.deleteFrom('attribution_lists').where('id', '=', id).executeTakeFirst();
  return result.numDeletedRows > 0n;
}

export async function listAttributionLists(db: Kysely<DB>, organization?: string): Promise<AttributionListSummary[]> {
  let query = db
    .selectFrom('attribution_lists as l')
    .leftJoin('attribution_members as m', 'm.list_id', 'l.id')
    .select((eb) => [
      'l.id',
      'l.organization',
      'l.name',
      'l.updated_at',
      eb.fn.count<string>('m.patient_id').as('members'),
      eb.fn
        .count<string>('m.patient_id')
        .filterWhere((w) => w.and([w('m.inactive', '=', false), w.or([w('m.period_start', 'is', null), w('m.period_start', '<=', new Date())]), w.or([w('m.period_end', 'is', null), w('m.period_end', '>', new Date())])]))
        .as('attributed_now'),
    ])
    .groupBy(['l.id', 'l.organization', 'l.name', 'l.updated_at'])
    .orderBy('l.id');
  if (organization !== undefined) query = query.where('l.organization', '=', organization);
  const rows = await query.execute();
  return rows.map((r) => ({ id: r.id, organization: r.organization, name: r.name, members: Number(r.members), attributedNow: Number(r.attributed_now), updatedAt: new Date(r.updated_at) }));
}

export async function getAttributionList(db: Kysely<DB>, id: string): Promise<AttributionList | undefined> {
  const list = await db.selectFrom('attribution_lists').selectAll().where('id', '=', id).executeTakeFirst();
  if (!list) return undefined;
  const members = await db.selectFrom('attribution_members').selectAll().where('list_id', '=', id).orderBy('patient_id').execute();
  return {
    id: list.id,
    organization: list.organization,
    name: list.name,
    members: members.map((m) => ({ patientId: m.patient_id, periodStart: m.period_start && new Date(m.period_start), periodEnd: m.period_end && new Date(m.period_end), inactive: m.inactive })),
  };
}
