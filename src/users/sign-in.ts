import { setTimeout as sleep } from 'node:timers/promises';

import type { Kysely, Selectable } from 'kysely';

import type { DB } from '../db/schema.js';
import { Statement } from '../db/statements.js';
import type { UsersTable } from '../db/tables/users.js';
import type { SecretBox } from '../security/secret-box.js';
import { hashPassword, needsRehash, verifyPassword } from '../security/password.js';
import { deviceOf, rememberDevice } from './device-cookie.js';
import { countAttempt, loginName, settleSignIn, sourceOf, throttleKey, uncountAttempt } from './login-throttle.js';
import type { User } from './users.js';

/** The user signing in, by the name as typed ($1). */
const USER_BY_NAME = new Statement<Pick<Selectable<UsersTable>, 'id' | 'username' | 'password_hash' | 'fhir_user' | 'name' | 'roles' | 'disabled'>>(
  'select id, username, password_hash, fhir_user, name, roles, disabled from users where username = $1::text',
);

/**
 * The least time a refused password takes to answer, from the start of the attempt. argon2 costs what the
 * stored hash's parameters say: a hash made with earlier, dearer parameters (until its owner signs in again,
 * password.ts) takes longer to refuse than the dummy hash of an unknown user name, and that difference would
 * tell an attacker which names exist. Every refused password waits until this floor, well above a verify at
 * any setting this server has used (about 10 ms), so known and unknown names answer alike unless the
 * machine is so loaded that a verify alone takes longer.
 */
export const REFUSED_PASSWORD_FLOOR_MS = 100;

export interface SignInAttempt {
  readonly username: string;
  readonly password: string;
  /** The client's address, as Fastify determined it under TRUST_PROXY. */
  readonly ip: string;
  /** The device cookie the browser sent (device-cookie.ts), if any. */
  readonly deviceCookie: string | undefined;
}

export type ThrottledReason = 'throttled_source' | 'throttled_account' | 'throttled_device';

/** A failure names the user only when the user name exists (for the audit trail, never for the page). */
export type SignInResult =
  | { readonly ok: true; readonly user: User; readonly deviceCookie: string }
  | { readonly ok: false; readonly reason: 'invalid'; readonly userId: string | undefined }
  | { readonly ok: false; readonly reason: ThrottledReason; readonly retryAfterSeconds: number; readonly userId: string | undefined };

/**
 * Checks a user name and password under the sign-in throttle (login-throttle.ts), in this order:
 *
 * 1. count the attempt against its source; over budget, refuse;
 * 2. count it against its device, when the browser holds a device cookie for this user name, or else
 *    against the user name; over budget, refuse, and give the source its attempt back (no password was
 *    checked);
 * 3. check the password. Unknown users, disabled users and wrong passwords look the same and take the same
 *    time (argon2id against a dummy hash, and every refusal answered no sooner than
 *    {@link REFUSED_PASSWORD_FLOOR_MS}), and so do refusals: unknown names are throttled like real ones.
 *
 * A success gives the source its attempt back, makes the user's hash again if it was made with older
 * argon2 parameters (password.ts), and resets the counter it passed, device or user name, and
 * only that one: the owner signing in from a known browser must not hand an attacker who is slowed on the
 * user name a fresh set of free attempts. A right password whose hash an operator replaced, or whose user an
 * operator disabled, while it was being checked is refused; the throttle counts it as a success (no guess was
 * wrong).
 */
export async function signIn(db: Kysely<DB>, box: SecretBox, attempt: SignInAttempt): Promise<SignInResult> {
  const started = performance.now();
  const name = loginName(attempt.username);
  const source = throttleKey(box, 'source', sourceOf(attempt.ip));
  const [row, bySource] = await Promise.all([
    USER_BY_NAME.first(db, [attempt.username]),
    countAttempt(db, source),
  ]);
  const userId = row?.id;
  if (!bySource.admitted) return { ok: false, reason: 'throttled_source', retryAfterSeconds: bySource.retryAfterSeconds, userId };

  const device = deviceOf(box, attempt.deviceCookie, name);
  const own = device ? throttleKey(box, 'device', device) : throttleKey(box, 'account', name);
  const byOwn = await countAttempt(db, own);
  if (!byOwn.admitted) {
    await uncountAttempt(db, source);
    return { ok: false, reason: device ? 'throttled_device' : 'throttled_account', retryAfterSeconds: byOwn.retryAfterSeconds, userId };
  }

  const phc = row && !row.disabled ? row.password_hash : null;
  const valid = await verifyPassword(phc, attempt.password);
  // A hash made with older parameters is made again with today's, now that the password is at hand. The sign-in
  // holds only if the hash checked is still the user's and the user still enabled: an operator may have set a new
  // password or disabled the user while argon2 ran.
  const renewed = valid && phc !== null && needsRehash(phc) ? await hashPassword(attempt.password) : undefined;
  const signedIn = valid && row && phc !== null && (await settleSignIn(db, own, source, row.id, phc, renewed));
  if (!signedIn) {
    const left = () => REFUSED_PASSWORD_FLOOR_MS - (performance.now() - started);
    // A timer counts from the event loop's clock, which can lag the real one a little: wait until the floor is past.
    while (left() > 0) await sleep(Math.ceil(left()));
    return { ok: false, reason: 'invalid', userId };
  }
  return {
    ok: true,
    user: { id: row.id, username: row.username, fhirUser: row.fhir_user, name: row.name, roles: row.roles },
    deviceCookie: rememberDevice(box, attempt.deviceCookie, name),
  };
}
