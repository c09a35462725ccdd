import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import { SIGNING_ALGS, type Config, type SigningAlg } from '../config/config.js';
import { migrateToLatest } from '../db/migrate.js';
import { rotateCookieKeys } from '../keys/cookie-keys.js';
import { KeyRotationError, listSigningKeys, rotateSigningKeys } from '../keys/signing-keys.js';
import { minPublishedSeconds, RETIRED_KEY_PUBLISH_SECONDS } from '../maintenance.js';
import { openSecretBox } from '../security/secret-key.js';
import { withDatabase } from './database.js';
import { UsageError } from './errors.js';

/** `keys list` and `keys rotate`: the signing keys (and, on request, the cookie keys) in the database. */
export async function keys(config: Config, args: readonly string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values } = parseArgs({
    args: [...rest],
    options: { alg: { type: 'string', multiple: true }, force: { type: 'boolean' }, cookies: { type: 'boolean' } },
    strict: true,
  });
  if (sub === 'list') {
    return withDatabase(config, async ({ db }) => {
      await migrateToLatest(db);
      for (const key of await listSigningKeys(db)) {
        const until = key.publishUntil ? ` published until ${key.publishUntil.toISOString()}` : '';
        process.stdout.write(`${key.alg.padEnd(6)} ${key.state.padEnd(8)} ${key.kid}  created ${key.createdAt.toISOString()}${until}\n`);
      }
      return 0;
    });
  }
  if (sub !== 'rotate') throw new UsageError(`unknown keys command "${sub ?? ''}" (expected list or rotate)`);
  const algs = values.alg?.map((alg) => {
    if (!(SIGNING_ALGS as readonly string[]).includes(alg)) throw new UsageError(`--alg ${alg}: expected one of ${SIGNING_ALGS.join(', ')}`);
    return alg as SigningAlg;
  });
  return withDatabase(config, async ({ db }) => {
    await migrateToLatest(db);
    const secretBox = await openSecretBox(config);
    try {
      const results = await rotateSigningKeys(db, secretBox, {
        ...(algs ? { algs } : {}),
        force: values.force ?? false,
        minPublishedSeconds: minPublishedSeconds(config),
        retiredPublishSeconds: RETIRED_KEY_PUBLISH_SECONDS,
      });
      for (const r of results) process.stdout.write(`${r.alg}: now signing with ${r.activated}; retired ${r.retired ?? '(none)'}; next ${r.next}\n`);
    } catch (error) {
      if (!(error instanceof KeyRotationError)) throw error;
      process.stderr.write(`Not rotated: ${error.message}\n`);
      return 1;
    }
    if (values.cookies) process.stdout.write(`Cookie key added: ${await rotateCookieKeys(db, secretBox)}\n`);
    process.stdout.write(`Running servers pick the new keys up within ${config.keyRefreshSeconds} s.\n`);
    return 0;
  });
}

/** `gen-secret`: a new random SECRET_KEY, 32 bytes in hex. */
export function genSecret(): number {
  process.stdout.write(`${randomBytes(32).toString('hex')}\n`);
  return 0;
}
