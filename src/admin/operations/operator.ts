import type { AuditEvent } from '../../audit/audit.js';

/** Who is acting, as the audit trail records it: the admin API's caller or the console's operator. */
export type Operator = Pick<AuditEvent, 'actorType' | 'actorId' | 'sourceIp' | 'requestId'>;
