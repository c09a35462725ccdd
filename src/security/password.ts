import { hash, verify } from '@node-rs/argon2';

/**
 * argon2id at one of OWASP's equivalent minimum settings: 12 MiB of memory, 3 passes, one lane (Password
 * Storage Cheat Sheet: m=12288 (12 MiB), t=3, p=1, listed beside m=19456, t=2 as giving the same defence).
 * 12 MiB is a whole number of 2 MiB pages: where the kernel backs the block array with huge pages (as on our
 * machines), a size that is not faults its last pages in 4 KiB at every verify (at 19 MiB: 265 faults a
 * verify against 10 at 20). Measured (@node-rs/argon2, Node 24, 80 verifies in a row, one and two at a time,
 * in one run): 7.0–7.7 ms of CPU a verify, against 9.1–9.7 ms at 20 MiB and two passes, this server's setting
 * before; 10 MiB with 4 passes and 8 MiB with 5 (OWASP's 9 and 7 MiB, rounded up to whole pages) cost the same
 * within the noise (7.5–7.8 and 7.0–7.2 ms), and of those this one asks an attacker for the most memory a guess.
 * (46 MiB with one pass was not measured.) It asks for less memory than 20 MiB and makes up for it with a pass.
 * Stored as a PHC string, so the parameters travel with the hash: hashes made with other parameters still
 * verify, and are made again at their owner's next sign-in ({@link needsRehash}).
 */
const ARGON2ID = 2; // Algorithm.Argon2id, a const enum that isolated modules cannot read
const PARAMS = { algorithm: ARGON2ID, memoryCost: 12_288, timeCost: 3, parallelism: 1 } as const;
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
