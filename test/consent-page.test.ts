import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { createLaunch } from '../src/launch/context.js';
import { testApp, TEST_ADMIN_TOKEN } from './helpers/app.js';
import { choices, decodeEntities } from './helpers/browser.js';
import { createClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { consent, exchange, login, pickEncounter, pickPatient, REDIRECT_URI, startAuthorization, title, type Authorization } from './helpers/flow.js';

/**
 * The consent page fits a screen (issue 13, item 8): health data grouped by USCDI data class, what the app
 * asked for shown and the narrower alternatives folded away by class, the decision always in view, and a
 * headline that says when user-level scopes reach more patients than the one in context. What is offered
 * and what a decision grants are unchanged: one checkbox per scope.
 */
const PUBLIC = { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] };
const EVERYTHING = 'launch openid fhirUser patient/*.rs user/*.rs offline_access';

const requestedClasses = (html: string): string[] => [...html.matchAll(/<h2 class="data-class">([^<]+)<\/h2>/g)].map((m) => decodeEntities(m[1]!));
const foldedClasses = (html: string): string[] => [...html.matchAll(/<details class="data-class">\s*<summary>([^<]+?) <span/g)].map((m) => decodeEntities(m[1]!));

describeEachDatabase('consent page', (ctx) => {
  let app: FastifyInstance;
  before(async () => {
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN });
    await createClient(app, { ...PUBLIC, client_id: 'chart', client_name: 'Chart' });
  });
  after(() => app.close());

  const ehrLaunch = async (scope: string): Promise<Authorization> => {
    const { launch } = await createLaunch(ctx.current.database.db, app.runtime.box, { patient: 'demo-amy-shaw' });
    const flow = await startAuthorization(app, { client_id: 'chart', scope, launch });
    await login(flow, 'clinician', 'clinician-demo');
    return flow;
  };

  it('patient/*.rs user/*.rs in an EHR launch: one data class shown, the alternatives folded by class, the decision after them, the headline naming other patients', async () => {
    const flow = await ehrLaunch(EVERYTHING);
    const html = flow.page.res.body;
    assert.equal(decodeEntities(title(flow.page)), "Allow Chart to access Amy V. Shaw's record and those of other patients you can access?");
    assert.deepEqual(requestedClasses(html), ['Whole record']);
    const folded = foldedClasses(html);
    assert.deepEqual(folded, [
      'Patient demographics', 'Problems and health concerns', 'Allergies and intolerances', 'Medications', 'Laboratory', 'Health status and assessments', 'Immunizations', 'Procedures',
      'Encounter information', 'Clinical notes', 'Diagnostic imaging and reports', 'Care team members', 'Goals and care plans', 'Unique device identifiers', 'Health insurance information', 'Provenance',
    ]);
    assert.match(html, /<details class="share-less">\s*<summary>Share less: choose kinds of data instead \(\d+ choices\)<\/summary>/);
    // Outside the folded details: only what was asked for.
    const unfolded = html.replace(/<details class="share-less">[\s\S]*?<\/details>\s*<\/fieldset>/, '</fieldset>');
    assert.deepEqual(choices(unfolded, 'scope').map((c) => c.value), ['patient/*.rs', 'user/*.rs', 'openid', 'fhirUser', 'launch', 'offline_access']);
    assert.ok(choices(unfolded, 'scope').every((c) => c.checked));
    assert.match(html, /<div class="actions decision">\s*<button type="submit" name="decision" value="approve" class="primary">Allow<\/button>/);
    // Every alternative is still a checkbox of the form: 2 requested + 21 common types × 2 contexts and categories.
    const all = choices(html, 'scope');
    assert.equal(all.filter((c) => !c.checked).length, all.length - 6);
    assert.ok(all.some((c) => c.value === 'user/MedicationRequest.rs') && all.some((c) => c.value === 'patient/MedicationRequest.rs'));
    await consent(flow);
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.json<{ scope: string }>().scope, 'launch openid fhirUser patient/*.rs user/*.rs offline_access', 'the defaults grant what was asked, as before');
  });

  it('narrowing in a folded class grants exactly that', async () => {
    const flow = await ehrLaunch('launch openid patient/*.rs');
    await consent(flow, { scopes: () => ['openid', 'launch', 'patient/Immunization.rs'] });
    const res = await exchange(app, flow);
    assert.equal(res.json<{ scope: string }>().scope, 'launch openid patient/Immunization.rs');
  });

  it('patient-level scopes only: the headline names the one patient; data classes follow the scopes asked for', async () => {
    const flow = await ehrLaunch('launch patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs patient/Condition.rs patient/MedicationRequest.rs');
    assert.equal(decodeEntities(title(flow.page)), "Allow Chart to access Amy V. Shaw's record?");
    assert.deepEqual(requestedClasses(flow.page.res.body), ['Problems and health concerns', 'Medications', 'Vital signs']);
  });

  it('user-level scopes without a patient: the patients the user can access; a patient user: their information', async () => {
    const clinician = await startAuthorization(app, { client_id: 'chart', scope: 'openid user/Observation.rs' });
    await login(clinician, 'clinician', 'clinician-demo');
    assert.equal(title(clinician.page), 'Allow Chart to access the records of the patients you can access?');
    const patient = await startAuthorization(app, { client_id: 'chart', scope: 'openid user/Observation.rs' });
    await login(patient, 'patient', 'patient-demo');
    assert.equal(title(patient.page), 'Allow Chart to access your information?');
    const standalone = await startAuthorization(app, { client_id: 'chart', scope: 'openid launch/patient patient/Observation.rs' });
    await login(standalone, 'clinician', 'clinician-demo');
    assert.equal(title(standalone.page), 'Allow Chart to access the record of the patient you choose?', 'the picker asks for consent too');
    // Where something comes between the choice and the consent (an encounter to pick), the consent page names the patient.
    const visit = await startAuthorization(app, { client_id: 'chart', scope: 'openid launch/patient launch/encounter patient/Observation.rs' });
    await login(visit, 'clinician', 'clinician-demo');
    assert.equal(title(visit.page), 'Choose a patient');
    await pickPatient(visit, 'demo-daniel-okafor');
    await pickEncounter(visit, 'none');
    assert.equal(decodeEntities(title(visit.page)), "Allow Chart to access Daniel Okafor's record?");
  });
});
