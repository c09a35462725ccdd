import type { ColumnType, Generated } from 'kysely';

/** The embedded FHIR server's resources, the current version of each (src/fhir-store). */
export interface FhirResourcesTable {
  resource_type: string;
  id: string;
  version_id: string;
  /** The FHIR R4 resource as the server holds it, `meta.versionId` and `meta.lastUpdated` included. */
  resource: ColumnType<Record<string, unknown>, string, string>;
  updated_at: Generated<Date>;
}
