import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const SECRET_KEY_FILE = 'secret.key';

/**
 * On the embedded database SECRET_KEY may be left unset: the key is generated once and kept next to the
 * database it protects, readable by the owner only. Losing it makes the stored private keys unreadable,
 * which is why the Postgres mode requires SECRET_KEY to be given explicitly.
 */
export async function loadOrCreateSecretKey(dataDir: string): Promise<{ key: Buffer; created: boolean }> {
  const path = join(dataDir, SECRET_KEY_FILE);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  try {
    await writeFile(path, `${randomBytes(32).toString('hex')}\n`, { flag: 'wx', mode: 0o600 });
    return { key: await readKey(path), created: true };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    return { key: await readKey(path), created: false };
  }
}

async function readKey(path: string): Promise<Buffer> {
  const text = (await readFile(path, 'utf8')).trim();
  if (!/^[0-9a-f]{64}$/.test(text)) throw new Error(`${path} does not hold a 32-byte hex key; restore it from a backup or remove the whole data directory`);
  return Buffer.from(text, 'hex');
}
