import { HttpProblem } from '../../errors.js';
import { linkIdentity, unlinkIdentity, type TieredLink } from '../../users/tiered-links.js';
import type { AdminDeps } from '../deps.js';
import type { Operator } from './operator.js';

/**
 * UDAP Tiered OAuth links (HL7 UDAP Security IG §6): an operator says which local user a person at an identity
 * provider is (the `operator` link policy), or takes that back. The person's next sign-in through that IdP
 * signs in as the user; an unlinked person is told to ask for a link.
 */
export interface NewLink {
  idp: string;
  sub: string;
  user_id: string;
}

export const NEW_LINK_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['idp', 'sub', 'user_id'],
  properties: {
    idp: { type: 'string', pattern: '^https?://[^\\s?#]+$', maxLength: 2048, description: "the identity provider's base URL, as its id_tokens' iss" },
    sub: { type: 'string', minLength: 1, maxLength: 255, description: "the person's sub at that identity provider" },
    user_id: { type: 'string', minLength: 1, maxLength: 64, description: 'the local user' },
  },
} as const;

export const LINK_KEY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['idp', 'sub'],
  properties: { idp: NEW_LINK_SCHEMA.properties.idp, sub: NEW_LINK_SCHEMA.properties.sub },
} as const;

export async function addLink(deps: AdminDeps, by: Operator, input: NewLink): Promise<TieredLink> {
  const link = await linkIdentity(deps.db, input.idp, input.sub, input.user_id, 'operator');
  await deps.audit.record({ ...by, type: 'tiered_oauth.linked', userId: link.userId, details: { idp: link.idpIss, sub: link.sub, by: 'operator' } });
  return link;
}

/** @throws {HttpProblem} 404 when (idp, sub) is not linked. */
export async function removeLink(deps: AdminDeps, by: Operator, idp: string, sub: string): Promise<void> {
  const link = await unlinkIdentity(deps.db, idp, sub);
  if (!link) throw HttpProblem.notFound(`${sub} at ${idp} is not linked to a user`);
  await deps.audit.record({ ...by, type: 'tiered_oauth.unlinked', userId: link.userId, details: { idp: link.idpIss, sub: link.sub } });
}
