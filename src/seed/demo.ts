import type { Kysely } from 'kysely';

import type { Config } from '../config/config.js';
import type { DB } from '../db/schema.js';
import { upsertEncounter, upsertPatient, type EncounterResource, type PatientResource } from '../directory/patients.js';
import { hashPassword } from '../security/password.js';

/**
 * Sandbox data, so that `npm start` on a fresh clone has someone to log in as and patients to pick.
 * Inserted only where missing: an operator's changes to these rows survive a restart.
 */
export const DEMO_USERS = [
  { id: 'demo-clinician', username: 'clinician', password: 'clinician-demo', fhirUser: 'Practitioner/demo-practitioner', name: 'Dr. Alex Rivera', roles: ['clinician'] },
  { id: 'demo-patient', username: 'patient', password: 'patient-demo', fhirUser: 'Patient/demo-amy-shaw', name: 'Amy Shaw', roles: ['patient'] },
] as const;

export const DEMO_CLIENT_ID = 'demo-app';

const MRN = 'http://hospital.example.org/mrn';

const patient = (id: string, given: string[], family: string, birthDate: string, gender: string, mrn: string): PatientResource => ({
  resourceType: 'Patient',
  id,
  identifier: [{ system: MRN, value: mrn }],
  name: [{ use: 'official', family, given }],
  gender,
  birthDate,
});

export const DEMO_PATIENTS: readonly PatientResource[] = [
  patient('demo-amy-shaw', ['Amy', 'V.'], 'Shaw', '1987-02-20', 'female', 'MRN-1001'),
  patient('demo-daniel-okafor', ['Daniel'], 'Okafor', '1954-11-03', 'male', 'MRN-1002'),
  patient('demo-lucia-fernandez', ['Lucía'], 'Fernández', '2016-06-14', 'female', 'MRN-1003'),
  patient('demo-henry-nguyen', ['Henry', 'Minh'], 'Nguyen', '1972-08-29', 'male', 'MRN-1004'),
  patient('demo-grace-miller', ['Grace'], 'Miller', '1939-01-17', 'female', 'MRN-1005'),
  patient('demo-samir-haddad', ['Samir'], 'Haddad', '1999-12-31', 'male', 'MRN-1006'),
];

const encounter = (id: string, patientId: string, status: string, start: string, end?: string): EncounterResource => ({
  resourceType: 'Encounter',
  id,
  status,
  class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB', display: 'ambulatory' },
  subject: { reference: `Patient/${patientId}` },
  period: end ? { start, end } : { start },
});

export const DEMO_ENCOUNTERS: readonly EncounterResource[] = [
  encounter('demo-enc-amy-1', 'demo-amy-shaw', 'finished', '2026-03-02T09:30:00Z', '2026-03-02T10:00:00Z'),
  encounter('demo-enc-amy-2', 'demo-amy-shaw', 'in-progress', '2026-11-27T14:00:00Z'),
  encounter('demo-enc-daniel-1', 'demo-daniel-okafor', 'finished', '2026-09-15T08:00:00Z', '2026-09-18T12:00:00Z'),
  encounter('demo-enc-henry-1', 'demo-henry-nguyen', 'in-progress', '2026-11-28T07:45:00Z'),
];

export interface SeedResult {
  readonly users: number;
  readonly patients: number;
  readonly clients: number;
}

export async function seedDemo(db: Kysely<DB>, config: Config): Promise<SeedResult> {
  let users = 0;
  for (const user of DEMO_USERS) {
    const exists = await db.selectFrom('users').select('id').where((eb) => eb.or([eb('id', '=', user.id), eb('username', '=', user.username)])).executeTakeFirst();
    if (exists) continue;
    await db
      .insertInto('users')
      .values({ id: user.id, username: user.username, password_hash: await hashPassword(user.password), fhir_user: user.fhirUser, name: user.name, roles: JSON.stringify(user.roles) })
      .onConflict((oc) => oc.doNothing())
      .execute();
    users++;
  }
  const before = await db.selectFrom('patients').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
  for (const p of DEMO_PATIENTS) await upsertPatient(db, p, { replace: false });
  for (const e of DEMO_ENCOUNTERS) await upsertEncounter(db, e, { replace: false });
  const after = await db.selectFrom('patients').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();

  const client = await db
    .insertInto('clients')
    .values({
      client_id: DEMO_CLIENT_ID,
      metadata: JSON.stringify({
        client_id: DEMO_CLIENT_ID,
        client_name: 'Demo SMART app',
        application_type: 'web',
        redirect_uris: [`${config.issuer}/sample-app/`],
        launch_uri: `${config.issuer}/sample-app/launch.html`,
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      }),
    })
    .onConflict((oc) => oc.column('client_id').doNothing())
    .executeTakeFirst();

  return { users, patients: Number(after.n) - Number(before.n), clients: Number(client.numInsertedOrUpdatedRows ?? 0n) };
}
