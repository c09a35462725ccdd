import { hash, verify } from '@node-rs/argon2';

/**
 * argon2id with OWASP's recommended minimum (m = 19 MiB, t = 2, p = 1), stored as a PHC string so the
 * parameters travel with the hash and can be raised later without invalidating existing passwords.
 */
const ARGON2ID = 2; // Algorithm.Argon2id, a const enum that isolated modules cannot read
const PARAMS = { algorithm: ARGON2ID, memoryCost: 19_456, timeCost: 2, parallelism: 1 } as const;

export function hashPassword(password: string): Promise<string> {
  return hash(password, PARAMS);
}

/** A hash of a random password, verified against when the user does not exist, so both paths cost the same. */
let dummyHash: Promise<string> | undefined;

/**
 * Verifies `password` against `phc`; with `phc` null (unknown user, or no password set) it still spends the
 * same time on a dummy hash, so response time does not reveal which user names exist.
 */
export async function verifyPassword(phc: string | null, password: string): Promise<boolean> {
  if (phc === null) {
    dummyHash ??= hashPassword(crypto.randomUUID());
    await verify(await dummyHash, password).catch(() => false);
    return false;
  }
  try {
    return await verify(phc, password);
  } catch {
    return false;
  }
}
