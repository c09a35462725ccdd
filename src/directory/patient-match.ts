import type { Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import type { PatientResource } from './patients.js';

/**
 * Finding a patient by demographics (TEFCA Individual Access Services: the patient the requester says the
 * records are about). A patient of the directory matches when one of their names has the family name and
 * the given name asked for, and their birth date is the one asked for. Names are compared without regard
 * to case, accents or punctuation ("Nguyễn" = "NGUYEN", "O'Brien" = "O Brien").
 */
export interface Demographics {
  readonly family: string;
  readonly given: string;
  /** YYYY-MM-DD. */
  readonly birthDate: string;
}

/** Lower case, accents and other combining marks removed, anything but letters and digits one space. */
export function normalizeName(name: string): string {
  return name
    .normalize('NFKD')
    .replace(/\p{M}/gu, '')
    .toLowerCase()
    .replace(/[^\p{L}\p{N}]+/gu, ' ')
    .trim();
}

/**
 * The ids of the patients who match, at most `limit` (the caller needs to know whether there is exactly one:
 * 2 is enough). The birth date is indexed; the names are compared here, where accents can be folded.
 */
export async function matchPatients(db: Kysely<DB>, wanted: Demographics, limit = 2): Promise<string[]> {
  const family = normalizeName(wanted.family);
  const given = normalizeName(wanted.given);
  if (!family || !given) return [];
  const rows = await db.selectFrom('patients').select(['id', 'resource']).where('birth_date', '=', wanted.birthDate).orderBy('id').execute();
  const matches: string[] = [];
  for (const row of rows) {
    const names = (row.resource as PatientResource).name ?? [];
    if (!names.some((n) => n.family !== undefined && normalizeName(n.family) === family && (n.given ?? []).some((g) => normalizeName(g) === given))) continue;
    matches.push(row.id);
    if (matches.length >= limit) break;
  }
  return matches;
}
