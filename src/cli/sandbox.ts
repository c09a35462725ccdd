import { parseArgs } from 'node:util';

import { AuditLog } from '../audit/audit.js';
import { usesEmbeddedFhir, type Config } from '../config/config.js';
import { migrateToLatest } from '../db/migrate.js';
import { createLogger } from '../http/logger.js';
import { openSecretBox } from '../security/secret-key.js';
import { resetSandboxPack } from '../seed/sandbox.js';
import { withDatabase } from './database.js';
import { CommandFailed, UsageError } from './errors.js';

export const SANDBOX_USAGE = `Usage: smart-auth sandbox reset

Puts the sandbox's FHIR data back as it was on first start: every resource of the embedded FHIR server
is replaced by the synthetic data pack (what apps created, changed or deleted through /fhir is undone),
and the pack's patients and encounters are written back to the patient directory the launcher's pickers
read. Users, clients, grants and other directory rows are left alone.

Refused unless the server is a sandbox (SANDBOX=true, or the embedded database with SANDBOX unset) that
runs the embedded FHIR server. On the embedded database, stop the server first; on Postgres, restart
running servers afterwards (each holds the data it loaded in memory). The reset is recorded in the audit
trail (sandbox.reset), in the same transaction.`;

/** `sandbox reset`: the sandbox's FHIR data and its directory rows restored from the pack. */
export async function sandbox(config: Config, args: readonly string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values } = parseArgs({ args: [...rest], options: { help: { type: 'boolean', short: 'h' } }, strict: true });
  if (sub === undefined || sub === 'help' || sub === '--help' || sub === '-h' || values.help) {
    process.stdout.write(`${SANDBOX_USAGE}\n`);
    return 0;
  }
  if (sub !== 'reset') throw new UsageError(`unknown sandbox command "${sub}" (expected reset)`);
  if (!config.sandbox) throw new CommandFailed(`sandbox reset works on a sandbox only, and this server is not one (${config.sandboxReason}). Set SANDBOX=true if this database is a sandbox's.`);
  if (!usesEmbeddedFhir(config)) throw new CommandFailed('sandbox reset restores the embedded FHIR server\'s data, and FHIR_UPSTREAMS gives the FHIR base another upstream');
  return withDatabase(config, async ({ db }) => {
    await migrateToLatest(db);
    const box = await openSecretBox(config);
    // An operator's rewrite of the FHIR data apps read is audited as the admin API's writes are, in the
    // reset's own transaction: no reset without its audit event.
    const written = await resetSandboxPack(db, async (trx, restored) => {
      const audit = new AuditLog(trx, createLogger(config.logLevel), box);
      try {
        await audit.record({ type: 'sandbox.reset', actorType: 'admin', actorId: 'cli', details: { ...restored } });
      } finally {
        await audit.close();
      }
    });
    process.stdout.write(`Sandbox data restored: ${written.resources} FHIR resources; ${written.patients} patients and ${written.encounters} encounters in the patient directory.\n`);
    if (config.database.kind === 'postgres') process.stdout.write('Servers running on this database serve what they loaded until they restart: restart them.\n');
    return 0;
  });
}
