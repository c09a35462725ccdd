import type { Generated } from 'kysely';

/** UDAP Tiered OAuth: a person at an IdP, by (iss, sub), is this local user (src/users/tiered-links.ts). */
export interface TieredOAuthLinksTable {
  /** The IdP's issuer (the `iss` of its id_tokens, its base URL). */
  idp_iss: string;
  sub: string;
  user_id: string;
  /** Who linked them: `operator` (admin API) or `auto` (the community's `create` policy, on first use). */
  linked_by: 'operator' | 'auto';
  created_at: Generated<Date>;
  last_used_at: Date | null;
}

/** This server's client_id at an IdP, per trust community and callback URL (src/clients/tiered-oauth-clients.ts). */
export interface TieredOAuthClientsTable {
  community: string;
  idp: string;
  redirect_uri: string;
  client_id: string;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}
