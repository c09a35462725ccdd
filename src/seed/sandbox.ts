import { sql, type Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import { upsertEncounter, upsertPatient } from '../directory/patients.js';
import { countFhirResources, replaceFhirResources } from '../fhir-store/resources.js';
import { generateSandboxPack } from './sandbox-pack.js';

export interface PackWritten {
  readonly resources: number;
  readonly patients: number;
  readonly encounters: number;
}

/**
 * The sandbox's FHIR data on first start: the synthetic pack, written only while the embedded FHIR server
 * has no resources at all, so that what apps wrote is never overwritten. Undefined when there were some.
 */
export async function seedSandboxPack(db: Kysely<DB>): Promise<PackWritten | undefined> {
  return db.transaction().execute(async (trx) => {
    // Two processes starting together on one Postgres: the second waits here, then finds the pack.
    await sql`lock table fhir_resources in share row exclusive mode`.execute(trx);
    if ((await countFhirResources(trx)) > 0) return undefined;
    return writePack(trx);
  });
}

/**
 * `smart-auth sandbox reset`: every resource of the embedded FHIR server replaced by the pack (what apps
 * wrote is gone), and the pack's patients and encounters put back in the patient directory as they are in
 * the pack. Other directory rows (patients an operator imported) are left alone. `record` writes what the
 * reset is recorded with (its audit event), in the same transaction: both or neither.
 */
export async function resetSandboxPack(db: Kysely<DB>, record: (trx: Kysely<DB>, written: PackWritten) => Promise<void>): Promise<PackWritten> {
  return db.transaction().execute(async (trx) => {
    await sql`lock table fhir_resources in share row exclusive mode`.execute(trx);
    const written = await writePack(trx);
    await record(trx, written);
    return written;
  });
}

async function writePack(trx: Kysely<DB>): Promise<PackWritten> {
  const pack = generateSandboxPack();
  const lastUpdated = new Date().toISOString();
  await replaceFhirResources(trx, pack.resources.map((resource) => ({ ...resource, meta: { ...resource.meta, versionId: '1', lastUpdated } })));
  for (const patient of pack.patients) await upsertPatient(trx, patient);
  for (const encounter of pack.encounters) await upsertEncounter(trx, encounter);
  return { resources: pack.resources.length, patients: pack.patients.length, encounters: pack.encounters.length };
}
