import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { startFhirServer } from '../src/fhir/server.js';
import { testApp, TEST_ADMIN_TOKEN, TEST_FHIR_BASE, TEST_ISSUER } from './helpers/app.js';
import { Browser, choices, decodeEntities, formAction, inputValue } from './helpers/browser.js';
import { createClient } from './helpers/clients.js';
import { describeEachDatabase } from './helpers/databases.js';
import { AMY, DANIEL, testRecords } from './helpers/fhir-data.js';
import { consent, exchange, login, REDIRECT_URI, startAuthorization, title } from './helpers/flow.js';
import { backendToken, NPI } from './helpers/payer.js';

interface AuditItem {
  readonly type: string;
  readonly actor_type: string;
  readonly actor_id: string | null;
  readonly patient_id: string | null;
  readonly details: Record<string, unknown>;
}

const NEW_PAYER = 'http://example.org/payer-ids|NEWPAYER';
const admin = { authorization: `Bearer ${TEST_ADMIN_TOKEN}` };
const BACKEND = { grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic', scope: 'system/Patient.rs system/Condition.rs' };
const PRIVACY = '/account/privacy';

/** The last end date the account page takes: a hundred years from today (UTC). */
const latestEnd = (): string => {
  const latest = new Date();
  latest.setUTCFullYear(latest.getUTCFullYear() + 100);
  return latest.toISOString().slice(0, 10);
};
const dayAfter = (day: string): string => new Date(Date.parse(`${day}T00:00:00Z`) + 86_400_000).toISOString().slice(0, 10);

describeEachDatabase('member privacy choices on the account pages', (ctx) => {
  let app: FastifyInstance;
  let upstream: Awaited<ReturnType<typeof startFhirServer>>;
  const secrets = new Map<string, string>();

  before(async () => {
    upstream = await startFhirServer();
    await upstream.fhir.load([
      ...testRecords(),
      { resourceType: 'Condition', id: 'cond-amy-sensitive', meta: { security: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }] }, subject: { reference: `Patient/${AMY}` }, code: { text: 'Restricted' } },
    ] as never);
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN: TEST_ADMIN_TOKEN, FHIR_UPSTREAMS: `${TEST_FHIR_BASE}=${upstream.url}` });
    secrets.set('clinic', (await createClient(app, { ...BACKEND, client_id: 'clinic', payer_role: 'provider-access', organization_identifiers: [`${NPI}|1234567893`] })).client_secret!);
    secrets.set('new-payer', (await createClient(app, { ...BACKEND, client_id: 'new-payer', payer_role: 'payer-to-payer', organization_identifiers: [NEW_PAYER] })).client_secret!);
    await createClient(app, { client_id: 'member-app', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'] });
    const group = { resourceType: 'Group', id: 'clinic', identifier: [{ system: NPI, value: '1234567893' }], member: [{ entity: { reference: `Patient/${AMY}` } }] };
    assert.equal((await app.inject({ method: 'POST', url: '/admin/api/attribution-lists', headers: { ...admin, 'content-type': 'application/fhir+json' }, payload: JSON.stringify(group) })).statusCode, 200);
    const rep = await app.inject({ method: 'POST', url: '/admin/api/users', headers: admin, payload: { id: 'rep', username: 'sam', password: 'sam-password-1', fhirUser: 'RelatedPerson/rel-1', name: 'Sam Shaw' } });
    assert.equal(rep.statusCode, 201, rep.body);
  });
  after(async () => {
    await app.close();
    await upstream.close();
  });

  const token = (clientId: string): Promise<string> => backendToken(app, clientId, secrets.get(clientId)!, BACKEND.scope);
  const status = async (clientId: string, url: string): Promise<number> => (await app.inject({ method: 'GET', url: `/fhir${url}`, headers: { authorization: `Bearer ${await token(clientId)}` } })).statusCode;

  /** A browser signed in to the account pages, on the privacy page. */
  const signedIn = async (
    username: string,
    password: string,
  ): Promise<{ browser: Browser; page: () => Promise<string>; choose: (fields: Record<string, string>) => Promise<{ status: number; body: string }>; banner: (done: string) => Promise<string | undefined> }> => {
    const browser = new Browser(app, TEST_ISSUER);
    const signIn = await browser.go('GET', '/account/apps');
    await browser.go('POST', formAction(signIn.res.body, '/login'), { csrf: inputValue(signIn.res.body, 'csrf'), username, password });
    const page = async () => {
      const res = await browser.go('GET', PRIVACY);
      assert.equal(res.res.statusCode, 200, res.res.body);
      return decodeEntities(res.res.body);
    };
    const choose = async (fields: Record<string, string>) => {
      const csrf = inputValue(await page(), 'csrf');
      const res = await browser.go('POST', PRIVACY, { csrf, ...fields });
      return { status: res.res.statusCode, body: decodeEntities(res.res.body) };
    };
    /** The banner the page shows for a `done` in its address, as a link would give it. */
    const banner = async (done: string) => {
      const res = await browser.go('GET', `${PRIVACY}?done=${encodeURIComponent(done)}`);
      assert.equal(res.res.statusCode, 200, res.res.body);
      const notice = /<p class="notice" role="status">([\s\S]*?)<\/p>/.exec(res.res.body)?.[1];
      return notice === undefined ? undefined : decodeEntities(notice);
    };
    return { browser, page, choose, banner };
  };

  it('needs a signed-in user, and a form from this page', async () => {
    const anonymous = await new Browser(app, TEST_ISSUER).go('GET', PRIVACY);
    assert.match(anonymous.res.body, /<h1 id="title">Sign in<\/h1>/);
    const { browser } = await signedIn('patient', 'patient-demo');
    const forged = await browser.send('POST', PRIVACY, { csrf: 'forged', action: 'provider-access', choice: 'opt-out' });
    assert.equal(forged.statusCode, 403);
  });

  it('shows a banner only for a choice the page shows made, never for any other word of the address', async () => {
    const { banner } = await signedIn('patient', 'patient-demo');
    for (const done of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'nonsense']) assert.equal(await banner(done), undefined, done);
    for (const done of ['opted-out', 'opted-in', 'excluded', 'shared', 'payer-opt-in', 'withdrawn', 'designated', 'revoked', 'accepted']) assert.equal(await banner(done), undefined, `${done}: no such choice made yet`);
  });

  it('the member opts out of Provider Access and back in; the provider organisation is refused and let in again at its next request', async () => {
    const { page, choose, banner } = await signedIn('patient', 'patient-demo');
    assert.match(await page(), /You have not opted out\./);
    assert.equal(await status('clinic', `/Patient/${AMY}`), 200);
    const out = await choose({ action: 'provider-access', choice: 'opt-out' });
    assert.equal(out.status, 200);
    assert.match(out.body, /Provider organisations can no longer see your information through the payer\./);
    assert.match(out.body, /You have opted out: providers cannot see your information through your plan\./);
    assert.equal(await status('clinic', `/Patient/${AMY}`), 404);
    const back = await choose({ action: 'provider-access', choice: 'opt-in' });
    assert.match(back.body, /Your providers can see your information through the payer again\./);
    assert.equal(await status('clinic', `/Patient/${AMY}`), 200);
    assert.match(back.body, /<td>Opted out of sharing with your providers<\/td><td>\d{4}-\d{2}-\d{2}<\/td><td>—<\/td><td>\d{4}-\d{2}-\d{2}<\/td><td>you<\/td>/, 'the history keeps the withdrawn opt-out');
    assert.equal(await banner('opted-out'), undefined, 'a link cannot say the member is opted out while the page says otherwise');
    assert.equal(await banner('opted-in'), 'Your providers can see your information through the payer again.');

    const bad = await choose({ action: 'provider-access', choice: 'exclude' });
    assert.equal(bad.status, 400);
    assert.match(bad.body, /choose to opt out or back in/);
  });

  it('Payer-to-Payer opt-in for one payer with an end date, then withdrawn; sensitive data withheld from it when the member says so', async () => {
    const { choose } = await signedIn('patient', 'patient-demo');
    assert.equal(await status('new-payer', `/Patient/${AMY}`), 404, 'no opt-in yet');
    const wrong = await choose({ action: 'payer-to-payer', organization: 'NEWPAYER', until: '' });
    assert.equal(wrong.status, 400);
    assert.match(wrong.body, /The payer must be written as system\|value/);
    const past = await choose({ action: 'payer-to-payer', organization: NEW_PAYER, until: '2020-01-01' });
    assert.match(past.body, /The end date is in the past\./);
    const notADay = await choose({ action: 'payer-to-payer', organization: NEW_PAYER, until: '2030-02-30' });
    assert.equal(notADay.status, 400);
    assert.match(notADay.body, /The end date is not a valid date\./);
    const farOff = await choose({ action: 'payer-to-payer', organization: NEW_PAYER, until: '9999-12-31' });
    assert.equal(farOff.status, 400);
    assert.ok(farOff.body.includes(`The end date can be at most 100 years from today: ${latestEnd()} or earlier.`), farOff.body);
    const justPast = await choose({ action: 'payer-to-payer', organization: NEW_PAYER, until: dayAfter(latestEnd()) });
    assert.equal(justPast.status, 400, 'the day after the last one allowed');

    const until = new Date(Date.now() + 30 * 86_400_000).toISOString().slice(0, 10);
    const optIn = await choose({ action: 'payer-to-payer', organization: NEW_PAYER, until });
    assert.match(optIn.body, /The payer you chose can now receive your information\./);
    assert.ok(optIn.body.includes(`${NEW_PAYER}, until ${until}`), 'listed with the last day it lasts');
    assert.equal(await status('new-payer', `/Patient/${AMY}`), 200);
    assert.equal(await status('new-payer', '/Condition/cond-amy-sensitive'), 200);

    const withheld = await choose({ action: 'sensitive', choice: 'exclude' });
    assert.match(withheld.body, /Sensitive information is now withheld from providers and other payers\./);
    assert.equal(await status('new-payer', '/Condition/cond-amy-sensitive'), 404);
    assert.equal(await status('new-payer', '/Condition/cond-amy'), 200);

    const consent = /name="action" value="withdraw">\s*<input type="hidden" name="consent" value="([^"]+)"/.exec(withheld.body)?.[1];
    assert.ok(consent, 'a withdraw button for the opt-in');
    const withdrawn = await choose({ action: 'withdraw', consent });
    assert.match(withdrawn.body, /Your choice was withdrawn\./);
    assert.equal(await status('new-payer', `/Patient/${AMY}`), 404, 'refused at the next request');
    const twice = await choose({ action: 'withdraw', consent });
    assert.equal(twice.status, 404);
    assert.match(twice.body, /That choice was already withdrawn\./);
    const unknown = await choose({ action: 'withdraw', consent: 'no-such-consent' });
    assert.equal(unknown.status, 404);
    assert.match(unknown.body, /There is no such choice of yours to withdraw\./);
    const daniel = await app.inject({ method: 'POST', url: '/admin/api/users', headers: admin, payload: { id: 'daniel', username: 'daniel', password: 'daniel-password-1', fhirUser: `Patient/${DANIEL}`, name: 'Daniel Okafor' } });
    assert.equal(daniel.statusCode, 201, daniel.body);
    const notTheirs = await (await signedIn('daniel', 'daniel-password-1')).choose({ action: 'withdraw', consent });
    assert.equal(notTheirs.status, 404);
    assert.match(notTheirs.body, /There is no such choice of yours to withdraw\./, "another member's choice is answered as one that does not exist");

    await app.runtime.audit.flush();
    const audit = await app.inject({ method: 'GET', url: `/admin/api/audit?type=member_consent.&patient=${AMY}&limit=100`, headers: admin });
    assert.deepEqual(audit.json<{ items: AuditItem[] }>().items.map((e) => [e.type, e.actor_type, e.actor_id, e.details.kind]), [
      ['member_consent.recorded', 'user', 'demo-patient', 'provider-access-opt-out'],
      ['member_consent.withdrawn', 'user', 'demo-patient', 'provider-access-opt-out'],
      ['member_consent.recorded', 'user', 'demo-patient', 'payer-to-payer-opt-in'],
      ['member_consent.recorded', 'user', 'demo-patient', 'exclude-sensitive'],
      ['member_consent.withdrawn', 'user', 'demo-patient', 'payer-to-payer-opt-in'],
    ]);
  });

  it('the member names a representative, who may act only after accepting; the member revokes and the picker stops offering the patient', async () => {
    const member = await signedIn('patient', 'patient-demo');
    const unknown = await member.choose({ action: 'designate', username: 'nobody' });
    assert.equal(unknown.status, 400);
    assert.match(unknown.body, /No person with that user name can be named as your representative\./);
    const farOff = await member.choose({ action: 'designate', username: 'sam', until: '9999-12-31' });
    assert.equal(farOff.status, 400);
    assert.ok(farOff.body.includes(`The end date can be at most 100 years from today: ${latestEnd()} or earlier.`), farOff.body);
    const clinician = await member.choose({ action: 'designate', username: 'clinician' });
    assert.match(clinician.body, /No person with that user name can be named as your representative\./, 'a clinician is refused with the same words');

    const asked = await member.choose({ action: 'designate', username: 'sam', until: latestEnd() });
    assert.match(asked.body, /We asked the person to accept\./);
    assert.ok(asked.body.includes(`Sam Shaw (waiting for them to accept, until ${latestEnd()})`), 'the last day allowed is taken');
    const again = await member.choose({ action: 'designate', username: 'sam' });
    assert.equal(again.status, 409);
    assert.match(again.body, /That person already acts for you, or was already asked to\./);

    /** The patient a launch by the representative ends with (the only one offered is taken), or none when refused. */
    const actsFor = async (): Promise<string | undefined> => {
      const flow = await startAuthorization(app, { client_id: 'member-app', scope: 'launch/patient patient/Patient.rs' });
      await login(flow, 'sam', 'sam-password-1');
      assert.deepEqual(choices(flow.page.res.body, 'patient'), [], 'never a picker: one patient at most');
      if (!title(flow.page).startsWith('Allow ')) return undefined;
      await consent(flow);
      const res = await exchange(app, flow);
      assert.equal(res.statusCode, 200, res.body);
      return res.json<{ patient?: string }>().patient;
    };
    assert.equal(await actsFor(), undefined, 'pending: not yet');

    const rep = await signedIn('sam', 'sam-password-1');
    const repPage = await rep.page();
    assert.ok(!repPage.includes('Sharing with your providers'), 'a representative has no member choices of their own');
    assert.match(repPage, /Amy V\. Shaw/);
    const notMember = await rep.choose({ action: 'provider-access', choice: 'opt-out' });
    assert.equal(notMember.status, 403);
    const pending = /name="action" value="accept">\s*<input type="hidden" name="representative" value="([^"]+)"/.exec(repPage)?.[1];
    assert.ok(pending);
    const accepted = await rep.choose({ action: 'accept', representative: pending });
    assert.match(accepted.body, /You can now act for that person\./);
    assert.equal(await actsFor(), AMY);

    const revoked = await member.choose({ action: 'revoke', representative: pending });
    assert.match(revoked.body, /That person can no longer act for you\./);
    assert.equal(await actsFor(), undefined);
  });
});
