import { randomBytes } from 'node:crypto';

import { sql, type Insertable, type Kysely, type Selectable } from 'kysely';

import type { GrantContextWrite } from '../db/payload-rows.js';
import type { DB } from '../db/schema.js';
import type { SecretBox } from '../security/secret-box.js';
import type { GrantContextsTable } from '../db/tables/grant-contexts.js';
import type { FhirContextItem, LaunchContextColumns, LaunchesTable } from '../db/tables/launches.js';

/**
 * Where SMART launch contexts are kept (the decisions about them are in src/smart/token-context.ts): the
 * launches EHRs create before they open an app, and the context each authorization ends up with, which the
 * token response, every refresh and introspection report.
 */

/*
 * The launch context's types live with what stores it; what they mean and their defaults are decided in
 * src/smart/token-context.ts.
 */
/** What an EHR establishes before it opens an app. */
export interface LaunchContext {
  readonly patient?: string | undefined;
  readonly encounter?: string | undefined;
  readonly fhirContext?: readonly FhirContextItem[] | undefined;
  readonly intent?: string | undefined;
  readonly need_patient_banner?: boolean | undefined;
  readonly smart_style_url?: string | undefined;
  readonly tenant?: string | undefined;
}

/** What one authorization ends up with: its launch context, for one FHIR base, and the user's fhirUser. */
export interface GrantContext extends LaunchContext {
  readonly fhirBase: string;
  readonly launchId?: string | undefined;
  /** Absolute URL of the user's FHIR resource, when fhirUser was granted. */
  readonly fhirUser?: string | undefined;
}

/** A launch context as the columns launches and grant_contexts share. An empty fhirContext is none. */
function contextColumns(context: LaunchContext): Required<Insertable<LaunchContextColumns>> {
  return {
    patient: context.patient ?? null,
    encounter: context.encounter ?? null,
    fhir_context: context.fhirContext?.length ? JSON.stringify(context.fhirContext) : null,
    intent: context.intent ?? null,
    need_patient_banner: context.need_patient_banner ?? null,
    smart_style_url: context.smart_style_url ?? null,
    tenant: context.tenant ?? null,
  };
}

function contextFromColumns(row: Selectable<LaunchContextColumns>): LaunchContext {
  return {
    patient: row.patient ?? undefined,
    encounter: row.encounter ?? undefined,
    fhirContext: row.fhir_context ?? undefined,
    intent: row.intent ?? undefined,
    need_patient_banner: row.need_patient_banner ?? undefined,
    smart_style_url: row.smart_style_url ?? undefined,
    tenant: row.tenant ?? undefined,
  };
}

export interface LaunchInput extends LaunchContext {
  readonly client_id?: string | undefined;
  readonly fhir_base?: string | undefined;
  readonly user?: string | undefined;
}

export interface Launch extends LaunchInput {
  /** The launch as stored: a keyed hash of the launch id the EHR holds, safe to record. */
  readonly id: string;
  readonly expiresAt: Date;
  readonly consumedAt: Date | null;
}

/**
 * A launch is a one-time handle the EHR passes through the browser: short-lived and single use. Like every
 * bearer value it is stored only as a keyed hash (SecretBox.bearerId).
 */
export const LAUNCH_TTL_SECONDS = 300;

export async function createLaunch(db: Kysely<DB>, box: SecretBox, input: LaunchInput, ttlSeconds = LAUNCH_TTL_SECONDS): Promise<{ launch: string; expires_in: number }> {
  const id = randomBytes(24).toString('base64url');
  await db
    .insertInto('launches')
    .values({
      id: box.bearerId(id),
      client_id: input.client_id ?? null,
      fhir_base: input.fhir_base ?? null,
      user_id: input.user ?? null,
      ...contextColumns(input),
      expires_at: new Date(Date.now() + ttlSeconds * 1000),
    })
    .execute();
  return { launch: id, expires_in: ttlSeconds };
}

export async function findLaunch(db: Kysely<DB>, box: SecretBox, id: string): Promise<Launch | undefined> {
  const row = await db.selectFrom('launches').selectAll().where('id', 'in', box.bearerIds(id)).executeTakeFirst();
  return row && toLaunch(row);
}

/**
 * Takes the launch for one authorization: succeeds once, for an unexpired launch. Irreversible: a failure
 * after this point leaves the launch spent, and the EHR must create another.
 */
export async function consumeLaunch(db: Kysely<DB>, box: SecretBox, id: string): Promise<Launch | undefined> {
  const row = await db
    .updateTable('launches')
    .set({ consumed_at: sql<Date>`now()` })
    .where('id', 'in', box.bearerIds(id))
    .where('consumed_at', 'is', null)
    .where('expires_at', '>', sql<Date>`now()`)
    .returningAll()
    .executeTakeFirst();
  return row && toLaunch(row);
}

/** Hashes launch ids stored in clear before launch ids were hashed; see hashClearBearerIds. */
export async function hashClearLaunchIds(db: Kysely<DB>, box: SecretBox): Promise<number> {
  const rows = await db.selectFrom('launches').select('id').where(sql<boolean>`position('.' in id) = 0`).execute();
  for (const row of rows) await db.updateTable('launches').set({ id: box.bearerId(row.id) }).where('id', '=', row.id).execute();
  return rows.length;
}

function toLaunch(row: Selectable<LaunchesTable>): Launch {
  return {
    id: row.id,
    client_id: row.client_id ?? undefined,
    fhir_base: row.fhir_base ?? undefined,
    user: row.user_id ?? undefined,
    ...contextFromColumns(row),
    expiresAt: row.expires_at,
    consumedAt: row.consumed_at,
  };
}

/** Who holds a grant and what it allows: for the connected-apps page, the admin API and audit events. */
export interface GrantHolder {
  readonly clientId: string;
  readonly accountId: string;
  readonly scope: string;
}

/** A grant's launch context as the row the consent's audit statement writes (src/audit/audit.ts EventWrites). */
export function grantContextWrite(grantId: string, context: GrantContext, holder: GrantHolder, expiresAt: Date): GrantContextWrite {
  return {
    grant_id: grantId,
    fhir_base: context.fhirBase,
    ...contextColumns(context),
    launch_id: context.launchId ?? null,
    fhir_user: context.fhirUser ?? null,
    client_id: holder.clientId,
    account_id: holder.accountId,
    scope: holder.scope,
    expires_at: expiresAt,
  };
}

export async function findGrantContext(db: Kysely<DB>, grantId: string): Promise<GrantContext | undefined> {
  const row = await db.selectFrom('grant_contexts').selectAll().where('grant_id', '=', grantId).where('expires_at', '>', sql<Date>`now()`).executeTakeFirst();
  return row && grantContextOf(row);
}

/** The columns {@link grantContextOf} reads, for a query that fetches a grant's context along with something else. */
export const GRANT_CONTEXT_COLUMNS = ['fhir_base', 'patient', 'encounter', 'fhir_context', 'intent', 'need_patient_banner', 'smart_style_url', 'tenant', 'launch_id', 'fhir_user'] as const;

export type GrantContextRow = Pick<Selectable<GrantContextsTable>, (typeof GRANT_CONTEXT_COLUMNS)[number]>;

/** A grant's context from its row (a live one: the query checks `expires_at`). */
export function grantContextOf(row: GrantContextRow): GrantContext {
  return {
    fhirBase: row.fhir_base,
    ...contextFromColumns(row),
    launchId: row.launch_id ?? undefined,
    fhirUser: row.fhir_user ?? undefined,
  };
}

export async function purgeExpiredContexts(db: Kysely<DB>): Promise<number> {
  const grants = await db.deleteFrom('grant_contexts').where('expires_at', '<', sql<Date>`now() - interval '1 hour'`).executeTakeFirst();
  const launches = await db.deleteFrom('launches').where('expires_at', '<', sql<Date>`now() - interval '1 day'`).executeTakeFirst();
  return Number(grants.numDeletedRows) + Number(launches.numDeletedRows);
}
