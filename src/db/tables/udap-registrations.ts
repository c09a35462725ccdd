import type { Generated } from 'kysely';

/** A UDAP registration: the client registered for (community, iss) (src/clients/udap-registrations.ts). */
export interface UdapRegistrationsTable {
  client_id: string;
  /** The trust community's URI. */
  community: string;
  /** The software statement's `iss`: the SAN URI of the client's certificate. */
  iss: string;
  /** TEFCA: the exchange purpose this registration is for (one client per purpose); '' elsewhere. */
  exchange_purpose: Generated<string>;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
  /** Set when the registration was cancelled (or replaced): the client_id is retired, the row kept. */
  cancelled_at: Date | null;
}

/** A software statement's jti, used once (hash of iss and jti). */
export interface UdapJtisTable {
  id: string;
  expires_at: Date;
}
