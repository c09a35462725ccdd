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
