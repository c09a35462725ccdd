import { OperationOutcomeError, serverError, type SearchRequest, type WithId } from '@medplum/core';
import type { OperationOutcome, Resource } from '@medplum/fhirtypes';
import { MemoryRepository, type CreateResourceOptions, type DeleteResourceOptions } from '@medplum/fhir-router';

/** One change to the stored resources: the new current version of a resource, or its deletion. */
export type FhirChange = { readonly kind: 'put'; readonly resource: WithId<Resource> } | { readonly kind: 'delete'; readonly resourceType: string; readonly id: string };

/**
 * Where the embedded server keeps its resources between runs (the server's database: src/fhir-store). The
 * server holds every resource in memory and searches there; this is only read once, at start.
 */
export interface FhirPersistence {
  /** Every stored resource, current versions, `meta` included. */
  loadAll(): Promise<Resource[]>;
  /** Stores the changes durably, all or none. The server answers the request that made them only after this resolved. */
  record(changes: readonly FhirChange[]): Promise<void>;
}

interface Journaled {
  readonly change: FhirChange;
  /** The resource as it was before the change (undefined: it did not exist), to undo the change in memory. */
  readonly before: WithId<Resource> | undefined;
}

/**
 * Medplum's in-memory repository, with every write recorded in a {@link FhirPersistence} before it is
 * answered, and batch/transaction Bundles made all or nothing (the memory repository has no transactions).
 *
 * Writes funnel through three methods: `createResource` (which `updateResource` and `patchResource` end in),
 * `conditionalCreate` (which the memory repository does on its own) and `deleteResource`. Inside
 * `withTransaction` the changes are kept in a journal and recorded together when the outermost transaction
 * ends; if its work fails they are undone in memory and nothing is recorded. A transaction's work runs in
 * memory without waiting on I/O, so no other request's write can land in its journal.
 *
 * Records are written one at a time, in the order the changes were made in memory. If recording fails the
 * change is undone in memory and the request fails (500): memory never holds what the database does not.
 */
export class PersistentRepository extends MemoryRepository {
  private depth = 0;
  private journal: Journaled[] = [];
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly persistence: FhirPersistence | undefined) {
    super();
  }

  /** Puts resources in memory as they are (ids and `meta` kept), recording nothing: what was loaded, or test data. */
  async restore(resources: readonly Resource[]): Promise<void> {
    await this.withSeeding(async () => {
      for (const resource of resources) await super.createResource(resource, undefined, true);
    });
  }

  override async createResource<T extends Resource>(resource: T, options?: CreateResourceOptions, update = false): Promise<WithId<T>> {
    const before = resource.id ? await this.current(resource.resourceType, resource.id) : undefined;
    const created = await super.createResource(resource, options, update);
    await this.write({ change: { kind: 'put', resource: created }, before });
    return created;
  }

  override async conditionalCreate<T extends Resource>(resource: T, search: SearchRequest<T>, options?: CreateResourceOptions): Promise<{ resource: WithId<T>; outcome: OperationOutcome }> {
    const result = await super.conditionalCreate(resource, search, options);
    if (result.outcome.id === 'created') await this.write({ change: { kind: 'put', resource: result.resource }, before: undefined });
    return result;
  }

  override async deleteResource(resourceType: string, id: string, options?: DeleteResourceOptions): Promise<void> {
    const before = await this.current(resourceType, id);
    await super.deleteResource(resourceType, id, options);
    await this.write({ change: { kind: 'delete', resourceType, id }, before });
  }

  override async withTransaction<TResult>(callback: (repo: this) => Promise<TResult>): Promise<TResult> {
    const start = this.journal.length;
    this.depth++;
    let result: TResult;
    try {
      result = await callback(this);
    } catch (error) {
      this.depth--;
      await this.undo(this.journal.splice(start));
      throw error;
    }
    this.depth--;
    if (this.depth === 0 && this.journal.length) await this.commit(this.journal.splice(0));
    return result;
  }

  private async current(resourceType: string, id: string): Promise<WithId<Resource> | undefined> {
    try {
      return await this.readResource<WithId<Resource>>(resourceType, id);
    } catch {
      return undefined;
    }
  }

  private async write(entry: Journaled): Promise<void> {
    if (this.depth > 0) this.journal.push(entry);
    else await this.commit([entry]);
  }

  private async commit(entries: readonly Journaled[]): Promise<void> {
    const persistence = this.persistence;
    if (!persistence) return;
    const recorded = this.queue.then(() => persistence.record(entries.map((e) => e.change)));
    this.queue = recorded.catch(() => undefined);
    try {
      await recorded;
    } catch (error) {
      await this.undo(entries);
      throw new OperationOutcomeError(serverError(new Error('the change could not be stored')), { cause: error });
    }
  }

  /** Puts memory back as it was before the entries, newest first. */
  private async undo(entries: readonly Journaled[]): Promise<void> {
    for (const { change, before } of [...entries].reverse()) {
      const [resourceType, id] = change.kind === 'put' ? [change.resource.resourceType, change.resource.id] : [change.resourceType, change.id];
      if (before) await this.restore([before]);
      else await this.expungeResources(resourceType, [id]);
    }
  }
}
