import type { Migration } from 'kysely/migration';

import * as foundation from './2026-11-28T00-00-foundation.js';
import * as launch from './2026-11-28T01-00-launch.js';
import * as audit from './2026-11-28T02-00-audit.js';
import * as auditChains from './2026-11-28T03-00-audit-chains.js';
import * as bearerHashes from './2026-12-01T00-00-bearer-hashes.js';
import * as loginThrottle from './2026-12-01T01-00-login-throttle.js';
import * as auditCheckpoints from './2026-12-01T02-00-audit-checkpoints.js';
import * as consoleSessions from './2026-12-02T01-00-console-sessions.js';
import * as sandboxResources from './2026-12-02T03-00-sandbox-resources.js';
import * as launcherOptions from './2026-12-02T04-00-launcher-options.js';
import * as udap from './2026-12-02T05-00-udap.js';
import * as payer from './2026-12-02T06-00-payer.js';
import * as tieredOAuth from './2026-12-02T07-00-tiered-oauth.js';
import * as auditHashIndex from './2026-12-02T08-00-audit-hash-index.js';
import * as patientSearchIndex from './2026-12-03T00-00-patient-search-index.js';
import * as singleUseCheck from './2026-12-03T01-00-single-use-check.js';
import * as singleDecisionCheck from './2026-12-03T02-00-single-decision-check.js';

/** Static index: names sort in the order they apply. Add new migrations at the end; never edit one. */
export const migrations: Readonly<Record<string, Migration>> = {
  '2026-11-28T00-00-foundation': foundation,
  '2026-11-28T01-00-launch': launch,
  '2026-11-28T02-00-audit': audit,
  '2026-11-28T03-00-audit-chains': auditChains,
  '2026-12-01T00-00-bearer-hashes': bearerHashes,
  '2026-12-01T01-00-login-throttle': loginThrottle,
  '2026-12-01T02-00-audit-checkpoints': auditCheckpoints,
  '2026-12-02T01-00-console-sessions': consoleSessions,
  '2026-12-02T03-00-sandbox-resources': sandboxResources,
  '2026-12-02T04-00-launcher-options': launcherOptions,
  '2026-12-02T05-00-udap': udap,
  '2026-12-02T06-00-payer': payer,
  '2026-12-02T07-00-tiered-oauth': tieredOAuth,
  '2026-12-02T08-00-audit-hash-index': auditHashIndex,
  '2026-12-03T00-00-patient-search-index': patientSearchIndex,
  '2026-12-03T01-00-single-use-check': singleUseCheck,
  '2026-12-03T02-00-single-decision-check': singleDecisionCheck,
};
