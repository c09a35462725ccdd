import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { Config } from '../config/config.js';
import { SecretBox } from './secret-box.js';

const SECRET_KEY_FILE = 'secret.key';

/**
 * The SecretBox of a configuration, the one place that decides where SECRET_KEY comes from: the
 * configuration when it is set, otherwise (on the embedded database only) the key file in DATA_DIR.
 * SECRET_KEYS_PREVIOUS stay readable in both cases.
 */
export async function openSecretBox(config: Config): Promise<SecretBox> {
  return new SecretBox(await secretKey(config), config.previousSecretKeys);
}

async function secretKey(config: Config): Promise<Buffer> {
  if (config.secretKey) return config.secretKey;
  if (config.database.kind !== 'pglite') throw new Error('SECRET_KEY is required with DATABASE_URL');
  return loadOrCreateSecretKey(config.database.dataDir);
}

/**
 * On the embedded database SECRET_KEY may be left unset: the key is generated once and kept next to the
 * database it protects, readable by the owner only. Losing it makes the stored private keys unreadable,
 * which is why the Postgres mode requires SECRET_KEY to be given explicitly.
 */
async function loadOrCreateSecretKey(dataDir: string): Promise<Buffer> {
  const path = join(dataDir, SECRET_KEY_FILE);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  try {
    await writeFile(path, `${randomBytes(32).toString('hex')}\n`, { flag: 'wx', mode: 0o600 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  return readKey(path);
}

async function readKey(path: string): Promise<Buffer> {
  const text = (await readFile(path, 'utf8')).trim();
  if (!/^[0-9a-f]{64}$/.test(text)) throw new Error(`${path} does not hold a 32-byte hex key; restore it from a backup or remove the whole data directory`);
  return Buffer.from(text, 'hex');
}
