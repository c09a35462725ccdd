import type { Insertable } from 'kysely';

import type { GrantContextsTable } from './tables/grant-contexts.js';

/** The columns of an `oidc_payloads` row a save writes. */
export interface PayloadRowWrite {
  readonly model: string;
  readonly id: string;
  readonly payload: string;
  readonly grant_id: string | null;
  readonly uid: string | null;
  readonly user_code: string | null;
  readonly expires_at: Date | null;
}

/**
 * The upsert of any number of `oidc_payloads` rows in fixed text, a column per array parameter from `$first`
 * on (seven of them, in the order of {@link payloadArrays}). A save of a row that exists replaces its content
 * and keeps its `consumed_at`.
 */
export function upsertPayloadsSql(first: number): string {
  const types = ['text', 'text', 'jsonb', 'text', 'text', 'text', 'timestamptz'];
  return (
    `insert into oidc_payloads (model, id, payload, grant_id, uid, user_code, expires_at)` +
    ` select * from unnest(${types.map((type, i) => `$${first + i}::${type}[]`).join(', ')})` +
    ` on conflict (model, id) do update set payload = excluded.payload, grant_id = excluded.grant_id, uid = excluded.uid, user_code = excluded.user_code, expires_at = excluded.expires_at`
  );
}

/** The parameters of {@link upsertPayloadsSql}; of rows saved twice, the last save only (one statement cannot upsert a row twice). */
export function payloadArrays(rows: readonly PayloadRowWrite[]): unknown[][] {
  const last = new Map<string, PayloadRowWrite>();
  for (const row of rows) {
    const key = `${row.model}\u0000${row.id}`;
    last.delete(key);
    last.set(key, row);
  }
  const unique = [...last.values()];
  return [unique.map((r) => r.model), unique.map((r) => r.id), unique.map((r) => r.payload), unique.map((r) => r.grant_id), unique.map((r) => r.uid), unique.map((r) => r.user_code), unique.map((r) => r.expires_at)];
}

/**
 * Tokens issued under a grant: its launch context's last use, and with `renewal` (a refresh), the grant kept alive
 * at least until `atLeast` (the end of the refresh token just issued): when it would end sooner, it is renewed
 * until `to`, a margin later, so that the refreshes of the next while need not write it.
 */
export interface GrantUse {
  readonly grantId: string;
  readonly renewal: { readonly atLeast: Date; readonly to: Date } | undefined;
}

/**
 * CTEs recording grant uses, from three array parameters (`$first`: grant ids, then the ends each must reach,
 * then the renewals' ends): each launch context's `last_used_at`; a grant, and its context, that would end before
 * the end it must reach renewed (oidc-provider never saves a grant again, so its first expiry would cap a refresh
 * chain); a grant that ends later is left as it is, and its context's expiry with it (so its row is not
 * rewritten, nor the index on `expires_at`). Updates, never saves: a grant revoked meanwhile (a concurrent reuse
 * of the refresh token) stays gone.
 */
export function grantUsesSql(first: number): string {
  return (
    `u as (select * from unnest($${first}::text[], $${first + 1}::timestamptz[], $${first + 2}::timestamptz[]) as u(grant_id, at_least, renew_to)),` +
    ` renewed as (update oidc_payloads p set expires_at = u.renew_to, payload = jsonb_set(p.payload, '{exp}', to_jsonb(floor(extract(epoch from u.renew_to))::bigint))` +
    ` from u where p.model = 'Grant' and p.id = u.grant_id and p.expires_at < u.at_least returning p.id),` +
    ` touched as (update grant_contexts c set last_used_at = now(), expires_at = case when c.expires_at < u.at_least then u.renew_to else c.expires_at end from u where c.grant_id = u.grant_id returning c.grant_id)`
  );
}

/** The parameters of {@link grantUsesSql}: one row per grant, the latest renewal winning, a renewal over a mere use. */
export function grantUseArrays(uses: readonly GrantUse[]): unknown[][] {
  const latest = new Map<string, GrantUse['renewal']>();
  for (const { grantId, renewal } of uses) {
    const was = latest.get(grantId);
    latest.set(grantId, was && (!renewal || was.atLeast > renewal.atLeast) ? was : renewal);
  }
  const renewals = [...latest.values()];
  return [[...latest.keys()], renewals.map((r) => r?.atLeast ?? null), renewals.map((r) => r?.to ?? null)];
}

/** A code or refresh token a request used, by every id it may be stored under (the current key's, then earlier keys'). */
export interface PayloadConsume {
  readonly model: string;
  readonly ids: readonly string[];
}

/**
 * A CTE marking codes and refresh tokens used, from three parameters (`$first`: models, then ids, a pair per id a
 * value may be stored under, then how many values were presented): each row flips only if it was unused, and a row
 * presented twice (two requests with one code in one batch) flips once. {@link ALL_CONSUMED} then holds the
 * statement to every value having flipped.
 */
export function consumesSql(first: number): string {
  return (
    `consumed as (update oidc_payloads p set consumed_at = now() from unnest($${first}::text[], $${first + 1}::text[]) as c(model, id)` +
    ` where p.model = c.model and p.id = c.id and p.consumed_at is null returning p.id), presented as (select $${first + 2}::int as n)`
  );
}

/**
 * The condition that ends the statement with USED_ALREADY unless every value presented flipped
 * (migrations/2026-12-03T01-00-single-use-check.ts). Most batches present none (introspection, consent, sign-in
 * events): the cheaper test first, which the planner orders first, spares them the function call on every row.
 */
export const ALL_CONSUMED = `((select n from presented) = 0 or oidc_payloads_all_consumed((select count(*) from consumed), (select n from presented)))`;

/** The parameters of {@link consumesSql}. */
export function consumeArrays(consumes: readonly PayloadConsume[]): unknown[] {
  return [consumes.flatMap((c) => c.ids.map(() => c.model)), consumes.flatMap((c) => c.ids), consumes.length];
}

/**
 * The update recording interactions' decisions (a sign-in, a consent, a refusal: oidc-provider resumes with it),
 * from three array parameters (`$first`: ids, then payloads, then ends): each row changes only while the stored
 * interaction is undecided and unexpired, so that of two requests deciding one interaction (two consent forms sent
 * at once, Allow and Deny from two tabs) one decides. A decision presented twice in one statement changes its row
 * once. Returns the ids decided. A result holding `login`, `consent` or `error` is a decision, as isConcluded in
 * src/interactions/routes.ts tells it. A sign-in kept in the interaction (`smart.signedIn`) is decided once too:
 * a save that carries another one (a sign-in form sent twice at once, or from two tabs) changes nothing.
 */
export function decideInteractionsSql(first: number): string {
  return (
    `update oidc_payloads p set payload = d.payload, expires_at = d.expires_at from unnest($${first}::text[], $${first + 1}::jsonb[], $${first + 2}::timestamptz[]) as d(id, payload, expires_at)` +
    ` where p.model = 'Interaction' and p.id = d.id and (p.expires_at is null or p.expires_at > now())` +
    ` and not coalesce(p.payload->'result' ?| array['login', 'consent', 'error'], false)` +
    ` and not coalesce(p.payload #> '{result,smart,signedIn}' <> d.payload #> '{result,smart,signedIn}', false) returning p.id`
  );
}

/**
 * The condition that ends a statement with {@link decideInteractionsSql} as its CTE `decided` with DECIDED_ALREADY
 * unless every decision presented (the ids at `$first`) changed its row (migrations/2026-12-03T02-00-single-decision-check.ts).
 * Most batches present none: the cheaper test first.
 */
export function allDecided(first: number): string {
  return `(cardinality($${first}::text[]) = 0 or oidc_interactions_all_decided((select count(*) from decided), cardinality($${first}::text[])))`;
}

/** The parameters of {@link decideInteractionsSql}: the interactions' rows as their saves made them. */
export function decisionArrays(rows: readonly PayloadRowWrite[]): unknown[][] {
  for (const row of rows) if (row.model !== 'Interaction') throw new Error(`a decision is an interaction's save, not a ${row.model}'s`);
  return [rows.map((r) => r.id), rows.map((r) => r.payload), rows.map((r) => r.expires_at)];
}

/** A `grant_contexts` row as an authorization's consent writes it (src/launch/context.ts grantContextWrite): every column but the two the database fills. */
export type GrantContextWrite = Required<Omit<Insertable<GrantContextsTable>, 'created_at' | 'last_used_at'>>;

const GRANT_CONTEXT_TYPES: Readonly<Record<keyof GrantContextWrite, string>> = {
  grant_id: 'text',
  fhir_base: 'text',
  patient: 'text',
  encounter: 'text',
  fhir_context: 'jsonb',
  intent: 'text',
  need_patient_banner: 'boolean',
  smart_style_url: 'text',
  tenant: 'text',
  launch_id: 'text',
  fhir_user: 'text',
  client_id: 'text',
  account_id: 'text',
  scope: 'text',
  expires_at: 'timestamptz',
};
const GRANT_CONTEXT_COLUMNS = Object.keys(GRANT_CONTEXT_TYPES) as (keyof GrantContextWrite)[];

/**
 * A CTE inserting any number of `grant_contexts` rows in fixed text, a column per array parameter from `$first`
 * on (in the order of {@link grantContextArrays}).
 */
export function insertGrantContextsSql(first: number): string {
  return (
    `contexts as (insert into grant_contexts (${GRANT_CONTEXT_COLUMNS.join(', ')})` +
    ` select * from unnest(${GRANT_CONTEXT_COLUMNS.map((column, i) => `$${first + i}::${GRANT_CONTEXT_TYPES[column]}[]`).join(', ')}) returning grant_id)`
  );
}

/** The parameters of {@link insertGrantContextsSql}. */
export function grantContextArrays(rows: readonly GrantContextWrite[]): unknown[][] {
  return GRANT_CONTEXT_COLUMNS.map((column) => rows.map((row) => row[column]));
}
