import { hash, verify } from '@node-rs/argon2';

/**
 * argon2id at OWASP's recommended minimum of passes (t = 2, p = 1) with a little more than its 19 MiB of
 * memory: 20 MiB, a whole number of 2 MiB pages. Where the kernel backs the block array with huge pages (as on
 * our machines), at 19 MiB the last MiB is faulted in 4 KiB pages at every verify: measured (@node-rs/argon2, Node 24,
 * 80 verifies in a row) 265 page faults and 11.0 ms of CPU a verify at 19 MiB, 10 faults and 8.4 ms at 20,
 * so the stronger setting costs a quarter less. Stored as a PHC string, so the parameters travel with the hash:
 * hashes made with other parameters still verify, and are made again at their owner's next sign-in
 * ({@link needsRehash}).
 */
const ARGON2ID = 2; // Algorithm.Argon2id, a const enum that isolated modules cannot read
const PARAMS = { algorithm: ARGON2ID, memoryCost: 20_480, timeCost: 2, parallelism: 1 } as const;
/** The PHC prefix a hash made with {@link PARAMS} starts with (version 0x13, the only one @node-rs/argon2 makes). */
const CURRENT_PREFIX = `$argon2id$v=19$m=${PARAMS.memoryCost},t=${PARAMS.timeCost},p=${PARAMS.parallelism}$`;

export function hashPassword(password: string): Promise<string> {
  return hash(password, PARAMS);
}

/** Whether `phc` was made with other parameters than today's, so that it should be made again at sign-in. */
export function needsRehash(phc: string): boolean {
  return !phc.startsWith(CURRENT_PREFIX);
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
