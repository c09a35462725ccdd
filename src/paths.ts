import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root (where views/ and public/ are), both from src/ under tsx and from dist/src/ after a build. */
function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('package.json not found above ' + fileURLToPath(import.meta.url));
    dir = parent;
  }
  return dir;
}

export const PACKAGE_ROOT = findRoot();
export const VIEWS_DIR = join(PACKAGE_ROOT, 'views');
export const PUBLIC_DIR = join(PACKAGE_ROOT, 'public');
