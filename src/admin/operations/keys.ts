import { HttpProblem } from '../../errors.js';
import type { SigningAlg } from '../../config/config.js';
import { KeyRotationError, rotateSigningKeys, type RotationResult } from '../../keys/signing-keys.js';
import { minPublishedSeconds, RETIRED_KEY_PUBLISH_SECONDS } from '../../maintenance.js';
import type { AdminDeps } from '../deps.js';
import type { Operator } from './operator.js';

/**
 * Promotes the published `next` keys to signing and retires the current ones (docs/architecture.md §Keys);
 * 409 when a next key has not been published long enough, unless forced.
 */
export async function rotateKeys(deps: AdminDeps, by: Operator, options: { algs?: SigningAlg[] | undefined; force: boolean }): Promise<RotationResult[]> {
  try {
    const rotated = await rotateSigningKeys(deps.db, deps.box, {
      ...(options.algs ? { algs: options.algs } : {}),
      force: options.force,
      minPublishedSeconds: minPublishedSeconds(deps.config),
      retiredPublishSeconds: RETIRED_KEY_PUBLISH_SECONDS,
    });
    await deps.host.refresh();
    await deps.audit.record({ ...by, type: 'key.rotated', details: { rotated } });
    return rotated;
  } catch (error) {
    if (error instanceof KeyRotationError) throw HttpProblem.conflict(error.message);
    throw error;
  }
}
