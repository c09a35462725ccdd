import type { AuditRow } from './audit.js';

/**
 * Audit rows as FHIR R4 AuditEvent resources, after the IHE Basic Audit Log Patterns (BALP) where they fit:
 * sign-ins are DICOM "User Authentication", failures of credentials or replays "Security Alert", the rest
 * RESTful operations; our own event type is the subtype; the patient, the grant and the scope are entities.
 */
const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const AUDIT_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-event-type';
const ENTITY_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-entity-type';
const OBJECT_ROLE = 'http://terminology.hl7.org/CodeSystem/object-role';
const SOURCE_TYPE = 'http://terminology.hl7.org/CodeSystem/security-source-type';
const PARTICIPATION = 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType';
export const EVENT_SUBTYPE_SYSTEM = 'urn:smart-auth-server:audit-event-type';

export function toAuditEvent(row: AuditRow, issuer: string): Record<string, unknown> {
  const type = row.type.startsWith('login.')
    ? { system: DCM, code: '110114', display: 'User Authentication' }
    : row.outcome === 'failure' && /\.(failed|reused|replayed)$/.test(row.type)
      ? { system: DCM, code: '110113', display: 'Security Alert' }
      : { system: AUDIT_TYPE, code: 'rest', display: 'RESTful Operation' };

  const agents: Record<string, unknown>[] = [];
  const network = row.source_ip ? { network: { address: row.source_ip, type: row.source_ip.includes(':') ? '5' : '2' } } : {};
  if (row.user_id) {
    agents.push({
      type: { coding: [{ system: PARTICIPATION, code: 'IRCP', display: 'information recipient' }] },
      who: { identifier: { system: `${issuer}/users`, value: row.user_id } },
      requestor: row.actor_type === 'user',
      ...network,
    });
  }
  if (row.client_id) {
    agents.push({
      type: { coding: [{ system: DCM, code: '110150', display: 'Application' }] },
      who: { identifier: { system: `${issuer}/clients`, value: row.client_id } },
      requestor: row.actor_type === 'client',
      ...(row.user_id ? {} : network),
    });
  }
  if (!agents.some((a) => a.requestor === true)) {
    agents.push({
      type: { coding: [{ system: DCM, code: '110153', display: 'Source Role ID' }] },
      who: { display: row.actor_type === 'admin' ? `administrator ${row.actor_id ?? ''}`.trim() : row.actor_type },
      requestor: true,
      ...(agents.length ? {} : network),
    });
  }

  const entities: Record<string, unknown>[] = [];
  if (row.patient_id) {
    entities.push({ what: { reference: `Patient/${row.patient_id}` }, type: { system: ENTITY_TYPE, code: '1', display: 'Person' }, role: { system: OBJECT_ROLE, code: '1', display: 'Patient' } });
  }
  if (row.grant_id || row.scope) {
    entities.push({
      what: { identifier: { system: `${issuer}/grants`, value: row.grant_id ?? 'none' } },
      type: { system: ENTITY_TYPE, code: '2', display: 'System Object' },
      ...(row.scope ? { detail: [{ type: 'scope', valueString: row.scope }] } : {}),
    });
  }

  return {
    resourceType: 'AuditEvent',
    id: String(row.seq),
    type,
    subtype: [{ system: EVENT_SUBTYPE_SYSTEM, code: row.type }],
    action: actionOf(row.type),
    recorded: row.recorded_at.toISOString(),
    outcome: row.outcome === 'success' ? '0' : '4',
    ...(typeof row.details.reason === 'string' ? { outcomeDesc: row.details.reason } : {}),
    agent: agents,
    source: { observer: { display: 'smart-auth-server', identifier: { value: issuer } }, type: [{ system: SOURCE_TYPE, code: '4', display: 'Application Server' }] },
    ...(entities.length ? { entity: entities } : {}),
  };
}

/** C create, R read, U update, D delete, E execute. */
function actionOf(type: string): 'C' | 'R' | 'U' | 'D' | 'E' {
  if (/\.(created|registered|imported)$/.test(type) || type === 'token.issued' || type === 'consent.granted') return 'C';
  if (type === 'token.introspected') return 'R';
  if (/\.(updated|password_reset|secret_rotated|rotated|refreshed)$/.test(type)) return 'U';
  if (/\.(deleted|revoked)$/.test(type)) return 'D';
  return 'E';
}
