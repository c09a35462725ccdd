import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';
import { decodeJwt, decodeProtectedHeader } from 'jose';

import { importDirectory } from '../src/directory/patients.js';
import { hashPassword } from '../src/security/password.js';
import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { hiddenFields } from '../bench/lib/flows.js';
import { choices, formAction, inputValue } from './helpers/browser.js';
import { createClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { callback, consent, exchange, login, pickEncounter, pickPatient, REDIRECT_URI, startAuthorization, title, tokenRequest } from './helpers/flow.js';

type Body = Record<string, unknown>;
const LAB = 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory';
const VITALS = 'http://terminology.hl7.org/CodeSystem/observation-category|vital-signs';
const PUBLIC = { redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'] };

describeEachDatabase('standalone launch', (ctx) => {
  let app: FastifyInstance;
  before(async () => {
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN });
    await createClient(app, { ...PUBLIC, client_id: 'patient-app', client_name: 'Patient App' });
    await createClient(app, { ...PUBLIC, client_id: 'limited-app', scope: 'openid fhirUser launch/patient patient/Observation.rs patient/Patient.r offline_access' });
    const db = ctx.current.database.db;
    await db.insertInto('users').values({ id: 'caregiver', username: 'caregiver', password_hash: await hashPassword('caregiver-pass'), fhir_user: 'RelatedPerson/rp-1', name: 'Casey Giver', roles: JSON.stringify(['patient']) }).execute();
    await db.insertInto('user_patients').values([{ user_id: 'caregiver', patient_id: 'demo-lucia-fernandez' }, { user_id: 'caregiver', patient_id: 'demo-grace-miller' }]).execute();
    await db.insertInto('users').values({ id: 'orphan', username: 'orphan', password_hash: await hashPassword('orphan-pass'), fhir_user: 'Person/x', name: 'No Patients', roles: JSON.stringify([]) }).execute();
  });
  after(() => app.close());

  it('capability: launch-standalone, context-standalone-patient, permission-patient, permission-v2, sso-openid-connect, client-public — a clinician picks a patient, consents, and the app gets token, context and id_token', async () => {
    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'openid fhirUser launch/patient patient/Observation.rs patient/Patient.rs offline_access' });
    await login(flow, 'clinician', 'clinician-demo');
    // The picker asks for consent on the same page: one form, the patient and the scopes, Allow or Deny.
    assert.equal(title(flow.page), 'Allow Patient App to access the record of the patient you choose?');
    assert.ok(choices(flow.page.res.body, 'scope').length > 0, 'the consent choices are on the picker');
    assert.deepEqual(Object.keys(hiddenFields(flow.page.res.body, '/consent')), ['csrf'], 'no patient sealed: it is chosen here');
    await pickPatient(flow, 'demo-henry-nguyen');
    await consent(flow);
    const { code, state, iss } = callback(flow);
    assert.equal(state, 'state-1');
    assert.equal(iss, TEST_ISSUER);
    assert.ok(code);

    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.equal(res.headers.pragma, 'no-cache');
    const body = res.json<Body>();
    assert.deepEqual(Object.keys(body).sort(), ['access_token', 'expires_in', 'id_token', 'need_patient_banner', 'patient', 'refresh_token', 'scope', 'smart_style_url', 'token_type']);
    assert.equal(body.scope, 'openid fhirUser launch/patient patient/Observation.rs patient/Patient.rs offline_access');
    assert.equal(body.patient, 'demo-henry-nguyen');
    assert.equal(body.need_patient_banner, true);
    assert.equal(body.smart_style_url, `${TEST_ISSUER}/smart-style.json`);
    assert.equal(body.token_type, 'Bearer');
    assert.equal(body.expires_in, 3600);

    const idToken = body.id_token as string;
    assert.equal(decodeProtectedHeader(idToken).alg, 'RS256');
    assert.ok(decodeProtectedHeader(idToken).kid);
    const claims = decodeJwt(idToken);
    assert.equal(claims.iss, TEST_ISSUER);
    assert.equal(claims.aud, 'patient-app');
    assert.equal(claims.sub, 'demo-clinician');
    assert.equal(claims.fhirUser, `${TEST_FHIR_BASE}/Practitioner/demo-practitioner`);

    const style = await app.inject({ method: 'GET', url: '/smart-style.json' });
    assert.equal(style.statusCode, 200);
    assert.equal(style.json<Body>().color_highlight, '#0b5cad');
  });

  it('two apps authorizing at once in one signed-in browser (two tabs) each finish with their own patient', async () => {
    const first = await startAuthorization(app, { client_id: 'patient-app', scope: 'openid fhirUser launch/patient patient/*.rs' });
    await login(first, 'clinician', 'clinician-demo');
    await pickPatient(first, 'demo-henry-nguyen');
    // The second tab starts while the first waits at its consent page. The first tab's sign-in is kept in its own
    // interaction until its decision, so the browser is not signed in yet: the second tab asks too.
    const second = await startAuthorization(app, { client_id: 'limited-app', scope: 'launch/patient patient/Observation.rs', state: 'state-2' }, { browser: first.browser });
    await login(second, 'clinician', 'clinician-demo');
    await pickPatient(second, 'demo-amy-shaw');
    assert.match(title(second.page), /^Allow limited-app to access the record of the patient you choose/);
    await consent(first);
    await consent(second);
    const [a, b] = [await exchange(app, first), await exchange(app, second)];
    assert.deepEqual([a.statusCode, b.statusCode], [200, 200], `${a.body} ${b.body}`);
    assert.deepEqual([a.json<Body>().patient, a.json<Body>().scope], ['demo-henry-nguyen', 'openid fhirUser launch/patient patient/*.rs']);
    assert.deepEqual([b.json<Body>().patient, b.json<Body>().scope], ['demo-amy-shaw', 'launch/patient patient/Observation.rs']);
    assert.equal(callback(second).state, 'state-2');
  });

  it('the sign-in goes to oidc-provider with the decision: its answer is the next page, a form shown before it cannot decide, and a denial leaves nobody signed in', async () => {
    const scope = 'openid fhirUser launch/patient patient/*.rs';
    const flow = await startAuthorization(app, { client_id: 'patient-app', scope });
    const signInPage = flow.page.res.body;
    const csrfBefore = inputValue(signInPage, 'csrf');
    const before = flow.browser.requests;
    await login(flow, 'clinician', 'clinician-demo');
    assert.equal(flow.browser.requests - before, 1, 'the picker is the answer to the sign-in, not behind a resume and a redirect');
    assert.equal(flow.page.res.statusCode, 200);
    assert.equal(title(flow.page), 'Allow Patient App to access the record of the patient you choose?');
    const page = flow.page.res.body;
    const self = formAction(page, '/consent').replace(/\/consent$/, '');

    // The sign-in form sent again (a reload of its answer, another tab): the interaction's page; nobody else signs in.
    const again = await flow.browser.send('POST', formAction(signInPage, '/login'), { csrf: csrfBefore, username: 'caregiver', password: 'caregiver-pass' });
    assert.equal(again.statusCode, 303);
    assert.equal(again.headers.location, self);
    assert.match((await flow.browser.send('GET', self)).body, /Allow Patient App to access the record of the patient you choose/);
    // A form shown before the sign-in (its CSRF token names no user) cannot decide for the user signed in since.
    const allScopes = choices(page, 'scope').filter((o) => o.checked).map((o) => o.value);
    const stale = await flow.browser.send('POST', formAction(page, '/consent'), { csrf: csrfBefore, patient: 'demo-amy-shaw', decision: 'approve', scope: allScopes });
    assert.equal(stale.statusCode, 403);
    assert.match(stale.body, /This form has expired/);
    assert.notEqual(inputValue(page, 'csrf'), csrfBefore, 'the pages after the sign-in carry a token of their own');

    // Until the decision the browser has no session: another authorization in it asks to sign in.
    const other = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/Patient.rs' }, { browser: flow.browser });
    assert.equal(title(other.page), 'Sign in');
    await pickPatient(flow, 'demo-amy-shaw');
    await consent(flow, { decision: 'deny' });
    assert.deepEqual(callback(flow), { error: 'access_denied', error_description: 'the user denied access', state: 'state-1', iss: TEST_ISSUER });
    const afterDenial = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/Patient.rs' }, { browser: flow.browser });
    assert.equal(title(afterDenial.page), 'Sign in', 'a denial signs nobody in');

    // Allowed: the id_token's auth_time is the sign-in's, not the decision's.
    // (max_age asks for auth_time in the id_token, OIDC Core §3.1.2.1.)
    const allowed = await startAuthorization(app, { client_id: 'patient-app', scope, max_age: '3600' });
    const signedInFrom = Math.floor(Date.now() / 1000);
    await login(allowed, 'clinician', 'clinician-demo');
    const signedInTo = Math.ceil(Date.now() / 1000);
    await pickPatient(allowed, 'demo-amy-shaw');
    await new Promise((resolve) => setTimeout(resolve, 1100));
    await consent(allowed);
    const token = await exchange(app, allowed);
    assert.equal(token.statusCode, 200, token.body);
    const claims = decodeJwt(token.json<Body>().id_token as string);
    assert.equal(claims.sub, 'demo-clinician');
    assert.ok(typeof claims.auth_time === 'number' && claims.auth_time >= signedInFrom && claims.auth_time <= signedInTo && claims.auth_time < claims.iat!, `auth_time ${String(claims.auth_time)}, signed in ${signedInFrom}–${signedInTo}, iat ${String(claims.iat)}`);
    // Signed in now: the next authorization goes straight to consent.
    const next = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/Patient.rs' }, { browser: allowed.browser });
    assert.match(title(next.page), /^Allow /);
  });

  it('a browser signed in as one user, asked to sign in again (prompt=login), signed in as another: oidc-provider asks to end the first session before anything is shown or decided for the second', async () => {
    const first = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/Patient.rs' });
    await login(first, 'patient', 'patient-demo');
    await consent(first);
    assert.equal((await exchange(app, first)).statusCode, 200);
    const second = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/Patient.rs', prompt: 'login' }, { browser: first.browser });
    assert.equal(title(second.page), 'Sign in');
    // The same user again: the next page is the answer, as for a browser without a session.
    const same = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/Patient.rs', prompt: 'login' }, { browser: first.browser });
    const requests = same.browser.requests;
    await login(same, 'patient', 'patient-demo');
    assert.equal(same.browser.requests - requests, 1);
    assert.match(title(same.page), /^Allow /);
    // Another user: the sign-in's answer is the resume, where oidc-provider asks to sign the first user out (a form
    // the browser sends at once), before any page is shown for the second or anything decided for them.
    const requests2 = second.browser.requests;
    await login(second, 'clinician', 'clinician-demo');
    assert.equal(second.browser.requests - requests2, 2, 'POST sign-in, the resume');
    const body = second.page.res.body;
    assert.equal(formAction(body, '/logout/confirm'), `${TEST_ISSUER}/logout/confirm`);
    assert.equal(inputValue(body, 'logout'), 'yes');
    const db = app.runtime.database.db;
    const clinicianGrants = async () => (await db.selectFrom('grant_contexts').select('grant_id').where('client_id', '=', 'patient-app').where('account_id', '=', 'demo-clinician').execute()).length;
    const grantsBefore = await clinicianGrants();
    second.page = await second.browser.go('POST', '/logout/confirm', { xsrf: inputValue(body, 'xsrf'), logout: 'yes' });
    assert.equal(title(second.page), 'Allow Patient App to access the record of the patient you choose?', 'signed out, then on as the second user');
    assert.equal(await clinicianGrants(), grantsBefore, 'nothing decided for the second user before that');
    await pickPatient(second, 'demo-henry-nguyen');
    await consent(second);
    const token = await exchange(app, second);
    assert.equal(token.statusCode, 200, token.body);
    assert.equal(token.json<Body>().patient, 'demo-henry-nguyen');
  });

  it('a patient shares their own record without a picker; a caregiver picks among the records they may act for', async () => {
    const own = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/*.rs' });
    await login(own, 'patient', 'patient-demo');
    assert.equal(title(own.page), 'Allow Patient App to access Amy V. Shaw&#39;s record?');
    await consent(own);
    assert.equal((await exchange(app, own)).json<Body>().patient, 'demo-amy-shaw');

    const care = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/*.rs' });
    await login(care, 'caregiver', 'caregiver-pass');
    assert.equal(title(care.page), 'Allow Patient App to access the record of the person you choose?');
    assert.deepEqual(choices(care.page.res.body, 'patient').map((c) => c.value), ['demo-grace-miller', 'demo-lucia-fernandez']);
    assert.ok(!care.page.res.body.includes('type="search"'), 'no directory search for a caregiver');
    const scopes = choices(care.page.res.body, 'scope').filter((o) => o.checked).map((o) => o.value);
    const consentAction = formAction(care.page.res.body, '/consent');
    for (const path of [consentAction, consentAction.replace(/\/consent$/, '/patient')]) {
      const forged = await care.browser.send('POST', path, { csrf: hiddenFields(care.page.res.body, '/consent').csrf!, patient: 'demo-henry-nguyen', decision: 'approve', scope: scopes });
      assert.equal(forged.statusCode, 400, `a record the caregiver may not act for cannot be posted (${path})`);
      assert.match(forged.body, /That patient cannot be chosen here/);
    }
    await pickPatient(care, 'demo-lucia-fernandez');
    await consent(care);
    assert.equal((await exchange(app, care)).json<Body>().patient, 'demo-lucia-fernandez');

    const none = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/*.rs' });
    await login(none, 'orphan', 'orphan-pass');
    assert.deepEqual(callback(none), { error: 'access_denied', error_description: 'the signed-in user has no patient record to share', state: 'state-1', iss: TEST_ISSUER });
  });

  it("a patient's consent form carries their record sealed to this sign-in: another record, a seal of another sign-in or none is refused, and nothing is granted", async () => {
    const scope = 'launch/patient patient/*.rs';
    const other = await startAuthorization(app, { client_id: 'patient-app', scope });
    await login(other, 'patient', 'patient-demo');
    const otherSeal = hiddenFields(other.page.res.body, '/consent');
    assert.equal(otherSeal.patient, 'demo-amy-shaw', 'the record the page was shown for');
    assert.match(otherSeal.patient_mac ?? '', /^[\w-]{43}$/);

    const flow = await startAuthorization(app, { client_id: 'patient-app', scope }, { browser: other.browser });
    await login(flow, 'patient', 'patient-demo');
    const body = flow.page.res.body;
    const fields = hiddenFields(body, '/consent');
    assert.notEqual(fields.patient_mac, otherSeal.patient_mac, 'each sign-in has its own seal');
    const send = (form: Record<string, string>) => flow.browser.send('POST', formAction(body, '/consent'), { ...form, decision: 'approve', scope: choices(body, 'scope').filter((o) => o.checked).map((o) => o.value) });
    assert.deepEqual(Object.keys(fields).sort(), ['csrf', 'patient', 'patient_mac']);
    const withoutSeal = { csrf: fields.csrf! };
    for (const form of [
      { ...fields, patient: 'demo-henry-nguyen' },
      { ...fields, patient_mac: otherSeal.patient_mac! },
      { ...withoutSeal, patient: 'demo-amy-shaw' },
      { ...withoutSeal, patient_mac: fields.patient_mac! },
    ]) {
      const res = await send(form);
      assert.equal(res.statusCode, 400, JSON.stringify(form));
      assert.match(res.body, /This form was altered/);
      assert.equal(res.headers.location, undefined);
    }
    const res = await send(fields);
    assert.equal(res.statusCode, 303);
    flow.page = await flow.browser.go('GET', res.headers.location as string);
    assert.equal((await exchange(app, flow)).json<Body>().patient, 'demo-amy-shaw');
  });

  it("a clinician's choice is sent with the decision: nothing is saved before it, a patient outside the directory or none is refused, and the picker that answers apart still seals its choice", async () => {
    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/*.rs' });
    await login(flow, 'clinician', 'clinician-demo');
    const page = flow.page.res.body;
    const scope = choices(page, 'scope').filter((o) => o.checked).map((o) => o.value);
    const decide = (fields: Record<string, string>) => flow.browser.send('POST', formAction(page, '/consent'), { ...hiddenFields(page, '/consent'), decision: 'approve', scope, ...fields });
    for (const [fields, message] of [
      [{}, /Choose the patient whose record to share, then Allow/],
      [{ patient: 'no-such-patient' }, /That patient cannot be chosen here/],
      [{ patient: 'demo-henry-nguyen', patient_mac: 'x'.repeat(43) }, /This form was altered/],
    ] as const) {
      const res = await decide(fields);
      assert.equal(res.statusCode, 400, JSON.stringify(fields));
      assert.match(res.body, message);
      assert.equal(res.headers.location, undefined);
    }
    const again = await flow.browser.send('GET', formAction(page, '/consent').replace(/\/consent$/, ''));
    assert.match(again.body, /the record of the patient you choose/, 'nothing chosen is kept before the decision');

    // The picker's own answer (…/patient: a picker page from before, or one with an encounter to ask about next)
    // shows the consent page with the choice sealed in its form; the page sent is the record granted.
    const pick = (patient: string) => flow.browser.send('POST', formAction(page, '/consent').replace(/\/consent$/, '/patient'), { ...hiddenFields(page, '/consent'), patient });
    const henry = await pick('demo-henry-nguyen');
    assert.equal(hiddenFields(henry.body, '/consent').patient, 'demo-henry-nguyen');
    const amy = await pick('demo-amy-shaw');
    assert.equal(hiddenFields(amy.body, '/consent').patient, 'demo-amy-shaw');
    const res = await flow.browser.send('POST', formAction(henry.body, '/consent'), { ...hiddenFields(henry.body, '/consent'), decision: 'approve', scope: choices(henry.body, 'scope').filter((o) => o.checked).map((o) => o.value) });
    assert.equal(res.statusCode, 303);
    flow.page = await flow.browser.go('GET', res.headers.location as string);
    assert.equal((await exchange(app, flow)).json<Body>().patient, 'demo-henry-nguyen', 'the record of the page the clinician allowed');

    const chosen = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/*.rs' }, { browser: flow.browser });
    await pickPatient(chosen, 'demo-amy-shaw');
    await consent(chosen);
    assert.equal((await exchange(app, chosen)).json<Body>().patient, 'demo-amy-shaw');
  });

  it('a patient sent where the app asked for none (no patient scope) is refused: the token names no patient', async () => {
    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'openid user/Observation.rs' });
    await login(flow, 'clinician', 'clinician-demo');
    const page = flow.page.res.body;
    assert.equal(title(flow.page), 'Allow Patient App to access the records of the patients you can access?');
    const res = await flow.browser.send('POST', formAction(page, '/consent').replace(/\/consent$/, '/patient'), { ...hiddenFields(page, '/consent'), patient: 'demo-amy-shaw' });
    assert.equal(res.statusCode, 400);
    assert.match(res.body, /That patient cannot be chosen here/);
    await consent(flow);
    const body = (await exchange(app, flow)).json<Body>();
    assert.equal(body.scope, 'openid user/Observation.rs');
    assert.equal(body.patient, undefined);
  });

  it('the picker searches the directory by name, birth date and record number', async () => {
    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'patient/Patient.rs' });
    await login(flow, 'clinician', 'clinician-demo');
    assert.equal(title(flow.page), 'Allow Patient App to access the record of the patient you choose?', 'a patient/ scope without launch/patient still brings the picker');
    // The picker asks for consent too: its Search is a button of the consent form.
    const page = flow.page.res.body;
    assert.ok(!page.includes('<form method="get"'), 'no search form of its own');
    const search = async (q: string) => {
      const res = await flow.browser.send('POST', formAction(page, '/consent'), { ...hiddenFields(page, '/consent'), q, search: '1', scope: choices(page, 'scope').filter((o) => o.checked).map((o) => o.value) });
      assert.equal(res.statusCode, 200, res.body);
      return choices(res.body, 'patient').map((c) => c.value);
    };
    assert.deepEqual(await search('okafor'), ['demo-daniel-okafor']);
    assert.deepEqual(await search('1939-01-17'), ['demo-grace-miller']);
    assert.deepEqual(await search('MRN-1006'), ['demo-samir-haddad']);
    assert.deepEqual(await search('lucía fernández'), ['demo-lucia-fernandez']);
    assert.deepEqual(await search('nobody-at-all'), []);
    assert.deepEqual(await search('%'), [], 'LIKE wildcards are searched literally');
    // A link to the picker with a search in its query still searches.
    const linked = await flow.browser.go('GET', `${formAction(page, '/consent').replace(/\/consent$/, '')}?q=okafor`);
    assert.deepEqual(choices(linked.res.body, 'patient').map((c) => c.value), ['demo-daniel-okafor']);
  });

  it('a search on the picker that asks for consent keeps the choices made; only what the page offers is taken', async () => {
    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/*.rs offline_access' });
    await login(flow, 'clinician', 'clinician-demo');
    const page = flow.page.res.body;
    const offered = choices(page, 'scope');
    assert.deepEqual(offered.filter((o) => o.checked).map((o) => o.value).sort(), ['launch/patient', 'offline_access', 'patient/*.rs']);
    assert.match(page, /<details class="share-less">/, 'the alternatives folded away');
    // Instead of everything: Observations and Conditions only, and no offline access; Amy chosen, then a search.
    const kept = ['launch/patient', 'patient/Condition.rs', 'patient/Observation.rs'];
    const search = (q: string, fields: Record<string, string | string[]> = {}) =>
      flow.browser.send('POST', formAction(page, '/consent'), { ...hiddenFields(page, '/consent'), patient: 'demo-amy-shaw', q, search: '1', scope: kept, ...fields });
    const found = await search('okafor');
    assert.equal(found.statusCode, 200, found.body);
    assert.deepEqual(choices(found.body, 'patient'), [{ value: 'demo-daniel-okafor', checked: true }], 'the one match is chosen');
    assert.deepEqual(choices(found.body, 'scope').filter((o) => o.checked).map((o) => o.value).sort(), kept);
    assert.deepEqual(choices(found.body, 'scope').map((o) => o.value), offered.map((o) => o.value), 'the same choices, in the same order');
    assert.match(found.body, /<details class="share-less" open>/, 'the alternatives chosen are shown');
    assert.match(found.body, /<input id="q" name="q" type="search" value="okafor"/);
    const all = await search('');
    assert.equal(choices(all.body, 'patient').find((c) => c.checked)?.value, 'demo-amy-shaw', 'the patient chosen before, still listed, stays chosen');
    const none = await search('nobody-at-all');
    assert.match(none.body, /No patient matches/);
    assert.deepEqual(choices(none.body, 'scope').filter((o) => o.checked).map((o) => o.value).sort(), kept, 'no match: the choices stay');
    assert.doesNotMatch(none.body, /value="approve"/, 'nothing to allow without a patient');
    assert.match(none.body, /name="decision" value="deny"/);

    // A scope the page does not offer, a search from the consent page of a chosen record, a search with a decision.
    const forged = await search('okafor', { scope: [...kept, 'user/*.cruds'] });
    assert.equal(forged.statusCode, 400);
    assert.match(forged.body, /user\/\*\.cruds was not offered on this consent page/);
    const decided = await search('okafor', { decision: 'approve' });
    assert.equal(decided.statusCode, 400);
    assert.match(decided.body, /This form was altered/);

    // Allow from the page the search showed: the record and the scopes chosen.
    const res = await flow.browser.send('POST', formAction(found.body, '/consent'), { ...hiddenFields(found.body, '/consent'), patient: 'demo-daniel-okafor', decision: 'approve', scope: choices(found.body, 'scope').filter((o) => o.checked).map((o) => o.value) });
    assert.equal(res.statusCode, 303, res.body);
    flow.page = await flow.browser.go('GET', res.headers.location as string);
    const body = (await exchange(app, flow)).json<Body>();
    assert.equal(body.patient, 'demo-daniel-okafor');
    assert.equal(body.scope, 'launch/patient patient/Condition.rs patient/Observation.rs');
    assert.equal(body.refresh_token, undefined);

    // On the consent page of a record already chosen (no picker), Search is not a form's button.
    const chosen = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/*.rs' }, { browser: flow.browser });
    const picked = await flow.browser.send('POST', formAction(chosen.page.res.body, '/consent').replace(/\/consent$/, '/patient'), { ...hiddenFields(chosen.page.res.body, '/consent'), patient: 'demo-amy-shaw' });
    const sealed = await flow.browser.send('POST', formAction(picked.body, '/consent'), { ...hiddenFields(picked.body, '/consent'), q: 'okafor', search: '1' });
    assert.equal(sealed.statusCode, 400);
    assert.match(sealed.body, /This form was altered/);
  });

  it('capability: context-standalone-encounter — launch/encounter shows the patient’s encounters', async () => {
    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient launch/encounter patient/Encounter.rs' });
    await login(flow, 'clinician', 'clinician-demo');
    await pickPatient(flow, 'demo-amy-shaw');
    assert.equal(title(flow.page), 'Choose a visit');
    assert.deepEqual(choices(flow.page.res.body, 'encounter').map((c) => c.value), ['demo-enc-amy-2', 'demo-enc-amy-1', 'none']);
    await pickEncounter(flow, 'demo-enc-amy-1');
    await consent(flow);
    const body = (await exchange(app, flow)).json<Body>();
    assert.equal(body.patient, 'demo-amy-shaw');
    assert.equal(body.encounter, 'demo-enc-amy-1');
    assert.equal(body.scope, 'launch/patient launch/encounter patient/Encounter.rs');

    // Another patient, from the visit picker (Back would find the picker answered): the choice undone, the picker again.
    const changed = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient launch/encounter patient/Encounter.rs' });
    await login(changed, 'clinician', 'clinician-demo');
    await pickPatient(changed, 'demo-amy-shaw');
    assert.equal(title(changed.page), 'Choose a visit');
    const change = await changed.browser.send('POST', formAction(changed.page.res.body, '/patient'), { csrf: hiddenFields(changed.page.res.body, '/patient').csrf!, change: '1' });
    assert.equal(change.statusCode, 303);
    changed.page = await changed.browser.go('GET', change.headers.location as string);
    assert.equal(title(changed.page), 'Choose a patient');
    await pickPatient(changed, 'demo-daniel-okafor');
    assert.deepEqual(choices(changed.page.res.body, 'encounter').map((c) => c.value), ['demo-enc-daniel-1', 'none']);
    await pickEncounter(changed, 'demo-enc-daniel-1');
    await consent(changed);
    const daniel = (await exchange(app, changed)).json<Body>();
    assert.deepEqual([daniel.patient, daniel.encounter], ['demo-daniel-okafor', 'demo-enc-daniel-1']);

    const noVisits = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient launch/encounter patient/Encounter.rs' });
    await login(noVisits, 'clinician', 'clinician-demo');
    await pickPatient(noVisits, 'demo-samir-haddad');
    assert.match(title(noVisits.page), /^Allow /, 'no encounters: no encounter picker');
    await consent(noVisits);
    assert.equal((await exchange(app, noVisits)).json<Body>().encounter, undefined);
  });

  it('capability: permission-v1 — v1 scopes are granted in v1 and mean their v2 equivalents', async () => {
    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/Observation.read patient/Patient.read' });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    assert.equal((await exchange(app, flow)).json<Body>().scope, 'launch/patient patient/Observation.read patient/Patient.read');

    const narrowed = await startAuthorization(app, { client_id: 'limited-app', scope: 'launch/patient patient/*.read' });
    await login(narrowed, 'patient', 'patient-demo');
    await consent(narrowed);
    assert.equal((await exchange(app, narrowed)).json<Body>().scope, 'launch/patient patient/Observation.read patient/Patient.r', 'narrowed to the registration, v1 where v1 can say it');
  });

  it('the patient can uncheck resource types and offline access, and narrow Observation to categories (ONC granular scopes)', async () => {
    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'openid fhirUser launch/patient patient/Condition.rs patient/Observation.rs patient/Patient.rs offline_access' });
    await login(flow, 'patient', 'patient-demo');
    const offered = choices(flow.page.res.body, 'scope');
    assert.ok(offered.some((o) => o.value === `patient/Observation.rs?category=${LAB}` && !o.checked));
    assert.ok(offered.some((o) => o.value === 'patient/Condition.rs?category=http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item' && !o.checked));
    assert.match(flow.page.res.body, /Keep access when you are not using it/);
    await consent(flow, { scopes: () => ['openid', 'fhirUser', 'launch/patient', 'patient/Patient.rs', `patient/Observation.rs?category=${LAB}`, `patient/Observation.rs?category=${VITALS}`] });
    const body = (await exchange(app, flow)).json<Body>();
    assert.equal(body.scope, `openid fhirUser launch/patient patient/Observation.rs?category=${LAB} patient/Observation.rs?category=${VITALS} patient/Patient.rs`);
    assert.equal(body.refresh_token, undefined, 'offline_access unchecked: no refresh token');
  });

  it('a decision is made once: the consent sent again, a cancel after Allow or the page shown again go on to the resume, and one grant is made', async () => {
    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/*.rs offline_access' });
    await login(flow, 'patient', 'patient-demo');
    const page = flow.page.res.body;
    const action = formAction(page, '/consent');
    const all = choices(page, 'scope').filter((o) => o.checked).map((o) => o.value);
    const allow = await flow.browser.send('POST', action, { ...hiddenFields(page, '/consent'), decision: 'approve', scope: all });
    assert.equal(allow.statusCode, 303);
    const resume = allow.headers.location as string;
    // A replay of the form with fewer scopes, a cancel, the page again: each is sent on to the same resume.
    for (const res of [
      await flow.browser.send('POST', action, { ...hiddenFields(page, '/consent'), decision: 'approve', scope: ['launch/patient', 'patient/Observation.rs'] }),
      await flow.browser.send('POST', action.replace(/\/consent$/, '/abort'), { csrf: hiddenFields(page, '/consent').csrf! }),
      await flow.browser.send('GET', action.replace(/\/consent$/, '')),
    ]) {
      assert.equal(res.statusCode, 303);
      assert.equal(res.headers.location, resume);
    }
    flow.page = await flow.browser.go('GET', resume);
    const body = (await exchange(app, flow)).json<Body>();
    assert.equal(body.scope, 'launch/patient patient/*.rs offline_access', 'the decision made first');
    const db = app.runtime.database.db;
    const grants = await db.selectFrom('grant_contexts').select('scope').where('client_id', '=', 'patient-app').where('account_id', '=', 'demo-patient').execute();
    assert.equal(grants.filter((g) => g.scope === 'launch/patient patient/*.rs offline_access').length, 1);
    assert.ok(!grants.some((g) => g.scope === 'launch/patient patient/Observation.rs'), 'no second grant');
  });

  it('deny, cancel and approving nothing send access_denied to the app', async () => {
    const denied = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/*.rs' });
    await login(denied, 'patient', 'patient-demo');
    await consent(denied, { decision: 'deny' });
    assert.deepEqual(callback(denied), { error: 'access_denied', error_description: 'the user denied access', state: 'state-1', iss: TEST_ISSUER });

    const cancelled = await startAuthorization(app, { client_id: 'patient-app', scope: 'openid' });
    const body = cancelled.page.res.body;
    cancelled.page = await cancelled.browser.go('POST', body.match(/action="([^"]*\/abort)"/)![1]!, { csrf: body.match(/name="csrf" value="([^"]*)"/)![1]! });
    assert.deepEqual(callback(cancelled), { error: 'access_denied', error_description: 'the user cancelled the request', state: 'state-1', iss: TEST_ISSUER });

    const nothing = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/*.rs' });
    await login(nothing, 'patient', 'patient-demo');
    await consent(nothing, { scopes: () => [] });
    assert.equal(callback(nothing).error, 'access_denied');
  });

  it('consent is asked again on every authorization, even with a session and an earlier grant', async () => {
    const first = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/Patient.rs' });
    await login(first, 'patient', 'patient-demo');
    await consent(first);
    const second = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/Patient.rs' }, { browser: first.browser });
    assert.match(title(second.page), /^Allow /, 'signed in already: straight to consent, not past it');
  });

  it('capability: authorize-post — the authorization request as a form POST, without JavaScript', async () => {
    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/Patient.rs' }, { method: 'POST' });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.json<Body>().patient, 'demo-amy-shaw');
    const wrongType = await app.inject({ method: 'POST', url: '/auth', headers: { 'content-type': 'application/json' }, payload: '{}' });
    assert.equal(wrongType.statusCode, 400);
    assert.deepEqual(wrongType.json(), { error: 'invalid_request', error_description: 'an authorization request by POST must be an application/x-www-form-urlencoded form of at most 56 KiB' });
  });

  it('PKCE: required, S256 only, verifier checked', async () => {
    const missing = await startAuthorization(app, { client_id: 'patient-app', scope: 'openid', code_challenge: '', code_challenge_method: '' });
    assert.deepEqual(callback(missing), { error: 'invalid_request', error_description: 'Authorization Server policy requires PKCE to be used for this request', state: 'state-1', iss: TEST_ISSUER });
    const plain = await startAuthorization(app, { client_id: 'patient-app', scope: 'openid', code_challenge_method: 'plain' });
    assert.deepEqual(callback(plain), { error: 'invalid_request', error_description: 'not supported value of code_challenge_method', state: 'state-1', iss: TEST_ISSUER });

    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/Patient.rs' });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    for (const code_verifier of ['', 'wrong-verifier-wrong-verifier-wrong-verifier-x']) {
      const res = await exchange(app, flow, { code_verifier });
      assert.ok([400, 401].includes(res.statusCode), res.body);
      assert.match(res.json<Body>().error as string, /^invalid_(grant|request)$/);
    }
  });

  it('redirect_uri: required in the authorization request and in the code exchange, though the app registered only one (SMART App Launch 2.2)', async () => {
    // The app registered one redirect URI; oidc-provider would otherwise fill it in where it is left out.
    const omitted = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/Patient.rs', redirect_uri: '' });
    assert.equal(omitted.page.location, undefined, 'no redirect to a URI the request did not name');
    assert.equal(omitted.page.res.statusCode, 400);
    assert.match(omitted.page.res.body, /missing required parameter &#39;redirect_uri&#39;|missing required parameter 'redirect_uri'/);

    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/Patient.rs' });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    const { code } = callback(flow);
    const without = await tokenRequest(app, { grant_type: 'authorization_code', code: code!, client_id: 'patient-app', code_verifier: flow.verifier });
    assert.equal(without.statusCode, 400);
    assert.deepEqual(without.json(), { error: 'invalid_request', error_description: "missing required parameter 'redirect_uri'" });
    const elsewhere = await exchange(app, flow, { redirect_uri: 'https://app.example/other' });
    assert.deepEqual([elsewhere.statusCode, elsewhere.json<Body>().error], [400, 'invalid_grant']);
    // Refused exchanges leave the code as it was: the exchange as SMART has it succeeds.
    const res = await exchange(app, flow);
    assert.equal(res.statusCode, 200, res.body);
  });

  it('codes are single use; reusing one revokes the tokens it issued', async () => {
    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'launch/patient patient/Patient.rs offline_access' });
    await login(flow, 'patient', 'patient-demo');
    await consent(flow);
    const first = await exchange(app, flow);
    assert.equal(first.statusCode, 200);
    const again = await exchange(app, flow);
    assert.equal(again.statusCode, 400);
    assert.equal(again.json<Body>().error, 'invalid_grant');
    const refresh = await app.inject({ method: 'POST', url: '/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: first.json<Body>().refresh_token as string, client_id: 'patient-app' }).toString() });
    assert.equal(refresh.statusCode, 400, 'the refresh token of the reused code is revoked');
    const bogus = await exchange(app, flow, { code: 'not-a-code' });
    assert.equal(bogus.statusCode, 400);
    assert.equal(bogus.json<Body>().error, 'invalid_grant');
  });

  it('sign-in: wrong passwords back off after five tries, counted in the database', async () => {
    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'openid' });
    for (let i = 0; i < 5; i++) {
      await login(flow, 'caregiver', 'wrong');
      assert.equal(flow.page.res.statusCode, 401);
      assert.match(flow.page.res.body, /Wrong user name or password\./);
    }
    await login(flow, 'caregiver', 'caregiver-pass');
    assert.equal(flow.page.res.statusCode, 429, 'locked even with the right password');
    assert.match(flow.page.res.body, /Too many failed attempts\. Try again in 1 minute\(s\)\./);
    assert.ok(Number(flow.page.res.headers['retry-after']) > 0);
    const row = await ctx.current.database.db.selectFrom('login_throttle').select(['hits', 'next_at']).where('kind', '=', 'account').executeTakeFirstOrThrow();
    assert.equal(row.hits, 5);
    assert.ok(row.next_at.getTime() > Date.now());
    await ctx.current.database.db.deleteFrom('login_throttle').execute();

    const unknown = await login(flow, 'no-such-user', 'x');
    assert.equal(unknown.res.statusCode, 401);
    assert.match(unknown.res.body, /Wrong user name or password\./, 'unknown users look like wrong passwords');
  });

  it('forms need their CSRF token; an interaction from another browser is refused with a page', async () => {
    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'openid' });
    const action = flow.page.res.body.match(/action="([^"]*\/login)"/)![1]!;
    const forged = await flow.browser.send('POST', action, { csrf: 'forged', username: 'patient', password: 'patient-demo' });
    assert.equal(forged.statusCode, 403);
    assert.match(forged.body, /This form has expired/);

    flow.browser.clearCookies();
    const stale = await flow.browser.send('GET', action.replace(/\/login$/, ''));
    assert.equal(stale.statusCode, 400);
    assert.match(stale.body, /This sign-in has expired, or was started in another browser/);
  });

  it('an app suspended or removed while someone signs in: a page saying so, never a server error', async () => {
    for (const [change, id] of [['suspend', 'short-lived-1'], ['delete', 'short-lived-2']] as const) {
      await createClient(app, { client_id: id, redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'] });
      const flow = await startAuthorization(app, { client_id: id, scope: 'openid launch/patient patient/Patient.rs' });
      await login(flow, 'clinician', 'clinician-demo');
      assert.match(title(flow.page), /the record of the patient you choose/);
      const db = ctx.current.database.db;
      if (change === 'suspend') await db.updateTable('clients').set({ status: 'suspended' }).where('client_id', '=', id).execute();
      else await db.deleteFrom('clients').where('client_id', '=', id).execute();
      app.runtime.clients.invalidate(id);
      const page = await flow.browser.go('GET', formAction(flow.page.res.body, '/consent').replace(/\/consent$/, ''));
      assert.equal(page.res.statusCode, 400, change);
      assert.match(page.res.body, /This app is no longer available here/, change);
    }
  });

  it('the resume endpoint ignores a query string: a stale or foreign one is a page, never a server error', async () => {
    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'openid' });
    for (const url of ['/auth/not-this-one?client_id=patient-app&state=x', '/auth/not-this-one?client_id=urn%3Asmart-auth%3Aaccount']) {
      const res = await flow.browser.send('GET', url);
      assert.equal(res.statusCode, 400, url);
      assert.match(res.body, /<!doctype html>/);
    }
  });

  it('pages: no caching, no framing, escaped output, labelled fields', async () => {
    const flow = await startAuthorization(app, { client_id: 'patient-app', scope: 'openid' });
    const { res } = flow.page;
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.equal(res.headers['x-frame-options'], 'DENY');
    assert.match(String(res.headers['content-security-policy']), /frame-ancestors 'none'/);
    assert.ok(!/<script/i.test(res.body), 'no script at all');
    assert.match(res.body, /<label for="username">/);
    assert.match(res.body, /<label for="password">/);
    await login(flow, '<script>x</script>', 'x');
    assert.ok(!flow.page.res.body.includes('<script>x</script>'));
    assert.ok(flow.page.res.body.includes('&lt;script&gt;x&lt;/script&gt;'));
  });
});

describeEachDatabase('a large directory in the picker', (ctx) => {
  it('the first page says it shows the first 25 by name; a form\'s address asked for by GET goes back to the page', async () => {
    const app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN });
    try {
      await createClient(app, { ...PUBLIC, client_id: 'picker-app' });
      await importDirectory(ctx.current.database.db, Array.from({ length: 30 }, (_, i) => ({ resourceType: 'Patient' as const, id: `many-${i}`, name: [{ family: `Many${String(i).padStart(2, '0')}`, given: ['Pat'] }] })), []);
      const flow = await startAuthorization(app, { client_id: 'picker-app', scope: 'launch/patient patient/*.rs' });
      await login(flow, 'clinician', 'clinician-demo');
      const page = flow.page.res.body;
      assert.equal(choices(page, 'patient').length, 25);
      assert.match(page, /The first 25 by name: search to find others\./);
      const found = await flow.browser.send('POST', formAction(page, '/consent'), { ...hiddenFields(page, '/consent'), q: 'many07', search: '1' });
      assert.deepEqual(choices(found.body, 'patient').map((c) => c.value), ['many-7']);
      assert.doesNotMatch(found.body, /The first 25 by name/);

      const again = await flow.browser.send('GET', formAction(page, '/consent'));
      assert.equal(again.statusCode, 303);
      assert.equal(again.headers.location, formAction(page, '/consent').replace(/\/consent$/, ''));
      assert.equal((await flow.browser.send('GET', formAction(page, '/consent').replace(/\/consent$/, '/nonsense'))).statusCode, 404);
    } finally {
      await app.close();
    }
  });
});

describeEachDatabase('pages framed by an EHR', (ctx) => {
  it('FRAME_ANCESTORS lets the configured EHR origins frame the sign-in pages', async () => {
    const app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN, FRAME_ANCESTORS: 'https://ehr.example.org,https://portal.example.org' });
    try {
      await createClient(app, { ...PUBLIC, client_id: 'framed-app' });
      const flow = await startAuthorization(app, { client_id: 'framed-app', scope: 'openid' });
      assert.equal(flow.page.res.headers['x-frame-options'], undefined);
      assert.match(String(flow.page.res.headers['content-security-policy']), /frame-ancestors 'self' https:\/\/ehr\.example\.org https:\/\/portal\.example\.org/);
    } finally {
      await app.close();
    }
  });
});
