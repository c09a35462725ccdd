import type { Adapter } from 'oidc-provider';

import { ClientAdapter, type AdapterDeps } from './client.js';
import { GroupedWrites } from './grouped-writes.js';
import { GroupedConsumes, PayloadAdapter, SharedTokenReads } from './payload.js';
import { ReplayDetectionAdapter } from './replay-detection.js';

/** The `adapter` option of oidc-provider: one instance per model name. */
export function createAdapterFactory(deps: AdapterDeps): (model: string) => Adapter {
  const shared = new SharedTokenReads(deps.db);
  const writes = new GroupedWrites(deps.db);
  const consumes = new GroupedConsumes(deps.db);
  return (model) => {
    if (model === 'Client') return new ClientAdapter(deps);
    if (model === 'ReplayDetection') return new ReplayDetectionAdapter(deps.db);
    return new PayloadAdapter(deps.db, deps.box, model, shared, writes, consumes);
  };
}
