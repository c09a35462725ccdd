import { createHash } from 'node:crypto';

import type {
  AllergyIntolerance,
  CarePlan,
  CareTeam,
  CareTeamParticipant,
  CodeableConcept,
  Condition,
  Coverage,
  Device,
  DiagnosticReport,
  DocumentReference,
  Encounter,
  ExplanationOfBenefit,
  Goal,
  Immunization,
  Location,
  MedicationRequest,
  Observation,
  ObservationReferenceRange,
  Organization,
  Patient,
  Practitioner,
  PractitionerRole,
  Procedure,
  Provenance,
  Reference,
  Resource,
} from '@medplum/fhirtypes';

import type { EncounterResource, PatientResource } from '../directory/patients.js';
import { DEMO_ENCOUNTERS, DEMO_PATIENTS } from './demo.js';
import { SeededRandom } from './random.js';
import {
  ALLERGENS,
  CITIES,
  coding,
  concept,
  ETHNICITIES,
  FAMILY_NAMES,
  GIVEN_NAMES,
  LAB_PANELS,
  MEDICATIONS,
  PROBLEMS,
  PROCEDURES,
  RACES,
  SMOKING_STATUS,
  STREETS,
  SYSTEM,
  VACCINES,
  VISIT_TYPES,
  type Allergen,
  type LabPanel,
  type Problem,
} from './sandbox-terminology.js';

/**
 * The sandbox's synthetic data pack: patients with US Core-shaped histories covering the USCDI data classes,
 * made by a seeded generator (no network, nothing checked in but this code). The same seed gives the same
 * pack. The demo patients (src/seed/demo.ts) are in it with their ids, names and encounters, and the demo
 * clinician (Practitioner/demo-practitioner) is every patient's primary care physician.
 */

export const SANDBOX_PACK_SEED = 13;
/** The pack's "today": its histories lead up to it, so the pack does not depend on the day it is made. */
export const PACK_DATE = '2026-11-28';
export const PACK_PATIENTS = 30;

export interface SandboxPack {
  /** Every resource, in a stable order; every reference among them resolves. */
  readonly resources: readonly Resource[];
  /** The patients and encounters, for the patient directory (the launcher's pickers). */
  readonly patients: readonly PatientResource[];
  readonly encounters: readonly EncounterResource[];
}

type WithId<T extends Resource> = T & { id: string };

const ref = <T extends Resource>(resource: WithId<T>, display?: string): Reference<T> => ({ reference: `${resource.resourceType}/${resource.id}`, ...(display ? { display } : {}) });
const DAY = 86_400_000;
const dateOf = (daysBefore: number, hour = 9): Date => new Date(Date.parse(`${PACK_DATE}T00:00:00Z`) - daysBefore * DAY + hour * 3_600_000);
const iso = (date: Date): string => date.toISOString().replace('.000Z', 'Z');
const day = (date: Date): string => date.toISOString().slice(0, 10);
const round = (value: number, decimals: number): number => Number(value.toFixed(decimals));
const narrative = (text: string): { status: 'generated'; div: string } => ({ status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${text.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</div>` });

const HOSPITAL: WithId<Organization> = {
  resourceType: 'Organization',
  id: 'demo-hospital',
  identifier: [{ system: SYSTEM.npi, value: '1407071236' }],
  active: true,
  type: [concept('http://terminology.hl7.org/CodeSystem/organization-type', 'prov', 'Healthcare Provider')],
  name: 'Riverside General Hospital',
  telecom: [{ system: 'phone', value: '617-555-0100', use: 'work' }],
  address: [{ line: ['100 Riverside Drive'], city: 'Boston', state: 'MA', postalCode: '02114', country: 'US' }],
};
const PAYER: WithId<Organization> = {
  resourceType: 'Organization',
  id: 'demo-payer',
  identifier: [{ system: 'urn:oid:2.16.840.1.113883.6.300', value: '99726' }],
  active: true,
  type: [concept('http://terminology.hl7.org/CodeSystem/organization-type', 'pay', 'Payer')],
  name: 'Bluewater Health Plan',
  telecom: [{ system: 'phone', value: '800-555-0199', use: 'work' }],
  address: [{ line: ['1 Harbor Plaza'], city: 'Boston', state: 'MA', postalCode: '02110', country: 'US' }],
};
const MAIN_CAMPUS: WithId<Location> = {
  resourceType: 'Location',
  id: 'demo-location-main',
  status: 'active',
  name: 'Riverside General Hospital, Main Campus',
  type: [concept('http://terminology.hl7.org/CodeSystem/v3-RoleCode', 'HOSP', 'Hospital')],
  telecom: [{ system: 'phone', value: '617-555-0100' }],
  address: { line: ['100 Riverside Drive'], city: 'Boston', state: 'MA', postalCode: '02114', country: 'US' },
  managingOrganization: ref(HOSPITAL),
};
const CLINIC: WithId<Location> = {
  resourceType: 'Location',
  id: 'demo-location-clinic',
  status: 'active',
  name: 'Riverside Family Medicine Clinic',
  type: [concept('http://terminology.hl7.org/CodeSystem/v3-RoleCode', 'OF', 'Outpatient facility')],
  telecom: [{ system: 'phone', value: '617-555-0140' }],
  address: { line: ['250 Cambridge Street'], city: 'Boston', state: 'MA', postalCode: '02114', country: 'US' },
  managingOrganization: ref(HOSPITAL),
};

interface Clinician {
  readonly practitioner: WithId<Practitioner>;
  readonly role: WithId<PractitionerRole>;
}

const clinician = (id: string, npi: string, given: string, family: string, prefix: string, gender: 'male' | 'female', taxonomy: string, specialty: string, location: WithId<Location>): Clinician => {
  const practitioner: WithId<Practitioner> = {
    resourceType: 'Practitioner',
    id,
    identifier: [{ system: SYSTEM.npi, value: npi }],
    active: true,
    name: [{ use: 'official', family, given: [given], prefix: [prefix] }],
    telecom: [{ system: 'email', value: `${given}.${family}@riverside.example.org`.toLowerCase(), use: 'work' }],
    gender,
  };
  const role: WithId<PractitionerRole> = {
    resourceType: 'PractitionerRole',
    id: `${id}-role`,
    active: true,
    practitioner: ref(practitioner, `${prefix} ${given} ${family}`),
    organization: ref(HOSPITAL),
    code: [concept(SYSTEM.providerTaxonomy, taxonomy, specialty)],
    specialty: [concept(SYSTEM.providerTaxonomy, taxonomy, specialty)],
    location: [ref(location)],
    telecom: [{ system: 'phone', value: '617-555-0140', use: 'work' }],
  };
  return { practitioner, role };
};

/** Dr. Alex Rivera is the demo clinician's fhirUser (DEMO_USERS): every patient's primary care physician. */
const PCP = clinician('demo-practitioner', '1972536148', 'Alex', 'Rivera', 'Dr.', 'male', '207Q00000X', 'Family Medicine', CLINIC);
const PEDIATRICIAN = clinician('demo-practitioner-jordan-lee', '1831294477', 'Jordan', 'Lee', 'Dr.', 'female', '208000000X', 'Pediatrics', CLINIC);
const CARDIOLOGIST = clinician('demo-practitioner-sam-adeyemi', '1588667732', 'Sam', 'Adeyemi', 'Dr.', 'male', '207RC0000X', 'Cardiovascular Disease', MAIN_CAMPUS);
const NURSE_PRACTITIONER = clinician('demo-practitioner-maria-santos', '1245319599', 'Maria', 'Santos', 'NP', 'female', '363LF0000X', 'Family Nurse Practitioner', CLINIC);
const CLINICIANS = [PCP, PEDIATRICIAN, CARDIOLOGIST, NURSE_PRACTITIONER];

interface Profile {
  readonly patient: PatientResource;
  /** Prefix of the ids of the patient's records. */
  readonly key: string;
  /** Encounter ids are demo-enc-<short>-<n>, as the demo encounters are. */
  readonly short: string;
  readonly problems: readonly string[];
  readonly allergies: readonly string[];
  readonly smoking: number;
}

/** The demo patients' histories are written out, so that the patient one signs in as has a known record. */
const DEMO_PROFILES: Readonly<Record<string, { short: string; problems: string[]; allergies: string[]; smoking: number }>> = {
  'demo-amy-shaw': { short: 'amy', problems: ['asthma', 'rhinitis'], allergies: ['7980', '256259004'], smoking: 0 },
  'demo-daniel-okafor': { short: 'daniel', problems: ['hypertension', 'diabetes', 'hyperlipidemia'], allergies: [], smoking: 1 },
  'demo-lucia-fernandez': { short: 'lucia', problems: ['otitis'], allergies: ['762952008'], smoking: 0 },
  'demo-henry-nguyen': { short: 'henry', problems: ['hypertension', 'hyperlipidemia', 'obesity'], allergies: ['10831'], smoking: 2 },
  'demo-grace-miller': { short: 'grace', problems: ['atrial-fibrillation', 'osteoarthritis', 'hypothyroidism', 'hypertension'], allergies: ['300916003'], smoking: 1 },
  'demo-samir-haddad': { short: 'samir', problems: ['migraine', 'depression'], allergies: [], smoking: 0 },
};

const ageAt = (birthDate: string, at: Date): number => {
  const born = new Date(`${birthDate}T00:00:00Z`);
  let age = at.getUTCFullYear() - born.getUTCFullYear();
  if (at.getUTCMonth() < born.getUTCMonth() || (at.getUTCMonth() === born.getUTCMonth() && at.getUTCDate() < born.getUTCDate())) age--;
  return age;
};

const problem = (key: string): Problem => PROBLEMS.find((p) => p.key === key)!;
const allergen = (code: string): Allergen => ALLERGENS.find((a) => a.code === code)!;

function profiles(random: SeededRandom): Profile[] {
  const out: Profile[] = DEMO_PATIENTS.map((patient) => {
    const demo = DEMO_PROFILES[patient.id]!;
    return { patient, key: patient.id.replace(/^demo-/, ''), ...demo };
  });
  const taken = new Set(out.map((p) => p.patient.id));
  let mrn = 1007;
  while (out.length < PACK_PATIENTS) {
    const gender = random.chance(0.5) ? 'female' : 'male';
    const given = random.pick(GIVEN_NAMES[gender]);
    const family = random.pick(FAMILY_NAMES);
    const id = `demo-${given}-${family}`.toLowerCase();
    if (taken.has(id)) continue;
    taken.add(id);
    const age = random.chance(0.15) ? random.int(1, 17) : random.int(18, 92);
    const born = dateOf(age * 365.25 + random.int(0, 360));
    const birthDate = day(born);
    const eligible = PROBLEMS.filter((p) => age >= p.minAge && (p.maxAge === undefined || age <= p.maxAge));
    const problems = eligible.filter((p) => random.chance(p.chronic ? Math.min(0.12 + age / 250, 0.5) : 0.3)).map((p) => p.key);
    if (!problems.length) problems.push(random.pick(eligible).key);
    const allergies = random.chance(0.4) ? random.sample(ALLERGENS, random.int(1, 2)).map((a) => a.code) : [];
    const patient: PatientResource = { resourceType: 'Patient', id, identifier: [{ system: SYSTEM.mrn, value: `MRN-${mrn++}` }], name: [{ use: 'official', family, given: [given] }], gender, birthDate };
    out.push({ patient, key: id.replace(/^demo-/, ''), short: id.replace(/^demo-/, ''), problems, allergies, smoking: age >= 18 ? random.int(0, 2) : 0 });
  }
  return out;
}

/** The shared records (organizations, locations, clinicians) and every patient's history. */
export function generateSandboxPack(seed = SANDBOX_PACK_SEED): SandboxPack {
  const random = new SeededRandom(seed);
  const resources: Resource[] = [HOSPITAL, PAYER, MAIN_CAMPUS, CLINIC, ...CLINICIANS.flatMap((c) => [c.practitioner, c.role])];
  const patients: PatientResource[] = [];
  const encounters: EncounterResource[] = [];
  for (const profile of profiles(random)) {
    const history = new History(random, profile);
    resources.push(...history.records);
    patients.push(history.patient);
    encounters.push(...history.encounters);
  }
  return { resources: structuredClone(resources), patients, encounters };
}

interface Visit {
  readonly encounter: WithId<Encounter>;
  readonly start: Date;
  readonly kind: (typeof VISIT_TYPES)[number];
  readonly clinician: Clinician;
  readonly finished: boolean;
}

/** One patient's record: built in the order a chart grows, each record referring only to records made before it. */
class History {
  readonly records: Resource[] = [];
  readonly encounters: EncounterResource[] = [];
  readonly patient: PatientResource;
  private readonly counters = new Map<string, number>();
  private readonly conditions = new Map<string, WithId<Condition>>();
  private readonly given = new Set<string>();

  constructor(
    private readonly random: SeededRandom,
    private readonly profile: Profile,
  ) {
    this.patient = this.makePatient();
    this.records.push(this.patient as WithId<Patient>);
    const age = ageAt(this.patient.birthDate!, dateOf(0));
    const visits = this.makeVisits(age);
    const first = visits[0]!;
    for (const key of profile.problems) this.makeCondition(problem(key), first);
    for (const code of profile.allergies) this.makeAllergy(allergen(code), first);
    const coverage = this.makeCoverage(age);
    for (const visit of visits) this.document(visit, age, coverage);
    this.makeCarePlan(first);
    this.makeProvenance();
  }

  private id(kind: string): string {
    const n = (this.counters.get(kind) ?? 0) + 1;
    this.counters.set(kind, n);
    return `${this.profile.key}-${kind}-${n}`;
  }

  private get subject(): Reference<Patient> {
    return { reference: `Patient/${this.profile.patient.id}`, display: displayName(this.profile.patient) };
  }

  private makePatient(): PatientResource {
    const { random } = this;
    const base = this.profile.patient;
    const place = random.pick(CITIES);
    const race = random.pick(RACES);
    const ethnicity = random.pick(ETHNICITIES);
    const phone = `617-555-${String(random.int(1000, 9999))}`;
    const given = base.name?.[0]?.given?.[0] ?? 'patient';
    return {
      ...base,
      extension: [
        { url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race', extension: [{ url: 'ombCategory', valueCoding: coding(SYSTEM.race, race.code, race.display) }, { url: 'text', valueString: race.display }] },
        { url: 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity', extension: [{ url: 'ombCategory', valueCoding: coding(SYSTEM.race, ethnicity.code, ethnicity.display) }, { url: 'text', valueString: ethnicity.display }] },
      ],
      active: true,
      telecom: [
        { system: 'phone', value: phone, use: 'home' },
        { system: 'email', value: `${given.normalize('NFD').replace(/[^A-Za-z]/g, '').toLowerCase()}.${this.profile.key.split('-').pop()!}@example.com` },
      ],
      address: [{ use: 'home', line: [`${random.int(10, 980)} ${random.pick(STREETS)}`], city: place.city, state: place.state, postalCode: place.postalCode, country: 'US' }],
      communication: [{ language: concept(SYSTEM.language, 'en-US', 'English (United States)', 'English'), preferred: true }],
      generalPractitioner: [ref(PCP.practitioner, 'Dr. Alex Rivera')],
      managingOrganization: ref(HOSPITAL, HOSPITAL.name),
    };
  }

  /** Past visits over about four years (a check-up a year, sometimes a visit between), then the demo encounters as they are. */
  private makeVisits(age: number): Visit[] {
    const { random } = this;
    const demo = DEMO_ENCOUNTERS.filter((e) => e.subject.reference === `Patient/${this.profile.patient.id}`);
    const planned: { start: Date; kind: (typeof VISIT_TYPES)[number]; id?: string; status?: string; end?: string }[] = [];
    for (let year = 4; year >= 1; year--) {
      if (year === 4 && random.chance(0.4)) continue;
      const checkup = dateOf(year * 365 - random.int(0, 120), random.int(8, 15));
      planned.push({ start: checkup, kind: VISIT_TYPES[0] });
      if (random.chance(0.5)) planned.push({ start: new Date(checkup.getTime() + random.int(30, 150) * DAY), kind: random.pick([VISIT_TYPES[1], VISIT_TYPES[2]]) });
    }
    const born = Date.parse(`${this.patient.birthDate!}T00:00:00Z`);
    const afterBirth = planned.filter((p) => p.start.getTime() > born + 14 * DAY);
    if (!afterBirth.length && !demo.length) afterBirth.push({ start: dateOf(random.int(10, 40), 10), kind: VISIT_TYPES[0] });
    let n = demo.length;
    const visits = afterBirth.map((p) => ({ ...p, id: `demo-enc-${this.profile.short}-${++n}` }));
    for (const e of demo) visits.push({ start: new Date(e.period!.start!), kind: e.status === 'in-progress' ? VISIT_TYPES[1] : VISIT_TYPES[2], id: e.id, status: e.status, ...(e.period?.end ? { end: e.period.end } : {}) });
    visits.sort((a, b) => a.start.getTime() - b.start.getTime());
    return visits.map((v) => {
      const who = age < 18 ? PEDIATRICIAN : v.kind === VISIT_TYPES[2] && this.profile.problems.includes('atrial-fibrillation') ? CARDIOLOGIST : random.chance(0.25) ? NURSE_PRACTITIONER : PCP;
      const status = v.status ?? 'finished';
      const end = v.end ?? (status === 'finished' ? iso(new Date(v.start.getTime() + 30 * 60_000)) : undefined);
      const encounter: WithId<Encounter> = {
        resourceType: 'Encounter',
        id: v.id,
        identifier: [{ system: 'http://hospital.example.org/encounter', value: v.id }],
        status: status as Encounter['status'],
        class: coding(SYSTEM.actCode, 'AMB', 'ambulatory'),
        type: [concept(SYSTEM.snomed, v.kind.snomed, v.kind.display)],
        subject: this.subject,
        participant: [{ type: [concept('http://terminology.hl7.org/CodeSystem/v3-ParticipationType', 'PPRF', 'primary performer')], individual: ref(who.practitioner, displayName(who.practitioner)) }],
        period: end ? { start: iso(v.start), end } : { start: iso(v.start) },
        location: [{ location: ref(who === CARDIOLOGIST ? MAIN_CAMPUS : CLINIC) }],
        serviceProvider: ref(HOSPITAL, HOSPITAL.name),
      };
      this.records.push(encounter);
      this.encounters.push(encounter as unknown as EncounterResource);
      return { encounter, start: v.start, kind: v.kind, clinician: who, finished: status === 'finished' };
    });
  }

  private makeCondition(p: Problem, first: Visit): void {
    const onset = new Date(first.start.getTime() - this.random.int(60, 900) * DAY);
    const born = new Date(`${this.patient.birthDate!}T00:00:00Z`);
    const start = onset < born ? first.start : onset;
    const condition: WithId<Condition> = {
      resourceType: 'Condition',
      id: this.id('condition'),
      clinicalStatus: concept(SYSTEM.conditionClinical, p.chronic ? 'active' : 'resolved', p.chronic ? 'Active' : 'Resolved'),
      verificationStatus: concept(SYSTEM.conditionVerification, 'confirmed', 'Confirmed'),
      category: [p.chronic ? concept(SYSTEM.conditionCategory, 'problem-list-item', 'Problem List Item') : concept(SYSTEM.conditionCategory, 'encounter-diagnosis', 'Encounter Diagnosis')],
      code: { coding: [coding(SYSTEM.snomed, p.snomed, p.display), coding(SYSTEM.icd10, p.icd10, p.icd10Display)], text: p.display },
      subject: this.subject,
      ...(p.chronic ? {} : { encounter: ref(first.encounter) }),
      onsetDateTime: day(start),
      ...(p.chronic ? {} : { abatementDateTime: day(new Date(first.start.getTime() + 14 * DAY)) }),
      recordedDate: day(first.start),
      recorder: ref(first.clinician.practitioner),
    };
    this.records.push(condition);
    this.conditions.set(p.key, condition);
    for (const key of p.medications) {
      const med = MEDICATIONS[key];
      const request: WithId<MedicationRequest> = {
        resourceType: 'MedicationRequest',
        id: this.id('medrx'),
        status: p.chronic ? 'active' : 'completed',
        intent: 'order',
        category: [concept(SYSTEM.medicationRequestCategory, 'community', 'Community')],
        medicationCodeableConcept: concept(SYSTEM.rxnorm, med.rxnorm, med.display),
        subject: this.subject,
        encounter: ref(first.encounter),
        authoredOn: iso(first.start),
        requester: ref(first.clinician.practitioner, displayName(first.clinician.practitioner)),
        reasonReference: [ref(condition, p.display)],
        dosageInstruction: [{ text: med.dosage, timing: { repeat: { frequency: Math.min(med.perDay, 4), period: 1, periodUnit: 'd' } } }],
        dispenseRequest: { numberOfRepeatsAllowed: p.chronic ? 3 : 0, quantity: { value: med.perDay * 30, unit: 'each', system: SYSTEM.ucum, code: '{each}' }, expectedSupplyDuration: { value: 30, unit: 'days', system: SYSTEM.ucum, code: 'd' } },
      };
      this.records.push(request);
    }
    if (p.goal) {
      const goal: WithId<Goal> = {
        resourceType: 'Goal',
        id: this.id('goal'),
        lifecycleStatus: 'active',
        achievementStatus: concept('http://terminology.hl7.org/CodeSystem/goal-achievement', 'in-progress', 'In Progress'),
        description: { text: p.goal },
        subject: this.subject,
        startDate: day(first.start),
        target: [{ dueDate: day(dateOf(-180)) }],
        expressedBy: ref(first.clinician.practitioner),
        addresses: [ref(condition, p.display)],
      };
      this.records.push(goal);
    }
    if (p.device) {
      const udi = `(01)0${String(this.random.int(1e12, 9e12))}(17)${day(dateOf(-1500)).slice(2).replace(/-/g, '')}(10)LOT${String(this.random.int(1000, 9999))}`;
      const device: WithId<Device> = {
        resourceType: 'Device',
        id: this.id('device'),
        ...(p.device.implantable ? { udiCarrier: [{ deviceIdentifier: udi.slice(4, 18), carrierHRF: udi }] } : {}),
        status: 'active',
        type: concept(SYSTEM.snomed, p.device.snomed, p.device.display),
        patient: this.subject,
        ...(p.device.implantable ? { distinctIdentifier: udi.slice(-7), manufactureDate: day(dateOf(1200)), expirationDate: day(dateOf(-1500)) } : {}),
      };
      this.records.push(device);
    }
  }

  private makeAllergy(a: Allergen, first: Visit): void {
    const allergy: WithId<AllergyIntolerance> = {
      resourceType: 'AllergyIntolerance',
      id: this.id('allergy'),
      clinicalStatus: concept(SYSTEM.allergyClinical, 'active', 'Active'),
      verificationStatus: concept(SYSTEM.allergyVerification, 'confirmed', 'Confirmed'),
      type: 'allergy',
      category: [a.category],
      criticality: a.criticality,
      code: concept(a.system, a.code, a.display),
      patient: this.subject,
      recordedDate: iso(first.start),
      recorder: ref(first.clinician.practitioner),
      reaction: [{ manifestation: [concept(SYSTEM.snomed, a.reaction[0], a.reaction[1])], severity: a.criticality === 'high' ? 'severe' : 'mild' }],
    };
    this.records.push(allergy);
  }

  /** What a visit leaves in the chart: vital signs, screenings, labs with their reports, vaccines, a procedure, a note, a claim. */
  private document(visit: Visit, ageNow: number, coverage: WithId<Coverage>): void {
    const { random } = this;
    const age = Math.max(0, ageNow - Math.round((dateOf(0).getTime() - visit.start.getTime()) / (365.25 * DAY)));
    const checkup = visit.kind === VISIT_TYPES[0];
    const findings: string[] = [];
    findings.push(...this.vitalSigns(visit, age));
    if (checkup && age >= 13) findings.push(this.smokingStatus(visit));
    if (checkup && age >= 12) findings.push(this.phq2(visit));
    if (visit.finished) {
      const panels = new Set<LabPanel['key']>();
      if (checkup && age >= 18) panels.add('bmp').add('cbc');
      for (const key of this.profile.problems) for (const panel of problem(key).labs) if (checkup || random.chance(0.5)) panels.add(panel);
      for (const key of panels) findings.push(this.labPanel(visit, LAB_PANELS[key]));
      if (checkup) this.vaccinate(visit, age);
      const procedure = PROCEDURES.filter((p) => age >= p.minAge);
      if (procedure.length && random.chance(0.35)) findings.push(this.procedure(visit, random.pick(procedure)));
    }
    this.note(visit, findings);
    if (visit.finished) this.claim(visit, coverage);
  }

  private observation(visit: Visit, category: string, code: CodeableConcept, value: Partial<Observation>): WithId<Observation> {
    const observation: WithId<Observation> = {
      resourceType: 'Observation',
      id: this.id('obs'),
      status: 'final',
      category: [concept(SYSTEM.observationCategory, category, { 'vital-signs': 'Vital Signs', laboratory: 'Laboratory', 'social-history': 'Social History', survey: 'Survey' }[category] ?? category)],
      code,
      subject: this.subject,
      encounter: ref(visit.encounter),
      effectiveDateTime: iso(new Date(visit.start.getTime() + 10 * 60_000)),
      ...(category === 'laboratory' ? {} : { performer: [ref(visit.clinician.practitioner)] }),
      ...value,
    };
    this.records.push(observation);
    return observation;
  }

  private quantity(value: number, unit: string): { value: number; unit: string; system: string; code: string } {
    return { value, unit, system: SYSTEM.ucum, code: unit };
  }

  private vitalSigns(visit: Visit, age: number): string[] {
    const { random } = this;
    const has = (key: string): boolean => this.profile.problems.includes(key);
    const male = this.patient.gender === 'male';
    const height = age >= 18 ? random.normal(male ? 176 : 163, 6) : Math.min(75 + age * 6 + random.normal(0, 4), male ? 176 : 163);
    const bmi = age >= 18 ? random.normal(has('obesity') ? 33 : 25.5, 2.2) : random.normal(17, 1.5);
    const weight = (bmi * (height / 100) ** 2);
    const systolic = Math.round(random.normal(has('hypertension') ? 142 : age < 18 ? 104 : 118, 8));
    const diastolic = Math.round(random.normal(has('hypertension') ? 90 : age < 18 ? 66 : 76, 5));
    const heartRate = Math.round(random.normal(age < 12 ? 92 : has('atrial-fibrillation') ? 96 : 72, 8));
    const vital = (loinc: string, display: string, value: number, unit: string, decimals = 0): WithId<Observation> =>
      this.observation(visit, 'vital-signs', concept(SYSTEM.loinc, loinc, display), { valueQuantity: this.quantity(round(value, decimals), unit) });
    if (age >= 3) {
      this.observation(visit, 'vital-signs', concept(SYSTEM.loinc, '85354-9', 'Blood pressure panel with all children optional', 'Blood pressure'), {
        component: [
          { code: concept(SYSTEM.loinc, '8480-6', 'Systolic blood pressure'), valueQuantity: this.quantity(systolic, 'mm[Hg]') },
          { code: concept(SYSTEM.loinc, '8462-4', 'Diastolic blood pressure'), valueQuantity: this.quantity(diastolic, 'mm[Hg]') },
        ],
      });
    }
    vital('8867-4', 'Heart rate', heartRate, '/min');
    vital('9279-1', 'Respiratory rate', random.normal(age < 12 ? 22 : 15, 2), '/min');
    vital('8310-5', 'Body temperature', random.normal(visit.kind === VISIT_TYPES[1] ? 37.6 : 36.8, 0.3), 'Cel', 1);
    vital('59408-5', 'Oxygen saturation in Arterial blood by Pulse oximetry', Math.min(100, random.normal(97.5, 1.2)), '%');
    vital('8302-2', 'Body height', height, 'cm', 1);
    vital('29463-7', 'Body weight', weight, 'kg', 1);
    vital('39156-5', 'Body mass index (BMI) [Ratio]', bmi, 'kg/m2', 1);
    return [age >= 3 ? `Blood pressure ${systolic}/${diastolic} mmHg, heart rate ${heartRate}/min.` : `Heart rate ${heartRate}/min.`, `Weight ${round(weight, 1)} kg, BMI ${round(bmi, 1)} kg/m2.`];
  }

  private smokingStatus(visit: Visit): string {
    const status = SMOKING_STATUS[this.profile.smoking]!;
    this.observation(visit, 'social-history', concept(SYSTEM.loinc, '72166-2', 'Tobacco smoking status'), { valueCodeableConcept: concept(SYSTEM.snomed, status.code, status.display) });
    return `Tobacco: ${status.display.toLowerCase()}.`;
  }

  private phq2(visit: Visit): string {
    const score = this.profile.problems.includes('depression') ? this.random.int(2, 5) : this.random.int(0, 2);
    this.observation(visit, 'survey', concept(SYSTEM.loinc, '55758-7', 'Patient Health Questionnaire 2 item (PHQ-2) total score [Reported]', 'PHQ-2 total score'), {
      valueQuantity: { value: score, unit: '{score}', system: SYSTEM.ucum, code: '{score}' },
      interpretation: [score >= 3 ? concept(SYSTEM.interpretation, 'POS', 'Positive') : concept(SYSTEM.interpretation, 'NEG', 'Negative')],
    });
    return `PHQ-2 score ${score}.`;
  }

  private labPanel(visit: Visit, panel: LabPanel): string {
    const { random } = this;
    const has = (key: string): boolean => this.profile.problems.includes(key);
    const shifted: Record<string, number> = {
      ...(has('diabetes') ? { '4548-4': 7.4, '2345-7': 150 } : {}),
      ...(has('hyperlipidemia') ? { '2093-3': 235, '18262-6': 150, '2571-8': 190 } : {}),
      ...(has('obesity') ? { '2571-8': 180, '2085-9': 42 } : {}),
    };
    const issued = new Date(visit.start.getTime() + 26 * 3_600_000);
    const results = panel.tests.map((test) => {
      const value = round(Math.max(0, random.normal(shifted[test.loinc] ?? test.mean, test.sd)), test.decimals);
      const range: ObservationReferenceRange = { ...(test.low !== undefined ? { low: this.quantity(test.low, test.unit) } : {}), high: this.quantity(test.high, test.unit) };
      const flag = value > test.high ? concept(SYSTEM.interpretation, 'H', 'High') : test.low !== undefined && value < test.low ? concept(SYSTEM.interpretation, 'L', 'Low') : concept(SYSTEM.interpretation, 'N', 'Normal');
      return this.observation(visit, 'laboratory', concept(SYSTEM.loinc, test.loinc, test.display), { valueQuantity: this.quantity(value, test.unit), interpretation: [flag], referenceRange: [range], issued: iso(issued) });
    });
    const report: WithId<DiagnosticReport> = {
      resourceType: 'DiagnosticReport',
      id: this.id('report'),
      status: 'final',
      category: [concept(SYSTEM.v20074, 'LAB', 'Laboratory')],
      code: concept(SYSTEM.loinc, panel.loinc, panel.display),
      subject: this.subject,
      encounter: ref(visit.encounter),
      effectiveDateTime: iso(new Date(visit.start.getTime() + 10 * 60_000)),
      issued: iso(issued),
      performer: [ref(HOSPITAL, HOSPITAL.name)],
      resultsInterpreter: [ref(visit.clinician.practitioner)],
      result: results.map((r) => ref(r, (r.code.coding?.[0]?.display ?? '').split(' [')[0])),
    };
    this.records.push(report);
    const abnormal = results.filter((r) => r.interpretation?.[0]?.coding?.[0]?.code !== 'N').length;
    return `${panel.display}: ${abnormal ? `${abnormal} result(s) out of range` : 'within normal limits'}.`;
  }

  private vaccinate(visit: Visit, age: number): void {
    const due = VACCINES.filter((v) => age >= v.minAge && (v.maxAge === undefined || age <= v.maxAge) && (v.cvx === '140' || !this.given.has(v.cvx)));
    for (const vaccine of due.slice(0, 3)) {
      this.given.add(vaccine.cvx);
      const immunization: WithId<Immunization> = {
        resourceType: 'Immunization',
        id: this.id('immunization'),
        status: 'completed',
        vaccineCode: concept(SYSTEM.cvx, vaccine.cvx, vaccine.display),
        patient: this.subject,
        encounter: ref(visit.encounter),
        occurrenceDateTime: iso(new Date(visit.start.getTime() + 20 * 60_000)),
        primarySource: true,
        location: ref(CLINIC),
        lotNumber: `LOT${String(this.random.int(10000, 99999))}`,
        site: concept('http://terminology.hl7.org/CodeSystem/v3-ActSite', 'LA', 'left arm'),
        route: concept('http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration', 'IM', 'Injection, intramuscular'),
        performer: [{ actor: ref(visit.clinician.practitioner) }],
      };
      this.records.push(immunization);
    }
  }

  private procedure(visit: Visit, code: (typeof PROCEDURES)[number]): string {
    const reason = [...this.conditions.values()][0];
    const procedure: WithId<Procedure> = {
      resourceType: 'Procedure',
      id: this.id('procedure'),
      status: 'completed',
      code: concept(code.system, code.code, code.display),
      subject: this.subject,
      encounter: ref(visit.encounter),
      performedDateTime: iso(new Date(visit.start.getTime() + 15 * 60_000)),
      performer: [{ actor: ref(visit.clinician.practitioner) }],
      location: ref(visit.clinician === CARDIOLOGIST ? MAIN_CAMPUS : CLINIC),
      ...(reason ? { reasonReference: [ref(reason)] } : {}),
    };
    this.records.push(procedure);
    return `Procedure: ${code.display}.`;
  }

  private note(visit: Visit, findings: readonly string[]): void {
    const who = displayName(visit.clinician.practitioner);
    const problems = [...this.conditions.values()].filter((c) => c.clinicalStatus?.coding?.[0]?.code === 'active').map((c) => c.code?.text);
    const text = [
      `${visit.kind.display} - ${displayName(this.profile.patient)}, ${day(visit.start)}`,
      `Clinician: ${who}`,
      '',
      `Active problems: ${problems.length ? problems.join('; ') : 'none'}.`,
      ...findings,
      '',
      visit.finished ? 'Plan: continue current medications; follow up as scheduled.' : 'Visit in progress.',
    ].join('\n');
    const document: WithId<DocumentReference> = {
      resourceType: 'DocumentReference',
      id: this.id('document'),
      identifier: [{ system: 'urn:ietf:rfc:3986', value: `urn:uuid:${uuidOf(`${this.profile.key}-${visit.encounter.id}`)}` }],
      status: 'current',
      docStatus: visit.finished ? 'final' : 'preliminary',
      type: concept(SYSTEM.loinc, '11506-3', 'Progress note'),
      category: [concept(SYSTEM.usCoreDocumentCategory, 'clinical-note', 'Clinical Note')],
      subject: this.subject,
      date: iso(new Date(visit.start.getTime() + 25 * 60_000)),
      author: [ref(visit.clinician.practitioner, who)],
      custodian: ref(HOSPITAL, HOSPITAL.name),
      content: [{ attachment: { contentType: 'text/plain; charset=utf-8', language: 'en-US', data: Buffer.from(text, 'utf8').toString('base64'), title: `${visit.kind.display} note` }, format: coding('http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode', 'urn:ihe:iti:xds:2017:mimeTypeSufficient', 'mimeType Sufficient') }],
      context: { encounter: [ref(visit.encounter)], period: visit.encounter.period! },
    };
    this.records.push(document);
  }

  private makeCoverage(age: number): WithId<Coverage> {
    const type = age >= 65 ? { code: '1', display: 'MEDICARE' } : age < 18 && this.random.chance(0.5) ? { code: '2', display: 'MEDICAID' } : { code: '5', display: 'PRIVATE HEALTH INSURANCE' };
    const coverage: WithId<Coverage> = {
      resourceType: 'Coverage',
      id: this.id('coverage'),
      identifier: [{ type: concept(SYSTEM.v20203, 'MB', 'Member Number'), system: 'https://bluewater.example.org/member', value: `BW${String(this.random.int(10_000_000, 99_999_999))}` }],
      status: 'active',
      type: concept(SYSTEM.payerType, type.code, type.display),
      subscriberId: `BW${String(this.random.int(10_000_000, 99_999_999))}`,
      beneficiary: this.subject,
      relationship: concept(SYSTEM.subscriberRelationship, 'self', 'Self'),
      period: { start: `${PACK_DATE.slice(0, 4)}-01-01`, end: `${PACK_DATE.slice(0, 4)}-12-31` },
      payor: [ref(PAYER, PAYER.name)],
      class: [
        { type: concept(SYSTEM.coverageClass, 'group', 'Group'), value: 'RGH-2026', name: 'Riverside General employees and families' },
        { type: concept(SYSTEM.coverageClass, 'plan', 'Plan'), value: type.code === '5' ? 'GOLD-PPO' : type.display, name: type.code === '5' ? 'Bluewater Gold PPO' : `Bluewater ${type.display.toLowerCase()} plan` },
      ],
    };
    this.records.push(coverage);
    return coverage;
  }

  private claim(visit: Visit, coverage: WithId<Coverage>): void {
    const charge = visit.kind.charge;
    const paid = round(charge * 0.8, 2);
    const money = (value: number): { value: number; currency: 'USD' } => ({ value, currency: 'USD' });
    const eob: WithId<ExplanationOfBenefit> = {
      resourceType: 'ExplanationOfBenefit',
      id: this.id('eob'),
      identifier: [{ system: 'https://bluewater.example.org/claim', value: `CLM-${visit.encounter.id}` }],
      status: 'active',
      type: concept(SYSTEM.claimType, 'professional', 'Professional'),
      use: 'claim',
      patient: this.subject,
      billablePeriod: { start: visit.encounter.period!.start!, end: visit.encounter.period!.end! },
      created: iso(new Date(visit.start.getTime() + 3 * DAY)),
      insurer: ref(PAYER, PAYER.name),
      provider: ref(visit.clinician.practitioner),
      outcome: 'complete',
      careTeam: [{ sequence: 1, provider: ref(visit.clinician.practitioner), role: concept('http://terminology.hl7.org/CodeSystem/claimcareteamrole', 'primary', 'Primary provider') }],
      insurance: [{ focal: true, coverage: ref(coverage) }],
      item: [
        {
          sequence: 1,
          careTeamSequence: [1],
          productOrService: concept(SYSTEM.cpt, visit.kind.cpt, visit.kind.cptDisplay),
          servicedDate: day(visit.start),
          locationReference: visit.encounter.location![0]!.location,
          encounter: [ref(visit.encounter)],
          net: money(charge),
          adjudication: [
            { category: concept(SYSTEM.adjudication, 'submitted', 'Submitted Amount'), amount: money(charge) },
            { category: concept(SYSTEM.adjudication, 'benefit', 'Benefit Amount'), amount: money(paid) },
          ],
        },
      ],
      total: [
        { category: concept(SYSTEM.adjudication, 'submitted', 'Submitted Amount'), amount: money(charge) },
        { category: concept(SYSTEM.adjudication, 'benefit', 'Benefit Amount'), amount: money(paid) },
      ],
      payment: { amount: money(paid), date: day(new Date(visit.start.getTime() + 21 * DAY)) },
    };
    this.records.push(eob);
  }

  private makeCarePlan(first: Visit): void {
    const member = (who: Clinician, code: string, display: string): CareTeamParticipant => ({ role: [concept(SYSTEM.snomed, code, display)], member: ref(who.practitioner, displayName(who.practitioner)), onBehalfOf: ref(HOSPITAL) });
    const adult = ageAt(this.patient.birthDate!, dateOf(0)) >= 18;
    const team: WithId<CareTeam> = {
      resourceType: 'CareTeam',
      id: this.id('careteam'),
      status: 'active',
      name: `Care team of ${displayName(this.profile.patient)}`,
      subject: this.subject,
      period: { start: day(first.start) },
      participant: [
        member(PCP, '446050000', 'Primary care physician'),
        ...(adult ? [] : [member(PEDIATRICIAN, '309326009', 'Pediatrician')]),
        ...(this.profile.problems.includes('atrial-fibrillation') ? [member(CARDIOLOGIST, '17561000', 'Cardiologist')] : []),
        member(NURSE_PRACTITIONER, '224571005', 'Nurse practitioner'),
        { role: [concept(SYSTEM.snomed, '116154003', 'Patient')], member: this.subject },
      ],
      managingOrganization: [ref(HOSPITAL, HOSPITAL.name)],
    };
    this.records.push(team);
    const chronic = [...this.conditions.entries()].filter(([key]) => problem(key).chronic).map(([, c]) => c);
    if (!chronic.length) return;
    const goals = this.records.filter((r): r is WithId<Goal> => r.resourceType === 'Goal');
    const text = `Care plan for ${chronic.map((c) => c.code?.text).join(', ')}. Goals: ${goals.map((g) => g.description.text).join('; ') || 'to be set'}.`;
    const plan: WithId<CarePlan> = {
      resourceType: 'CarePlan',
      id: this.id('careplan'),
      text: narrative(text),
      status: 'active',
      intent: 'plan',
      category: [concept(SYSTEM.usCoreCarePlanCategory, 'assess-plan', 'Assessment and Plan of Treatment')],
      title: 'Chronic care plan',
      subject: this.subject,
      period: { start: day(first.start) },
      author: ref(PCP.practitioner),
      careTeam: [ref(team)],
      addresses: chronic.map((c) => ref(c, c.code?.text)),
      goal: goals.map((g) => ref(g)),
      activity: chronic.map((c) => ({ detail: { status: 'in-progress', description: `Monitor and treat ${c.code?.text ?? ''}`.trim(), reasonReference: [ref(c)] } })),
    };
    this.records.push(plan);
  }

  private makeProvenance(): void {
    const targets = this.records.filter((r) => ['Patient', 'Condition', 'AllergyIntolerance', 'MedicationRequest', 'Immunization'].includes(r.resourceType)) as WithId<Resource>[];
    const provenance: WithId<Provenance> = {
      resourceType: 'Provenance',
      id: this.id('provenance'),
      target: targets.map((r) => ref(r)),
      recorded: `${PACK_DATE}T12:00:00Z`,
      agent: [
        { type: concept(SYSTEM.provenanceParticipant, 'author', 'Author'), who: ref(PCP.practitioner), onBehalfOf: ref(HOSPITAL) },
        { type: concept(SYSTEM.provenanceParticipant, 'transmitter', 'Transmitter'), who: ref(HOSPITAL) },
      ],
    };
    this.records.push(provenance);
  }
}

function displayName(resource: { readonly name?: readonly { readonly given?: readonly string[]; readonly family?: string; readonly prefix?: readonly string[] }[] }): string {
  const name = resource.name?.[0];
  return name ? [...(name.prefix ?? []), name.given?.[0], name.family].filter(Boolean).join(' ') : '';
}

/** A stable UUID (name-based, RFC 9562 §5.5) from a name: the pack is the same every time. */
function uuidOf(name: string): string {
  const hex = createHash('sha1').update(`sandbox-pack:${name}`).digest('hex');
  const variant = ((parseInt(hex[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-5${hex.slice(13, 16)}-${variant}${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}
