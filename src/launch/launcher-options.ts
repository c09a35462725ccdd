import type { Kysely } from 'kysely';

import type { DB } from '../db/schema.js';

/** What the sandbox launcher asked of one launch beyond its context. */
export interface LauncherOptions {
  /** Sign in as the launch's user without the sign-in page. */
  readonly skipLogin: boolean;
  /** Grant what the consent page would offer, without the page. */
  readonly skipConsent: boolean;
  /** A simulated error (src/smart/simulated-errors.ts). */
  readonly simulate: string | undefined;
  /** The patients the picker offers, when the launcher chose several. */
  readonly patients: readonly string[] | undefined;
}

/** `launchId`: the launch as stored (Launch.id, a keyed hash). */
export async function saveLauncherOptions(db: Kysely<DB>, launchId: string, options: LauncherOptions): Promise<void> {
  await db
    .insertInto('launcher_options')
    .values({ launch_id: launchId, skip_login: options.skipLogin, skip_consent: options.skipConsent, simulate: options.simulate ?? null, patients: options.patients?.length ? JSON.stringify(options.patients) : null })
    .execute();
}

export async function findLauncherOptions(db: Kysely<DB>, launchId: string | undefined): Promise<LauncherOptions | undefined> {
  if (!launchId) return undefined;
  const row = await db.selectFrom('launcher_options').selectAll().where('launch_id', '=', launchId).executeTakeFirst();
  return row && { skipLogin: row.skip_login, skipConsent: row.skip_consent, simulate: row.simulate ?? undefined, patients: row.patients ?? undefined };
}
