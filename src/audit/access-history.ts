import { sql, type Kysely } from 'kysely';

import type { DB } from '../db/schema.js';

/** What one app read of a set of records, by kind of data: how often and when last (the gateway's access events). */
export interface AccessSummary {
  readonly clientId: string;
  /** Undefined for a batch or transaction (several kinds at once). */
  readonly resourceType: string | undefined;
  readonly count: number;
  readonly last: Date;
}

/**
 * The apps that reached these patients' records through the gateway in the last `days` days, per app and
 * kind of data (FHIR resource type), newest first. Read from the audit trail (`fhir.access` events), by
 * its (patient_id, recorded_at) index.
 */
export async function accessHistory(db: Kysely<DB>, patientIds: readonly string[], days = 90): Promise<AccessSummary[]> {
  if (!patientIds.length) return [];
  const rows = await db
    .selectFrom('audit_events')
    .select([
      'client_id',
      sql<string | null>`details->>'resourceType'`.as('resource_type'),
      sql<string>`count(*)`.as('count'),
      sql<Date>`max(recorded_at)`.as('last'),
    ])
    .where('type', '=', 'fhir.access')
    .where('outcome', '=', 'success')
    .where('patient_id', 'in', [...patientIds])
    .where('client_id', 'is not', null)
    .where('recorded_at', '>', sql<Date>`now() - make_interval(days => ${days})`)
    .groupBy(['client_id', sql`details->>'resourceType'`])
    .orderBy(sql`max(recorded_at)`, 'desc')
    .execute();
  return rows.map((r) => ({ clientId: r.client_id!, resourceType: r.resource_type ?? undefined, count: Number(r.count), last: new Date(r.last) }));
}
