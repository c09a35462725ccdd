import type { Resource } from '@medplum/fhirtypes';
import type { Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import type { FhirChange, FhirPersistence } from '../fhir/repository.js';

/** A FHIR resource as stored: its type, id and version are columns too. */
export interface StoredResource {
  readonly resourceType: string;
  readonly id?: string;
  readonly meta?: { readonly versionId?: string };
}

/** Rows per INSERT when many resources are written at once (Postgres allows 65,535 parameters a statement). */
const INSERT_BATCH = 500;

/**
 * The embedded FHIR server's resources in the fhir_resources table: what it loads at start and where it
 * records each write before answering.
 */
export function fhirResourceStore(db: Kysely<DB>): FhirPersistence {
  return {
    async loadAll() {
      const rows = await db.selectFrom('fhir_resources').select('resource').orderBy('resource_type').orderBy('id').execute();
      return rows.map((row) => row.resource as unknown as Resource);
    },
    async record(changes) {
      await db.transaction().execute(async (trx) => {
        for (const change of changes) await applyChange(trx, change);
      });
    },
  };
}

async function applyChange(db: Kysely<DB>, change: FhirChange): Promise<void> {
  if (change.kind === 'delete') {
    await db.deleteFrom('fhir_resources').where('resource_type', '=', change.resourceType).where('id', '=', change.id).execute();
    return;
  }
  const row = toRow(change.resource);
  await db
    .insertInto('fhir_resources')
    .values(row)
    .onConflict((oc) => oc.columns(['resource_type', 'id']).doUpdateSet({ version_id: row.version_id, resource: row.resource, updated_at: new Date() }))
    .execute();
}

function toRow(resource: StoredResource): { resource_type: string; id: string; version_id: string; resource: string } {
  if (!resource.id) throw new Error(`a ${resource.resourceType} without an id cannot be stored`);
  return { resource_type: resource.resourceType, id: resource.id, version_id: resource.meta?.versionId ?? '1', resource: JSON.stringify(resource) };
}

export async function countFhirResources(db: Kysely<DB>): Promise<number> {
  const row = await db.selectFrom('fhir_resources').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
  return Number(row.n);
}

/** Replaces every stored resource with these (in the caller's transaction, to be all or nothing). */
export async function replaceFhirResources(db: Kysely<DB>, resources: readonly StoredResource[]): Promise<void> {
  await db.deleteFrom('fhir_resources').execute();
  for (let i = 0; i < resources.length; i += INSERT_BATCH) {
    await db.insertInto('fhir_resources').values(resources.slice(i, i + INSERT_BATCH).map(toRow)).execute();
  }
}
