import type { Kysely } from 'kysely';

import { getClient } from '../clients/registry.js';
import { fhirBaseOf, type Config } from '../config/config.js';
import type { DB } from '../db/schema.js';
import { encountersOf, patientExists } from '../directory/patients.js';
import { HttpProblem } from '../errors.js';
import { fhirContextProblem } from '../smart/launch-context.js';
import { getUser } from '../users/users.js';
import type { LaunchContext, LaunchInput } from '../launch/context.js';

/** A launch as an EHR (the admin API, the CLI) or the sandbox launcher asks for it. */
export interface LaunchRequest extends LaunchContext {
  /** The FHIR base the launch is for (`aud`); any configured one when absent. */
  readonly aud?: string | undefined;
  readonly client_id?: string | undefined;
  readonly user?: string | undefined;
}

/**
 * Checks a launch request, the same way wherever it comes from: a known FHIR base, an encounter only with its
 * patient, fhirContext as SMART 2.2 allows it, an existing client and user. `inDirectory`: the patient and
 * encounter must be in our directory (the launcher picks from it; an EHR launches its own patients).
 * @throws {HttpProblem} 400 naming what is wrong.
 */
export async function launchInput(db: Kysely<DB>, config: Config, request: LaunchRequest, { inDirectory }: { inDirectory: boolean }): Promise<LaunchInput> {
  const { aud, user, client_id, ...context } = request;
  const fhirBase = aud === undefined ? undefined : fhirBaseOf(config, aud);
  if (aud !== undefined && !fhirBase) throw HttpProblem.invalid(`aud ${aud} is not one of this server's FHIR base URLs`);
  if (context.encounter && !context.patient) throw HttpProblem.invalid('encounter needs patient');
  const invalidContext = context.fhirContext && fhirContextProblem(context.fhirContext);
  if (invalidContext) throw HttpProblem.invalid(invalidContext);
  if (client_id && !(await getClient(db, client_id))) throw HttpProblem.invalid(`no client ${client_id}`);
  if (user && !(await getUser(db, user))) throw HttpProblem.invalid(`no user ${user}`);
  if (inDirectory && context.patient) {
    if (!(await patientExists(db, context.patient))) throw HttpProblem.invalid(`no patient ${context.patient} in the directory`);
    if (context.encounter && !(await encountersOf(db, context.patient)).some((e) => e.id === context.encounter)) throw HttpProblem.invalid(`encounter ${context.encounter} is not one of the patient's`);
  }
  return { ...context, client_id, user, fhir_base: fhirBase };
}
