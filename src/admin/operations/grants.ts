import { HttpProblem } from '../../errors.js';
import { grantHolder, revokeGrants } from '../../grants/grants.js';
import type { AdminDeps } from '../deps.js';
import type { Operator } from './operator.js';

/** Revokes a grant and every token issued under it; audited with whose grant it was. */
export async function revokeGrant(deps: AdminDeps, by: Operator, grantId: string): Promise<void> {
  const holder = await grantHolder(deps.db, grantId);
  if (!(await revokeGrants(deps.db, [grantId]))) throw HttpProblem.notFound(`no grant ${grantId}`);
  await deps.audit.record({ ...by, type: 'grant.revoked', grantId, ...holder });
}
