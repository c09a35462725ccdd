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
const NPI_SYSTEM = 'http://hl7.org/fhir/sid/us-npi';

/** A UDAP purpose of use (`system#code`, as hl7-b2b carries it) as a Coding. */
function codingOf(purpose: string): { system?: string; code: string } {
  const at = purpose.lastIndexOf('#');
  return at > 0 ? { system: purpose.slice(0, at), code: purpose.slice(at + 1) } : { code: purpose };
}

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
  // UDAP hl7-b2b: the person at the organisation who asked (subject_id, an NPI for Provider Access), and why.
  const b2b = row.type === 'fhir.access' ? (row.details.b2b as { subjectId?: unknown; purposeOfUse?: unknown } | undefined) : undefined;
  if (b2b && typeof b2b.subjectId === 'string') {
    const purposes = Array.isArray(b2b.purposeOfUse) ? b2b.purposeOfUse.filter((p): p is string => typeof p === 'string') : [];
    agents.push({
      type: { coding: [{ system: PARTICIPATION, code: 'PPRF', display: 'primary performer' }] },
      who: { identifier: /^\d{10}$/.test(b2b.subjectId) ? { system: NPI_SYSTEM, value: b2b.subjectId } : { value: b2b.subjectId } },
      requestor: false,
      ...(purposes.length ? { purposeOfUse: purposes.map((p) => ({ coding: [codingOf(p)] })) } : {}),
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

  const access = row.type === 'fhir.access' ? fhirAccessOf(row) : undefined;
  if (access?.entity) entities.push(access.entity);
  // A window's count of repeated events (AuditLog.recordRepeating): how many, on an entity of its own, and when.
  const repeats = repeatsOf(row);
  if (repeats) entities.push({ what: { display: 'repeated events' }, type: { system: ENTITY_TYPE, code: '2', display: 'System Object' }, detail: [{ type: 'repeated', valueString: String(repeats.count) }] });

  return {
    resourceType: 'AuditEvent',
    id: String(row.seq),
    type,
    subtype: [{ system: EVENT_SUBTYPE_SYSTEM, code: row.type }, ...(access ? [access.subtype] : [])],
    action: access?.action ?? actionOf(row.type),
    ...(repeats ? { period: { start: repeats.first, end: repeats.last } } : {}),
    recorded: row.recorded_at.toISOString(),
    outcome: row.outcome === 'success' ? '0' : access?.serious ? '8' : '4',
    ...(typeof row.details.reason === 'string' ? { outcomeDesc: row.details.reason } : {}),
    agent: agents,
    source: { observer: { display: 'smart-auth-server', identifier: { value: issuer } }, type: [{ system: SOURCE_TYPE, code: '4', display: 'Application Server' }] },
    ...(entities.length ? { entity: entities } : {}),
  };
}

function repeatsOf(row: AuditRow): { count: number; first: string; last: string } | undefined {
  const { repeated, first, last } = row.details;
  return typeof repeated === 'number' && typeof first === 'string' && typeof last === 'string' ? { count: repeated, first, last } : undefined;
}

/** C create, R read, U update, D delete, E execute. */
function actionOf(type: string): 'C' | 'R' | 'U' | 'D' | 'E' {
  if (/\.(created|registered|imported)$/.test(type) || type === 'token.issued' || type === 'consent.granted') return 'C';
  if (type === 'token.introspected') return 'R';
  if (/\.(updated|password_reset|secret_rotated|rotated|refreshed)$/.test(type)) return 'U';
  if (/\.(deleted|revoked)$/.test(type)) return 'D';
  return 'E';
}

const RESTFUL_INTERACTION = 'http://hl7.org/fhir/restful-interaction';

/** The FHIR restful-interaction code of each interaction the gateway tells apart, and its BALP action. */
const INTERACTIONS: Readonly<Record<string, { code: string; action: 'C' | 'R' | 'U' | 'D' | 'E' }>> = {
  read: { code: 'read', action: 'R' },
  vread: { code: 'vread', action: 'R' },
  'history-instance': { code: 'history-instance', action: 'R' },
  'history-type': { code: 'history-type', action: 'E' },
  'history-system': { code: 'history-system', action: 'E' },
  'search-type': { code: 'search-type', action: 'E' },
  'search-system': { code: 'search-system', action: 'E' },
  create: { code: 'create', action: 'C' },
  update: { code: 'update', action: 'U' },
  'conditional-update': { code: 'update', action: 'U' },
  patch: { code: 'patch', action: 'U' },
  delete: { code: 'delete', action: 'D' },
  'conditional-delete': { code: 'delete', action: 'D' },
  operation: { code: 'operation', action: 'E' },
  batch: { code: 'batch', action: 'E' },
  transaction: { code: 'transaction', action: 'E' },
};

/**
 * A FHIR access through the gateway, after IHE BALP's RESTful patterns: the interaction as a subtype, its
 * action (C/R/U/D, E for searches and operations), and the resource as an entity (role 4, Domain Resource).
 * The query itself is not kept: search parameters may carry names or other identifying values.
 */
function fhirAccessOf(row: AuditRow): { subtype: Record<string, unknown>; action: 'C' | 'R' | 'U' | 'D' | 'E'; serious: boolean; entity: Record<string, unknown> | undefined } {
  const interaction = typeof row.details.interaction === 'string' ? row.details.interaction : 'operation';
  const known = INTERACTIONS[interaction] ?? { code: 'operation', action: 'E' as const };
  const type = typeof row.details.resourceType === 'string' ? row.details.resourceType : undefined;
  const id = typeof row.details.id === 'string' ? row.details.id : undefined;
  const status = typeof row.details.status === 'number' ? row.details.status : undefined;
  const resources = typeof row.details.resources === 'number' ? row.details.resources : undefined;
  const detail = [
    ...(status !== undefined ? [{ type: 'status', valueString: String(status) }] : []),
    ...(resources !== undefined ? [{ type: 'resources', valueString: String(resources) }] : []),
    ...(typeof row.details.operation === 'string' ? [{ type: 'operation', valueString: row.details.operation }] : []),
  ];
  const entity = type
    ? {
        what: id ? { reference: `${type}/${id}` } : { type },
        type: { system: ENTITY_TYPE, code: '2', display: 'System Object' },
        role: { system: OBJECT_ROLE, code: id ? '4' : '24', display: id ? 'Domain Resource' : 'Query' },
        ...(detail.length ? { detail } : {}),
      }
    : undefined;
  return { subtype: { system: RESTFUL_INTERACTION, code: known.code }, action: known.action, serious: status !== undefined && status >= 500, entity };
}
