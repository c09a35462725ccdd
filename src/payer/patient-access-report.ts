import { sql, type Kysely } from 'kysely';

import type { DB } from '../db/schema.js';

/**
 * CMS-0057-F's Patient Access API metrics (42 CFR 422.119(f)(2) and its counterparts), read from the
 * gateway's access audit. A transfer is one FHIR interaction through the gateway, answered 2xx, by a client
 * an operator marked `payer_role: patient-access` (recorded with the event, so an app deleted or changed
 * since still counts for what it did), with a patient whose data it was. A year is a calendar year in UTC.
 */
export interface PatientAccessReport {
  readonly year: number;
  /** Unique patients whose data were transferred to a Patient Access app during the year. */
  readonly patients: number;
  /** Of those, the patients whose data were transferred more than once (to one app or to several). */
  readonly patientsMoreThanOnce: number;
  readonly transfers: number;
  readonly apps: readonly PatientAccessAppLine[];
}

export interface PatientAccessAppLine {
  readonly clientId: string;
  /** The app's name as it is registered now; null when the client no longer exists. */
  readonly clientName: string | null;
  readonly patients: number;
  readonly patientsMoreThanOnce: number;
  readonly transfers: number;
}

export async function patientAccessReport(db: Kysely<DB>, year: number): Promise<PatientAccessReport> {
  const from = new Date(Date.UTC(year, 0, 1));
  const to = new Date(Date.UTC(year + 1, 0, 1));
  // Each transfer once, by the partial index audit_events_patient_access.
  const transfers = db
    .selectFrom('audit_events')
    .select(['client_id', 'patient_id'])
    .where('type', '=', 'fhir.access')
    .where(sql<boolean>`details->>'payerRole' = 'patient-access'`)
    .where('recorded_at', '>=', from)
    .where('recorded_at', '<', to)
    .where('outcome', '=', 'success')
    .where(sql<boolean>`(details->>'status') ~ '^2[0-9][0-9]$'`)
    .where('patient_id', 'is not', null)
    .where('client_id', 'is not', null);

  const totals = await db
    .selectFrom(db.selectFrom(transfers.as('t')).select(['t.patient_id', sql<string>`count(*)`.as('n')]).groupBy('t.patient_id').as('p'))
    .select([sql<string>`count(*)`.as('patients'), sql<string>`count(*) filter (where p.n > 1)`.as('repeat'), sql<string | null>`sum(p.n)`.as('transfers')])
    .executeTakeFirstOrThrow();

  const perApp = await db
    .selectFrom(
      db
        .selectFrom(transfers.as('t'))
        .select(['t.client_id', 't.patient_id', sql<string>`count(*)`.as('n')])
        .groupBy(['t.client_id', 't.patient_id'])
        .as('a'),
    )
    .leftJoin('clients as c', 'c.client_id', 'a.client_id')
    .select(['a.client_id', sql<string | null>`max(c.metadata->>'client_name')`.as('client_name'), sql<string>`count(*)`.as('patients'), sql<string>`count(*) filter (where a.n > 1)`.as('repeat'), sql<string>`sum(a.n)`.as('transfers')])
    .groupBy('a.client_id')
    .orderBy('a.client_id')
    .execute();

  return {
    year,
    patients: Number(totals.patients),
    patientsMoreThanOnce: Number(totals.repeat),
    transfers: Number(totals.transfers ?? 0),
    apps: perApp.map((r) => ({ clientId: r.client_id!, clientName: r.client_name, patients: Number(r.patients), patientsMoreThanOnce: Number(r.repeat), transfers: Number(r.transfers) })),
  };
}

/** The report as CSV (RFC 4180): one line for all apps (client_id `*`), then one per app. */
export function patientAccessCsv(report: PatientAccessReport): string {
  const field = (value: string | number | null) => {
    // A name starting with = + - @ would be a formula to a spreadsheet (OWASP CSV injection).
    const text = value === null ? '' : typeof value === 'string' && /^[=+\-@\t\r]/.test(value) ? `'${value}` : String(value);
    return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };
  const lines = [
    ['year', 'client_id', 'client_name', 'unique_patients', 'patients_transferred_more_than_once', 'transfers'],
    [report.year, '*', 'all Patient Access apps', report.patients, report.patientsMoreThanOnce, report.transfers],
    ...report.apps.map((a) => [report.year, a.clientId, a.clientName, a.patients, a.patientsMoreThanOnce, a.transfers]),
  ];
  return lines.map((l) => l.map(field).join(',')).join('\r\n') + '\r\n';
}
