import type { Kysely } from 'kysely';
import type { Logger } from 'pino';

import { checkpointDue, createCheckpoint, type StoredCheckpoint } from './audit/checkpoints.js';
import type { Config } from './config/config.js';
import { unavailableReason } from './db/faults.js';
import type { DB } from './db/schema.js';
import { pruneCookieKeys, rotateCookieKeys } from './keys/cookie-keys.js';
import { keysDueForRotation, pruneRetiredKeys, rotateSigningKeys } from './keys/signing-keys.js';
import { purgeExpiredContexts } from './launch/context.js';
import { purgeExpired } from './oidc/adapters/payload.js';
import type { ProviderHost } from './oidc/provider-host.js';
import { JWKS_MAX_AGE_SECONDS } from './smart/profile.js';
import type { SecretBox } from './security/secret-box.js';
import { purgeConsoleSessions } from './users/console-sessions.js';
import { purgeUdapJtis } from './clients/udap-registrations.js';
import { purgeLoginThrottle } from './users/login-throttle.js';

/**
 * Retired signing keys stay published this long: longer than anything they signed lives (id_tokens and JWT
 * access tokens, one hour at most) plus every JWKS cache.
 */
export const RETIRED_KEY_PUBLISH_SECONDS = 24 * 3600;
/** Cookie keys keep verifying for the longest session after they stop signing. */
export const COOKIE_KEY_KEEP_SECONDS = 15 * 24 * 3600;

export interface MaintenanceDeps {
  readonly config: Config;
  readonly db: Kysely<DB>;
  readonly box: SecretBox;
  readonly host: ProviderHost;
  readonly log: Logger;
}

/**
 * The minimum time a `next` key is published before it may sign: every process must have re-read the key
 * set, and every client cache must have expired, since it appeared. A process may re-read it from a read
 * replica, which is then at most DATABASE_REPLICA_MAX_LAG_MS behind (src/db/replica.ts).
 */
export function minPublishedSeconds(config: Config): number {
  return config.keyRefreshSeconds + Math.ceil((config.databaseReplica?.maxLagMs ?? 0) / 1000) + JWKS_MAX_AGE_SECONDS;
}

/**
 * Background work every process does on timers: re-read the key set (so processes agree after a rotation
 * elsewhere), purge expired oidc-provider rows, retire old keys, rotate keys when due, and sign a checkpoint
 * of the audit trail when one is due. Each job takes
 * the database locks it needs, so running it in every process is safe. A failing job is logged and tried
 * again at its next tick; it never stops the server.
 */
export class Maintenance {
  readonly #deps: MaintenanceDeps;
  readonly #timers: NodeJS.Timeout[] = [];
  #running: Promise<unknown> = Promise.resolve();

  constructor(deps: MaintenanceDeps) {
    this.#deps = deps;
  }

  start(): void {
    const { config } = this.#deps;
    this.#every(config.keyRefreshSeconds, 'key refresh', () => this.#deps.host.refresh());
    this.#every(config.purgeIntervalSeconds, 'housekeeping', () => this.housekeeping());
    if (config.auditCheckpointSeconds > 0) this.#every(config.auditCheckpointSeconds, 'audit checkpoint', () => this.auditCheckpoint());
  }

  async stop(): Promise<void> {
    for (const timer of this.#timers.splice(0)) clearInterval(timer);
    await this.#running.catch(() => undefined);
  }

  /** Purges expired rows (OAuth records, launch contexts, sign-in throttle, console sessions), prunes retired keys and rotates keys that are due. */
  async housekeeping(): Promise<{ purged: number; rotated: string[] }> {
    const { config, db, box, host, log } = this.#deps;
    const purged = (await purgeExpired(db)) + (await purgeExpiredContexts(db)) + (await purgeLoginThrottle(db)) + (await purgeConsoleSessions(db)) + (await purgeUdapJtis(db));
    await pruneRetiredKeys(db);
    await pruneCookieKeys(db, COOKIE_KEY_KEEP_SECONDS);
    let rotated: string[] = [];
    if (config.keyRotationDays > 0) {
      const due = await keysDueForRotation(db, config.keyRotationDays);
      if (due.length) {
        const results = await rotateSigningKeys(db, box, {
          algs: due,
          dueAfterDays: config.keyRotationDays,
          minPublishedSeconds: minPublishedSeconds(config),
          retiredPublishSeconds: RETIRED_KEY_PUBLISH_SECONDS,
        });
        if (results.length) {
          await rotateCookieKeys(db, box);
          rotated = results.map((r) => r.activated);
          log.info({ rotated: results }, 'signing keys rotated (scheduled)');
        }
      }
    }
    await host.refresh();
    if (purged) log.debug({ purged }, 'expired OAuth records purged');
    return { purged, rotated };
  }

  /** Signs and stores a checkpoint of the audit trail when one is due (src/audit/checkpoints.ts). */
  async auditCheckpoint(): Promise<StoredCheckpoint | undefined> {
    const { config, db, box, log } = this.#deps;
    if (!(await checkpointDue(db, box, config.auditCheckpointSeconds))) return undefined;
    const checkpoint = await createCheckpoint(db, box, config.issuer);
    log.info({ checkpoint: checkpoint.id, events: checkpoint.claims.total, chains: checkpoint.claims.chains.length }, 'audit checkpoint signed');
    return checkpoint;
  }

  #every(seconds: number, name: string, job: () => Promise<unknown>): void {
    const timer = setInterval(() => {
      this.#running = this.#running.then(job).catch((error: unknown) => {
        const reason = unavailableReason(error);
        if (reason) this.#deps.log.warn({ reason }, `${name} skipped: database unavailable`);
        else this.#deps.log.error({ err: error }, `${name} failed`);
      });
    }, seconds * 1000);
    timer.unref();
    this.#timers.push(timer);
  }
}
