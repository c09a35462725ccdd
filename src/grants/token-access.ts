import { sql, type Kysely } from 'kysely';

import { Batched } from '../db/batched.js';
import type { DB } from '../db/schema.js';
import { FixedQuery } from '../db/statements.js';
import { PAYER_ROLES, type PayerRole } from '../db/tables/payer.js';
import { payerPopulation, representedPatients } from '../payer/population.js';
import type { SecretBox } from '../security/secret-box.js';
import { actsForEveryPatient, userPatients } from '../users/users.js';

/**
 * What a FHIR request's access token stands for, read in one statement: the token (live, not revoked),
 * its client (still active), the grant's launch context (the patient), and the user with the patients the
 * user may act for. The gateway asks this of every request, so it is one round trip.
 */
export interface TokenAccess {
  readonly kind: 'AccessToken' | 'ClientCredentials';
  readonly clientId: string;
  readonly scope: string;
  /** The FHIR base the token was issued for (its `aud`). */
  readonly audience: string | undefined;
  readonly expiresAt: Date;
  readonly grantId: string | undefined;
  readonly userId: string | undefined;
  /** The patient in context (`patient` of the token response). */
  readonly patient: string | undefined;
  /** Whom `user/` scopes reach: `all` for a clinician, the user's own and linked records otherwise; undefined without a user. */
  readonly userPatients: readonly string[] | 'all' | undefined;
  /** The client's role for a payer (CMS-0057-F), an operator's setting. */
  readonly payerRole: PayerRole | undefined;
  /**
   * For a provider-access or payer-to-payer client: the only members its token reaches now (attributed to
   * its organisation and not opted out; opted in). Read at every request, so a change counts at the next one.
   */
  readonly population: readonly string[] | undefined;
  /** Of the patients the token may reach, those who asked that their sensitive data be withheld from payer clients. */
  readonly sensitiveExcluded: readonly string[];
  /** The `hl7-b2b` extension the token was issued with (UDAP B2B): who asked, for which organisation, why. */
  readonly b2b: B2bContext | undefined;
}

/** The members of the `hl7-b2b` authorization extension kept with the audit (HL7 UDAP Security §5.2.1.1). */
export interface B2bContext {
  readonly subjectId: string | undefined;
  readonly organizationId: string | undefined;
  readonly purposeOfUse: readonly string[];
}

interface Row {
  /** The row's own id: the token's stored id, or the grant's. */
  id: string;
  model: string;
  client_id: string | null;
  scope: string | null;
  aud: string | null;
  expires_at: Date | null;
  grant_id: string | null;
  account_id: string | null;
  patient: string | null;
  fhir_user: string | null;
  linked: string[] | string | null;
  payer_role: string | null;
  population: [string, boolean][] | string | null;
  b2b: unknown;
}

/**
 * The statement both kinds of token are read with: a row of oidc_payloads (the token, or the grant of a JWT),
 * live, its client active, the grant's launch context, the user (not disabled) with the patients they act
 * for, and the client's payer role and population. `grantColumn` is where the row names its grant.
 */
function accessQuery(db: Kysely<DB>, grantColumn: 't.grant_id' | 't.id') {
  return db
    .selectFrom('oidc_payloads as t')
    .innerJoin('clients as c', (join) => join.onRef('c.client_id', '=', sql<string>`t.payload->>'clientId'`).on('c.status', '=', 'active'))
    .leftJoin('grant_contexts as gc', 'gc.grant_id', grantColumn)
    .leftJoin('users as u', (join) => join.onRef('u.id', '=', sql<string>`t.payload->>'accountId'`).on('u.disabled', '=', false))
    .select([
      't.id',
      't.model',
      'c.client_id',
      't.expires_at',
      sql<string | null>`t.payload->>'accountId'`.as('account_id'),
      'gc.patient',
      'u.fhir_user',
      representedPatients(sql.ref('u.id')).as('linked'),
      sql<string | null>`c.metadata->>'payer_role'`.as('payer_role'),
      payerPopulation(sql.ref('c.metadata')).as('population'),
    ])
    .where('t.expires_at', '>', sql<Date>`now()`);
}

/** The door's lookups, run at every FHIR request: built once, prepared once per connection. */
const OPAQUE_TOKEN = new FixedQuery((db: Kysely<DB>, slot) =>
  accessQuery(db, 't.grant_id')
    .select([
      sql<string | null>`t.payload->>'scope'`.as('scope'),
      sql<string | null>`t.payload->>'aud'`.as('aud'),
      't.grant_id',
      sql`t.payload->'extra'->'extensions'->'hl7-b2b'`.as('b2b'),
    ])
    .where('t.model', 'in', ['AccessToken', 'ClientCredentials'])
    .where('t.id', '=', sql<string>`any(${slot}::text[])`)
    // The token's grant still there: a revocation deletes the grant's tokens, but a token its grant issued in a
    // request that found the grant alive just before (a refresh, a code exchange) may be written just after.
    // Introspection (oidc-provider) finds such a token inactive; so must the gateway.
    .where(sql<boolean>`(t.grant_id is null or exists (select from oidc_payloads g where g.model = 'Grant' and g.id = t.grant_id and g.expires_at > now()))`),
);

const GRANT = new FixedQuery((db: Kysely<DB>, slot) =>
  accessQuery(db, 't.id')
    .select([sql<string | null>`null`.as('scope'), sql<string | null>`null`.as('aud'), 't.id as grant_id', sql`null`.as('b2b')])
    .where('t.model', '=', 'Grant')
    .where('t.id', '=', sql<string>`any(${slot}::text[])`),
);

const BACKEND_CLIENT = new FixedQuery((db: Kysely<DB>, slot) =>
  db
    .selectFrom('clients as c')
    .select(['c.client_id', sql<string | null>`c.metadata->>'payer_role'`.as('payer_role'), payerPopulation(sql.ref('c.metadata')).as('population')])
    .where('c.client_id', '=', sql<string>`${slot}`)
    .where('c.status', '=', 'active'),
);

/**
 * The door's lookups of concurrent FHIR requests go to the database together (src/db/batched.ts), one
 * statement for all the tokens, or grants, asked for while the last one was in flight: under load N requests
 * cost a few round trips instead of N. A lookup never takes an answer read before it was asked (it waits for
 * the next statement), so a token revoked before its request arrived is never let in.
 */
const lookups = new WeakMap<Kysely<DB>, { readonly tokens: Batched<readonly string[], Row | undefined>; readonly grants: Batched<string, Row | undefined> }>();

function lookupsOf(db: Kysely<DB>) {
  let found = lookups.get(db);
  if (!found) {
    // Each call asks for one id (a grant) or a few (a token's stored id under each live key): one answers it.
    const byId = async (query: FixedQuery<Kysely<DB>, Row>, wanted: readonly (readonly string[])[]) => {
      const rows = new Map((await query.all(db, [...new Set(wanted.flat())])).map((row) => [row.id, row]));
      return wanted.map((ids) => ids.map((id) => rows.get(id)).find((row) => row !== undefined));
    };
    found = { tokens: new Batched((wanted) => byId(OPAQUE_TOKEN, wanted)), grants: new Batched((wanted) => byId(GRANT, wanted.map((id) => [id]))) };
    lookups.set(db, found);
  }
  return found;
}

/** An opaque access token (or a backend's client-credentials token), by its value. */
export async function accessOfOpaqueToken(db: Kysely<DB>, box: SecretBox, token: string): Promise<TokenAccess | undefined> {
  const row = await lookupsOf(db).tokens.call(box.bearerIds(token));
  return row && toAccess(row);
}

/**
 * A JWT access token's grant, by the grant id the token carries: alive (not revoked, not expired), its client
 * active. A JWT of a backend service has no grant: its client is checked alone.
 */
export async function accessOfGrant(db: Kysely<DB>, grantId: string | undefined, clientId: string): Promise<Omit<TokenAccess, 'kind' | 'scope' | 'audience' | 'expiresAt' | 'b2b'> | undefined> {
  if (grantId === undefined) {
    const client = await BACKEND_CLIENT.first(db, clientId);
    return client && { clientId, grantId: undefined, userId: undefined, patient: undefined, userPatients: undefined, ...payerOf(client) };
  }
  const row = await lookupsOf(db).grants.call(grantId);
  if (!row || row.client_id !== clientId) return undefined;
  const access = toAccess(row);
  return access && { clientId, grantId, userId: access.userId, patient: access.patient, userPatients: access.userPatients, payerRole: access.payerRole, population: access.population, sensitiveExcluded: access.sensitiveExcluded };
}

/** The payer columns of a row: the role, and the population where the role confines the client to one. */
function payerOf(row: { payer_role: string | null; population: [string, boolean][] | string | null }): Pick<TokenAccess, 'payerRole' | 'population' | 'sensitiveExcluded'> {
  const payerRole = row.payer_role !== null && (PAYER_ROLES as readonly string[]).includes(row.payer_role) ? (row.payer_role as PayerRole) : undefined;
  if (payerRole !== 'provider-access' && payerRole !== 'payer-to-payer') return { payerRole, population: undefined, sensitiveExcluded: [] };
  const members = jsonList(row.population);
  return { payerRole, population: members.map(([id]) => id), sensitiveExcluded: members.filter(([, sensitive]) => sensitive).map(([id]) => id) };
}

/** A json_agg: an array from pg, a string from PGlite, null for no rows. */
function jsonList<T>(value: T[] | string | null): T[] {
  return typeof value === 'string' ? ((JSON.parse(value) as T[] | null) ?? []) : (value ?? []);
}

/** The `hl7-b2b` extension as the token carries it (whatever of it is well-formed). */
export function b2bOf(value: unknown): B2bContext | undefined {
  const parsed: unknown = typeof value === 'string' ? JSON.parse(value) : value;
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
  const record = parsed as Record<string, unknown>;
  const text = (v: unknown) => (typeof v === 'string' && v.length <= 256 ? v : undefined);
  const purposes = Array.isArray(record.purpose_of_use) ? record.purpose_of_use.filter((p): p is string => typeof p === 'string' && p.length <= 256).slice(0, 10) : [];
  return { subjectId: text(record.subject_id), organizationId: text(record.organization_id), purposeOfUse: purposes };
}

function toAccess(row: Row): TokenAccess | undefined {
  // A grant made for a user who has since been disabled or removed reaches nothing.
  if (row.account_id && !row.fhir_user) return undefined;
  const linked = jsonList(row.linked);
  const reached = row.fhir_user ? (actsForEveryPatient(row.fhir_user) ? 'all' : userPatients(row.fhir_user, linked)) : undefined;
  // A user who is not a clinician acts for a patient in context only while they may (a representative's
  // designation revoked or ended, a link removed): the grant then reaches no patient through patient/ scopes.
  const patient = row.patient !== null && (reached === undefined || reached === 'all' || reached.includes(row.patient)) ? row.patient : undefined;
  return {
    kind: row.model === 'ClientCredentials' ? 'ClientCredentials' : 'AccessToken',
    clientId: row.client_id!,
    scope: row.scope ?? '',
    audience: row.aud ?? undefined,
    expiresAt: row.expires_at ?? new Date(0),
    grantId: row.grant_id ?? undefined,
    userId: row.account_id ?? undefined,
    patient,
    userPatients: reached,
    ...payerOf(row),
    b2b: b2bOf(row.b2b),
  };
}
