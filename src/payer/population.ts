import { sql, type Expression, type RawBuilder } from 'kysely';

/*
 * Whom a payer's client may reach now, as SQL fragments for the door's one statement
 * (src/grants/token-access.ts): every rule is checked at every request, so an attribution that ends, an
 * opt-out, a withdrawn opt-in or a revoked representative counts at the very next request.
 */

/** A member consent in force: not withdrawn, its period begun and not ended. */
const live = (alias: string) => sql`${sql.ref(`${alias}.withdrawn_at`)} is null and ${sql.ref(`${alias}.period_start`)} <= now() and (${sql.ref(`${alias}.period_end`)} is null or ${sql.ref(`${alias}.period_end`)} > now())`;

/** The organisation identifiers of a client (`organization_identifiers` of its metadata), as rows. */
const organizationsOf = (metadata: Expression<unknown>) => sql`(select jsonb_array_elements_text(coalesce(${metadata}->'organization_identifiers', '[]'::jsonb)))`;

/** Members as `[patient id, excludes sensitive data]` pairs. */
const asMembers = (members: RawBuilder<unknown>) =>
  sql<[string, boolean][] | string | null>`(select json_agg(json_build_array(m.patient_id, exists (select 1 from member_consents s where s.patient_id = m.patient_id and s.kind = 'exclude-sensitive' and ${live('s')})) order by m.patient_id) from (${members}) m)`;

/**
 * CMS-0057-F §422.121(b) Provider Access: the members attributed to the client's organisation now (an
 * active member of one of its attribution lists, within the member's period) who have not opted out.
 * Payer-to-Payer (§422.121(c)): the members who opted in, for any payer or for the client's organisation.
 * Null for any other client.
 */
export function payerPopulation(metadata: Expression<unknown>): RawBuilder<[string, boolean][] | string | null> {
  const attributed = sql`select distinct am.patient_id from attribution_members am join attribution_lists al on al.id = am.list_id
    where al.organization in ${organizationsOf(metadata)}
      and not am.inactive and (am.period_start is null or am.period_start <= now()) and (am.period_end is null or am.period_end > now())
      and not exists (select 1 from member_consents o where o.patient_id = am.patient_id and o.kind = 'provider-access-opt-out' and ${live('o')})`;
  const optedIn = sql`select distinct i.patient_id from member_consents i
    where i.kind = 'payer-to-payer-opt-in' and ${live('i')} and (i.organization is null or i.organization in ${organizationsOf(metadata)})`;
  return sql`case ${metadata}->>'payer_role' when 'provider-access' then ${asMembers(attributed)} when 'payer-to-payer' then ${asMembers(optedIn)} else null end`;
}

/** The patients a user may act for besides their own record: linked by an operator, or as an active representative. */
export function representedPatients(userId: Expression<unknown>): RawBuilder<string[] | string | null> {
  return sql`(select json_agg(x.patient_id order by x.patient_id) from (
    select up.patient_id from user_patients up where up.user_id = ${userId}
    union
    select r.patient_id from representatives r where r.user_id = ${userId} and r.status = 'active' and r.period_start <= now() and (r.period_end is null or r.period_end > now())
  ) x)`;
}
