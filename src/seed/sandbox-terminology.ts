import type { CodeableConcept, Coding } from '@medplum/fhirtypes';

/**
 * The code systems and the codes the sandbox's synthetic records draw on: LOINC for observations and
 * documents, UCUM units, SNOMED CT and ICD-10-CM for problems and procedures, RxNorm for medications, CVX for
 * vaccines, CPT for billed services. Every code here is a real code of its system.
 */
export const SYSTEM = {
  loinc: 'http://loinc.org',
  ucum: 'http://unitsofmeasure.org',
  snomed: 'http://snomed.info/sct',
  icd10: 'http://hl7.org/fhir/sid/icd-10-cm',
  rxnorm: 'http://www.nlm.nih.gov/research/umls/rxnorm',
  cvx: 'http://hl7.org/fhir/sid/cvx',
  cpt: 'http://www.ama-assn.org/go/cpt',
  npi: 'http://hl7.org/fhir/sid/us-npi',
  observationCategory: 'http://terminology.hl7.org/CodeSystem/observation-category',
  conditionCategory: 'http://terminology.hl7.org/CodeSystem/condition-category',
  conditionClinical: 'http://terminology.hl7.org/CodeSystem/condition-clinical',
  conditionVerification: 'http://terminology.hl7.org/CodeSystem/condition-ver-status',
  allergyClinical: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical',
  allergyVerification: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-verification',
  interpretation: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation',
  actCode: 'http://terminology.hl7.org/CodeSystem/v3-ActCode',
  v20074: 'http://terminology.hl7.org/CodeSystem/v2-0074',
  v20203: 'http://terminology.hl7.org/CodeSystem/v2-0203',
  medicationRequestCategory: 'http://terminology.hl7.org/CodeSystem/medicationrequest-category',
  usCoreDocumentCategory: 'http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category',
  usCoreCarePlanCategory: 'http://hl7.org/fhir/us/core/CodeSystem/careplan-category',
  claimType: 'http://terminology.hl7.org/CodeSystem/claim-type',
  adjudication: 'http://terminology.hl7.org/CodeSystem/adjudication',
  subscriberRelationship: 'http://terminology.hl7.org/CodeSystem/subscriber-relationship',
  coverageClass: 'http://terminology.hl7.org/CodeSystem/coverage-class',
  payerType: 'https://nahdo.org/sopt',
  provenanceParticipant: 'http://terminology.hl7.org/CodeSystem/provenance-participant-type',
  providerTaxonomy: 'http://nucc.org/provider-taxonomy',
  race: 'urn:oid:2.16.840.1.113883.6.238',
  language: 'urn:ietf:bcp:47',
  mrn: 'http://hospital.example.org/mrn',
} as const;

export const concept = (system: string, code: string, display: string, text = display): CodeableConcept => ({ coding: [{ system, code, display }], text });
export const coding = (system: string, code: string, display: string): Coding => ({ system, code, display });

/** A laboratory test: LOINC code, UCUM unit, reference range and a typical result (mean and spread). */
export interface LabTest {
  readonly loinc: string;
  readonly display: string;
  readonly unit: string;
  readonly low?: number;
  readonly high: number;
  readonly mean: number;
  readonly sd: number;
  readonly decimals: number;
}

export interface LabPanel {
  readonly key: 'bmp' | 'cbc' | 'lipid' | 'a1c';
  readonly loinc: string;
  readonly display: string;
  readonly tests: readonly LabTest[];
}

export const LAB_PANELS: Readonly<Record<LabPanel['key'], LabPanel>> = {
  bmp: {
    key: 'bmp',
    loinc: '51990-0',
    display: 'Basic metabolic panel - Blood',
    tests: [
      { loinc: '2345-7', display: 'Glucose [Mass/volume] in Serum or Plasma', unit: 'mg/dL', low: 70, high: 99, mean: 95, sd: 14, decimals: 0 },
      { loinc: '3094-0', display: 'Urea nitrogen [Mass/volume] in Serum or Plasma', unit: 'mg/dL', low: 7, high: 20, mean: 14, sd: 4, decimals: 0 },
      { loinc: '2160-0', display: 'Creatinine [Mass/volume] in Serum or Plasma', unit: 'mg/dL', low: 0.6, high: 1.3, mean: 0.95, sd: 0.2, decimals: 2 },
      { loinc: '17861-6', display: 'Calcium [Mass/volume] in Serum or Plasma', unit: 'mg/dL', low: 8.6, high: 10.3, mean: 9.4, sd: 0.4, decimals: 1 },
      { loinc: '2951-2', display: 'Sodium [Moles/volume] in Serum or Plasma', unit: 'mmol/L', low: 136, high: 145, mean: 140, sd: 2, decimals: 0 },
      { loinc: '2823-3', display: 'Potassium [Moles/volume] in Serum or Plasma', unit: 'mmol/L', low: 3.5, high: 5.1, mean: 4.2, sd: 0.35, decimals: 1 },
      { loinc: '2075-0', display: 'Chloride [Moles/volume] in Serum or Plasma', unit: 'mmol/L', low: 98, high: 107, mean: 102, sd: 2, decimals: 0 },
      { loinc: '2028-9', display: 'Carbon dioxide, total [Moles/volume] in Serum or Plasma', unit: 'mmol/L', low: 22, high: 29, mean: 25, sd: 2, decimals: 0 },
    ],
  },
  cbc: {
    key: 'cbc',
    loinc: '58410-2',
    display: 'CBC panel - Blood by Automated count',
    tests: [
      { loinc: '6690-2', display: 'Leukocytes [#/volume] in Blood by Automated count', unit: '10*3/uL', low: 4.5, high: 11, mean: 7.2, sd: 1.8, decimals: 1 },
      { loinc: '789-8', display: 'Erythrocytes [#/volume] in Blood by Automated count', unit: '10*6/uL', low: 4.2, high: 5.9, mean: 4.8, sd: 0.4, decimals: 2 },
      { loinc: '718-7', display: 'Hemoglobin [Mass/volume] in Blood', unit: 'g/dL', low: 12, high: 17.5, mean: 14.2, sd: 1.3, decimals: 1 },
      { loinc: '4544-3', display: 'Hematocrit [Volume Fraction] of Blood by Automated count', unit: '%', low: 36, high: 50, mean: 42, sd: 3.5, decimals: 1 },
      { loinc: '777-3', display: 'Platelets [#/volume] in Blood by Automated count', unit: '10*3/uL', low: 150, high: 400, mean: 260, sd: 55, decimals: 0 },
    ],
  },
  lipid: {
    key: 'lipid',
    loinc: '57698-3',
    display: 'Lipid panel with direct LDL - Serum or Plasma',
    tests: [
      { loinc: '2093-3', display: 'Cholesterol [Mass/volume] in Serum or Plasma', unit: 'mg/dL', high: 200, mean: 195, sd: 30, decimals: 0 },
      { loinc: '2571-8', display: 'Triglyceride [Mass/volume] in Serum or Plasma', unit: 'mg/dL', high: 150, mean: 140, sd: 45, decimals: 0 },
      { loinc: '2085-9', display: 'Cholesterol in HDL [Mass/volume] in Serum or Plasma', unit: 'mg/dL', low: 40, high: 90, mean: 52, sd: 12, decimals: 0 },
      { loinc: '18262-6', display: 'Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay', unit: 'mg/dL', high: 100, mean: 115, sd: 28, decimals: 0 },
    ],
  },
  a1c: {
    key: 'a1c',
    loinc: '4548-4',
    display: 'Hemoglobin A1c/Hemoglobin.total in Blood',
    tests: [{ loinc: '4548-4', display: 'Hemoglobin A1c/Hemoglobin.total in Blood', unit: '%', low: 4, high: 5.6, mean: 5.4, sd: 0.4, decimals: 1 }],
  },
};

export interface Medication {
  readonly rxnorm: string;
  readonly display: string;
  readonly dosage: string;
  readonly perDay: number;
}

export const MEDICATIONS = {
  lisinopril: { rxnorm: '314076', display: 'lisinopril 10 MG Oral Tablet', dosage: 'Take 1 tablet by mouth once daily', perDay: 1 },
  amlodipine: { rxnorm: '197361', display: 'amlodipine 5 MG Oral Tablet', dosage: 'Take 1 tablet by mouth once daily', perDay: 1 },
  metformin: { rxnorm: '860975', display: '24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet', dosage: 'Take 1 tablet by mouth twice daily with meals', perDay: 2 },
  atorvastatin: { rxnorm: '259255', display: 'atorvastatin 80 MG Oral Tablet', dosage: 'Take 1 tablet by mouth at bedtime', perDay: 1 },
  albuterol: { rxnorm: '745679', display: '200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler', dosage: 'Inhale 2 puffs every 4 to 6 hours as needed for wheezing', perDay: 4 },
  sertraline: { rxnorm: '312940', display: 'sertraline 50 MG Oral Tablet', dosage: 'Take 1 tablet by mouth once daily', perDay: 1 },
  levothyroxine: { rxnorm: '966222', display: 'levothyroxine sodium 0.075 MG Oral Tablet', dosage: 'Take 1 tablet by mouth every morning before breakfast', perDay: 1 },
  warfarin: { rxnorm: '855332', display: 'warfarin sodium 5 MG Oral Tablet', dosage: 'Take 1 tablet by mouth once daily, as directed by INR', perDay: 1 },
  acetaminophen: { rxnorm: '313782', display: 'acetaminophen 325 MG Oral Tablet', dosage: 'Take 2 tablets by mouth every 6 hours as needed for pain', perDay: 4 },
  amoxicillin: { rxnorm: '308182', display: 'amoxicillin 250 MG Oral Capsule', dosage: 'Take 1 capsule by mouth three times daily for 10 days', perDay: 3 },
  hydrochlorothiazide: { rxnorm: '310798', display: 'hydrochlorothiazide 25 MG Oral Tablet', dosage: 'Take 1 tablet by mouth once daily', perDay: 1 },
} as const satisfies Record<string, Medication>;

export type MedicationKey = keyof typeof MEDICATIONS;

/** A problem: SNOMED CT and ICD-10-CM codes, the age from which it occurs, and what comes with it. */
export interface Problem {
  readonly key: string;
  readonly snomed: string;
  readonly display: string;
  readonly icd10: string;
  readonly icd10Display: string;
  readonly minAge: number;
  readonly maxAge?: number;
  /** Chronic problems stay active; others resolve. */
  readonly chronic: boolean;
  readonly medications: readonly MedicationKey[];
  readonly labs: readonly LabPanel['key'][];
  readonly goal?: string;
  readonly device?: { readonly snomed: string; readonly display: string; readonly implantable: boolean };
}

export const PROBLEMS: readonly Problem[] = [
  { key: 'hypertension', snomed: '38341003', display: 'Hypertensive disorder, systemic arterial', icd10: 'I10', icd10Display: 'Essential (primary) hypertension', minAge: 30, chronic: true, medications: ['lisinopril', 'amlodipine'], labs: ['bmp'], goal: 'Blood pressure below 130/80 mmHg' },
  { key: 'diabetes', snomed: '44054006', display: 'Diabetes mellitus type 2', icd10: 'E11.9', icd10Display: 'Type 2 diabetes mellitus without complications', minAge: 35, chronic: true, medications: ['metformin'], labs: ['a1c', 'bmp'], goal: 'Hemoglobin A1c below 7%', device: { snomed: '337414009', display: 'Blood glucose meter', implantable: false } },
  { key: 'hyperlipidemia', snomed: '55822004', display: 'Hyperlipidemia', icd10: 'E78.5', icd10Display: 'Hyperlipidemia, unspecified', minAge: 35, chronic: true, medications: ['atorvastatin'], labs: ['lipid'], goal: 'LDL cholesterol below 100 mg/dL' },
  { key: 'asthma', snomed: '195967001', display: 'Asthma', icd10: 'J45.909', icd10Display: 'Unspecified asthma, uncomplicated', minAge: 4, chronic: true, medications: ['albuterol'], labs: [], goal: 'No night-time asthma symptoms' },
  { key: 'depression', snomed: '370143000', display: 'Major depressive disorder', icd10: 'F32.9', icd10Display: 'Major depressive disorder, single episode, unspecified', minAge: 16, chronic: true, medications: ['sertraline'], labs: [], goal: 'PHQ-2 score below 3' },
  { key: 'hypothyroidism', snomed: '40930008', display: 'Hypothyroidism', icd10: 'E03.9', icd10Display: 'Hypothyroidism, unspecified', minAge: 30, chronic: true, medications: ['levothyroxine'], labs: [], goal: undefined },
  { key: 'atrial-fibrillation', snomed: '49436004', display: 'Atrial fibrillation', icd10: 'I48.91', icd10Display: 'Unspecified atrial fibrillation', minAge: 60, chronic: true, medications: ['warfarin'], labs: ['cbc'], device: { snomed: '14106009', display: 'Cardiac pacemaker', implantable: true } },
  { key: 'osteoarthritis', snomed: '239873007', display: 'Osteoarthritis of knee', icd10: 'M17.11', icd10Display: 'Unilateral primary osteoarthritis, right knee', minAge: 50, chronic: true, medications: ['acetaminophen'], labs: [], goal: 'Walk 30 minutes a day without knee pain' },
  { key: 'obesity', snomed: '162864005', display: 'Body mass index 30+ - obesity', icd10: 'E66.9', icd10Display: 'Obesity, unspecified', minAge: 18, chronic: true, medications: [], labs: ['lipid'], goal: 'Lose 5% of body weight in six months' },
  { key: 'rhinitis', snomed: '367498001', display: 'Seasonal allergic rhinitis', icd10: 'J30.2', icd10Display: 'Other seasonal allergic rhinitis', minAge: 5, chronic: true, medications: [], labs: [] },
  { key: 'otitis', snomed: '65363002', display: 'Otitis media', icd10: 'H66.90', icd10Display: 'Otitis media, unspecified, unspecified ear', minAge: 0, maxAge: 12, chronic: false, medications: ['amoxicillin'], labs: [] },
  { key: 'bronchitis', snomed: '10509002', display: 'Acute bronchitis', icd10: 'J20.9', icd10Display: 'Acute bronchitis, unspecified', minAge: 0, chronic: false, medications: ['acetaminophen'], labs: ['cbc'] },
  { key: 'migraine', snomed: '37796009', display: 'Migraine', icd10: 'G43.909', icd10Display: 'Migraine, unspecified, not intractable, without status migrainosus', minAge: 12, chronic: true, medications: ['acetaminophen'], labs: [] },
];

export interface Allergen {
  readonly system: string;
  readonly code: string;
  readonly display: string;
  readonly category: 'food' | 'medication' | 'environment';
  readonly reaction: readonly [string, string];
  readonly criticality: 'low' | 'high';
}

export const ALLERGENS: readonly Allergen[] = [
  { system: SYSTEM.rxnorm, code: '7980', display: 'penicillin G', category: 'medication', reaction: ['247472004', 'Wheal'], criticality: 'high' },
  { system: SYSTEM.rxnorm, code: '10831', display: 'sulfamethoxazole / trimethoprim', category: 'medication', reaction: ['271807003', 'Eruption of skin'], criticality: 'low' },
  { system: SYSTEM.snomed, code: '762952008', display: 'Peanut', category: 'food', reaction: ['39579001', 'Anaphylaxis'], criticality: 'high' },
  { system: SYSTEM.snomed, code: '256259004', display: 'Pollen', category: 'environment', reaction: ['76067001', 'Sneezing'], criticality: 'low' },
  { system: SYSTEM.snomed, code: '264287008', display: 'Animal dander', category: 'environment', reaction: ['267036007', 'Dyspnea'], criticality: 'low' },
  { system: SYSTEM.snomed, code: '300916003', display: 'Latex', category: 'environment', reaction: ['271807003', 'Eruption of skin'], criticality: 'high' },
];

export interface Vaccine {
  readonly cvx: string;
  readonly display: string;
  readonly minAge: number;
  readonly maxAge?: number;
}

/** CVX vaccines by the ages they are given at. */
export const VACCINES: readonly Vaccine[] = [
  { cvx: '08', display: 'Hep B, adolescent or pediatric', minAge: 0, maxAge: 1 },
  { cvx: '20', display: 'DTaP', minAge: 0, maxAge: 6 },
  { cvx: '10', display: 'IPV', minAge: 0, maxAge: 6 },
  { cvx: '03', display: 'MMR', minAge: 1, maxAge: 6 },
  { cvx: '21', display: 'varicella', minAge: 1, maxAge: 6 },
  { cvx: '165', display: 'HPV9', minAge: 11, maxAge: 26 },
  { cvx: '115', display: 'Tdap', minAge: 11 },
  { cvx: '140', display: 'Influenza, seasonal, injectable, preservative free', minAge: 0 },
  { cvx: '208', display: 'SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL dose', minAge: 12 },
  { cvx: '187', display: 'zoster vaccine recombinant', minAge: 50 },
  { cvx: '133', display: 'Pneumococcal conjugate PCV 13', minAge: 65 },
];

export interface ProcedureCode {
  readonly system: string;
  readonly code: string;
  readonly display: string;
  readonly minAge: number;
}

export const PROCEDURES: readonly ProcedureCode[] = [
  { system: SYSTEM.cpt, code: '93000', display: 'Electrocardiogram, routine ECG with at least 12 leads; with interpretation and report', minAge: 40 },
  { system: SYSTEM.cpt, code: '71046', display: 'Radiologic examination, chest; 2 views', minAge: 0 },
  { system: SYSTEM.snomed, code: '73761001', display: 'Colonoscopy', minAge: 45 },
  { system: SYSTEM.snomed, code: '171207006', display: 'Depression screening', minAge: 12 },
  { system: SYSTEM.snomed, code: '430193006', display: 'Medication reconciliation', minAge: 0 },
  { system: SYSTEM.snomed, code: '117015009', display: 'Throat culture', minAge: 0 },
];

/** Encounter types: SNOMED CT, with the CPT evaluation and management code billed for them. */
export const VISIT_TYPES = [
  { snomed: '185349003', display: 'Encounter for check up', cpt: '99396', cptDisplay: 'Periodic comprehensive preventive medicine reevaluation and management of an individual; 40-64 years', charge: 245 },
  { snomed: '185345009', display: 'Encounter for symptom', cpt: '99213', cptDisplay: 'Office or other outpatient visit for the evaluation and management of an established patient, low complexity', charge: 132 },
  { snomed: '390906007', display: 'Follow-up encounter', cpt: '99214', cptDisplay: 'Office or other outpatient visit for the evaluation and management of an established patient, moderate complexity', charge: 184 },
] as const;

export const SMOKING_STATUS = [
  { code: '266919005', display: 'Never smoked tobacco' },
  { code: '8517006', display: 'Ex-smoker' },
  { code: '449868002', display: 'Smokes tobacco daily' },
] as const;

export const GIVEN_NAMES = {
  female: ['Olivia', 'Maya', 'Sofia', 'Hannah', 'Priya', 'Chloe', 'Aaliyah', 'Mei', 'Fatima', 'Rosa', 'Evelyn', 'Nora', 'Isabel', 'Keisha', 'Ingrid'],
  male: ['James', 'Mateo', 'Ethan', 'Omar', 'Wei', 'Lucas', 'Andre', 'Kenji', 'Rahul', 'Tomas', 'Elijah', 'Arjun', 'Marcus', 'Felix', 'Diego'],
} as const;

export const FAMILY_NAMES = ['Johnson', 'Garcia', 'Patel', 'Kim', 'Brooks', 'Rossi', 'Cohen', 'Novak', 'Tanaka', 'Mensah', 'Silva', 'Walker', 'Hughes', 'Ortiz', 'Larsen', 'Chen', 'Ali', 'Murphy', 'Dubois', 'Reyes', 'Schmidt', 'Baker', 'Khan', 'Lopez'] as const;

export const CITIES = [
  { city: 'Boston', state: 'MA', postalCode: '02118' },
  { city: 'Cambridge', state: 'MA', postalCode: '02139' },
  { city: 'Somerville', state: 'MA', postalCode: '02143' },
  { city: 'Quincy', state: 'MA', postalCode: '02169' },
  { city: 'Newton', state: 'MA', postalCode: '02458' },
] as const;

export const STREETS = ['Maple Street', 'Harbor Road', 'Elm Avenue', 'Beacon Street', 'Chestnut Lane', 'Prospect Hill Road', 'Water Street', 'Summer Street'] as const;

/** OMB race categories (CDC Race & Ethnicity code system). */
export const RACES = [
  { code: '2106-3', display: 'White' },
  { code: '2054-5', display: 'Black or African American' },
  { code: '2028-9', display: 'Asian' },
  { code: '1002-5', display: 'American Indian or Alaska Native' },
  { code: '2076-8', display: 'Native Hawaiian or Other Pacific Islander' },
] as const;

export const ETHNICITIES = [
  { code: '2135-2', display: 'Hispanic or Latino' },
  { code: '2186-5', display: 'Not Hispanic or Latino' },
] as const;
