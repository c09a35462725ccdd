/**
 * Test patients for the gateway's upstream (the embedded FHIR server): the demo directory's patients and
 * their records, with each leak path in mind. Amy's and Daniel's records share a practitioner, so that an
 * `_include` or `_revinclude` through him reaches the other's record.
 */
export const AMY = 'demo-amy-shaw';
export const DANIEL = 'demo-daniel-okafor';
export const GRACE = 'demo-grace-miller';
export const PRACTITIONER = 'demo-practitioner';

export const CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';
export const LOINC = 'http://loinc.org';

const observation = (id: string, patient: string, category: string, code: string, extra: Record<string, unknown> = {}) => ({
  resourceType: 'Observation',
  id,
  status: 'final',
  category: [{ coding: [{ system: CATEGORY, code: category }] }],
  code: { coding: [{ system: LOINC, code }] },
  subject: { reference: `Patient/${patient}` },
  performer: [{ reference: `Practitioner/${PRACTITIONER}` }],
  ...extra,
});

export function testRecords(): Record<string, unknown>[] {
  return [
    { resourceType: 'Patient', id: AMY, name: [{ family: 'Shaw', given: ['Amy'] }], birthDate: '1987-02-20', generalPractitioner: [{ reference: `Practitioner/${PRACTITIONER}` }] },
    { resourceType: 'Patient', id: DANIEL, name: [{ family: 'Okafor', given: ['Daniel'] }], birthDate: '1955-07-04', generalPractitioner: [{ reference: `Practitioner/${PRACTITIONER}` }] },
    { resourceType: 'Patient', id: GRACE, name: [{ family: 'Miller', given: ['Grace'] }], birthDate: '2012-11-30' },
    { resourceType: 'Practitioner', id: PRACTITIONER, name: [{ family: 'Rivera', given: ['Alex'] }] },
    observation('obs-amy-lab', AMY, 'laboratory', '2345-7'),
    observation('obs-amy-vital', AMY, 'vital-signs', '8867-4'),
    observation('obs-amy-social', AMY, 'social-history', '72166-2'),
    observation('obs-daniel-lab', DANIEL, 'laboratory', '2345-7'),
    observation('obs-daniel-vital', DANIEL, 'vital-signs', '8867-4'),
    observation('obs-grace-vital', GRACE, 'vital-signs', '8867-4'),
    {
      resourceType: 'Observation',
      id: 'obs-amy-contained',
      status: 'final',
      category: [{ coding: [{ system: CATEGORY, code: 'laboratory' }] }],
      code: { coding: [{ system: LOINC, code: '2345-7' }] },
      subject: { reference: `Patient/${AMY}` },
      contained: [
        { resourceType: 'Practitioner', id: 'p1', name: [{ family: 'Contained' }] },
        { resourceType: 'Condition', id: 'c1', subject: { reference: `Patient/${DANIEL}` }, code: { text: 'contained condition' } },
      ],
    },
    { resourceType: 'Condition', id: 'cond-amy', subject: { reference: `Patient/${AMY}` }, code: { text: 'Asthma' } },
    { resourceType: 'Condition', id: 'cond-daniel', subject: { reference: `Patient/${DANIEL}` }, code: { text: 'Hypertension' } },
    { resourceType: 'Encounter', id: 'enc-amy', status: 'finished', class: { code: 'AMB' }, subject: { reference: `Patient/${AMY}` } },
    { resourceType: 'MedicationRequest', id: 'mr-daniel', status: 'active', intent: 'order', subject: { reference: `Patient/${DANIEL}` }, medicationCodeableConcept: { text: 'Lisinopril' } },
  ];
}
