import type { AuditRow } from '../../audit/audit.js';

/** Times as the console shows them: UTC, to the second, the same on every page. */
export function when(date: Date | null | undefined): string {
  return date ? `${date.toISOString().slice(0, 19).replace('T', ' ')} UTC` : '—';
}

/** An audit row as the console's tables show it. */
export function eventView(row: AuditRow): Record<string, unknown> {
  const details = Object.keys(row.details).length ? JSON.stringify(row.details) : '';
  return {
    seq: String(row.seq),
    at: when(row.recorded_at),
    type: row.type,
    outcome: row.outcome,
    actor: row.actor_id ? `${row.actor_type} ${row.actor_id}` : row.actor_type,
    concerning: [
      ...(row.user_id ? [`user ${row.user_id}`] : []),
      ...(row.client_id ? [`client ${row.client_id}`] : []),
      ...(row.patient_id ? [`patient ${row.patient_id}`] : []),
      ...(row.grant_id ? [`grant ${row.grant_id}`] : []),
    ],
    scope: row.scope,
    source: row.source_ip,
    details,
  };
}
