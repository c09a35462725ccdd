import type { Kysely } from 'kysely';

import type { AuditLog } from '../audit/audit.js';
import type { ClientCache } from '../clients/client-cache.js';
import type { UserCache } from '../users/user-cache.js';
import type { Config } from '../config/config.js';
import type { DB } from '../db/schema.js';
import type { Maintenance } from '../maintenance.js';
import type { ProviderHost } from '../oidc/provider-host.js';
import type { SecretBox } from '../security/secret-box.js';

/** What every admin route works with. */
export interface AdminDeps {
  readonly config: Config;
  readonly db: Kysely<DB>;
  readonly box: SecretBox;
  readonly host: ProviderHost;
  readonly audit: AuditLog;
  readonly maintenance: Maintenance;
  /** Dropped for a client whenever the client changes, so this process applies the change at once. */
  readonly clients: ClientCache<unknown>;
  /** Dropped for a user whenever the user changes. */
  readonly users: UserCache;
}
