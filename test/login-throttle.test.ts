import assert from 'node:assert/strict';
import { after, before, beforeEach, it } from 'node:test';

import { hash, verify } from '@node-rs/argon2';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { sql } from 'kysely';

import { sourceOf } from '../src/users/login-throttle.js';
import { REFUSED_PASSWORD_FLOOR_MS } from '../src/users/sign-in.js';
import { testApp, TEST_ISSUER } from './helpers/app.js';
import { Browser, formAction, inputValue } from './helpers/browser.js';
import { createClient } from './helpers/clients.js';
import { describeEachDatabase, PREPARED_STATEMENTS } from './helpers/databases.js';
import { REDIRECT_URI, startAuthorization, title, type Authorization } from './helpers/flow.js';

const ADMIN_TOKEN = 'admin-token-for-tests-0123456789abcdef';
const CLIENT = { client_id: 'throttle-app', redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'] };
/** argon2id at parameters this server hashed with before (19 MiB, then 20 MiB; src/security/password.ts). */
const LEGACY_ARGON2 = [
  { algorithm: 2, memoryCost: 19_456, timeCost: 2, parallelism: 1 },
  { algorithm: 2, memoryCost: 20_480, timeCost: 2, parallelism: 1 },
] as const;
const SLOWED = /Too many failed attempts\. Try again in 1 minute\(s\)\./;

/** A distinct client address per number. */
const address = (n: number): string => `10.1.${Math.floor(n / 250)}.${(n % 250) + 1}`;

/** One submission of the sign-in form of `flow` from `ip`; no redirect followed. The form stays valid after failures. */
function submit(flow: Authorization, username: string, password: string, ip: string): Promise<LightMyRequestResponse> {
  const body = flow.page.res.body;
  return flow.browser.send('POST', formAction(body, '/login'), { csrf: inputValue(body, 'csrf'), username, password }, ip);
}

function tally(values: readonly unknown[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const value of values) counts[String(value)] = (counts[String(value)] ?? 0) + 1;
  return counts;
}
const statuses = (answers: readonly LightMyRequestResponse[]) => tally(answers.map((r) => r.statusCode));

/** A sign-in that passed: its answer is the next page, the consent, not the sign-in form again. */
function assertSignedIn(res: LightMyRequestResponse, message?: string): void {
  assert.equal(res.statusCode, 200, message ?? res.body.slice(0, 300));
  assert.match(res.body, /<h1[^>]*>\s*Allow /, message);
}

function assertSlowed(res: LightMyRequestResponse, maxSeconds: number): void {
  assert.equal(res.statusCode, 429, res.body);
  assert.match(res.body, SLOWED);
  const retryAfter = Number(res.headers['retry-after']);
  assert.ok(retryAfter >= 1 && retryAfter <= maxSeconds, `Retry-After ${String(res.headers['retry-after'])}`);
}

it('IPv6 clients are one source per /64; IPv4-mapped addresses are their IPv4 address', () => {
  assert.equal(sourceOf('2001:db8:1:2::1'), '2001:db8:1:2::/64');
  assert.equal(sourceOf('2001:0db8:0001:0002:ffff:eeee:dddd:cccc'), '2001:db8:1:2::/64');
  assert.equal(sourceOf('2001:db8::1'), '2001:db8:0:0::/64');
  assert.equal(sourceOf('::1'), '0:0:0:0::/64');
  assert.equal(sourceOf('fe80::1%eth0'), 'fe80:0:0:0::/64');
  assert.equal(sourceOf('::ffff:192.0.2.7'), '192.0.2.7');
  assert.equal(sourceOf('192.0.2.7'), '192.0.2.7');
});

describeEachDatabase('sign-in throttle', (ctx, kind) => {
  let app: FastifyInstance;
  const db = () => ctx.current.database.db;
  const start = (target: FastifyInstance = app, browser?: Browser, params: Record<string, string> = {}) =>
    startAuthorization(target, { client_id: CLIENT.client_id, scope: 'openid', ...params }, browser ? { browser } : {});
  /** Moves the throttle's clock forward: every due time comes `seconds` sooner. */
  const advance = (seconds: number) =>
    db()
      .updateTable('login_throttle')
      .set({ next_at: sql<Date>`next_at - ${seconds}::float8 * interval '1 second'`, expires_at: sql<Date>`expires_at - ${seconds}::float8 * interval '1 second'` })
      .execute();
  /** The login.failure events from these addresses, oldest first (the audit trail cannot be emptied between tests). */
  const failures = (ips: readonly string[]) => db().selectFrom('audit_events').select(['user_id', 'source_ip', 'details']).where('type', '=', 'login.failure').where('source_ip', 'in', ips).orderBy('seq').execute();
  /** A user `id` (also its user name) whose password hash is `passwordHash`, written straight to the table. */
  const addUser = (id: string, passwordHash: string, disabled = false) =>
    db().insertInto('users').values({ id, username: id, password_hash: passwordHash, fhir_user: `Practitioner/${id}`, name: id, roles: JSON.stringify([]), disabled }).execute();
  /** A call to the admin API with the operator's token. */
  const admin = (method: 'POST' | 'PATCH', url: string, payload: Record<string, unknown>) =>
    app.inject({ method, url: `/admin/api${url}`, headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, payload });

  before(async () => {
    app = await testApp(ctx.current.database, { SEED_DEMO: 'true', ADMIN_TOKEN });
    await createClient(app, CLIENT);
  });
  after(() => app.close());
  beforeEach(() => db().deleteFrom('login_throttle').execute());

  it('20 concurrent wrong passwords for one user name: 5 are checked, 15 refused unchecked; then even the right password waits', async () => {
    const flow = await start();
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => submit(flow, 'patient', `guess-${i}`, address(i))));
    assert.deepEqual(statuses(answers), { 401: 5, 429: 15 }, 'each 401 is one password check; a 429 ran none');
    for (const res of answers.filter((r) => r.statusCode === 429)) assertSlowed(res, 30);
    assertSlowed(await submit(flow, 'patient', 'patient-demo', address(20)), 30);
    const reasons = (await failures(Array.from({ length: 21 }, (_, i) => address(i)))).map((f) => f.details.reason);
    assert.deepEqual(tally(reasons), { invalid: 5, throttled_account: 16 });
  });

  it('one address spraying many user names: 10 wrong passwords at once, then one every 36 s; other addresses go on', async () => {
    const flow = await start();
    const sprayer = address(30);
    const answers: LightMyRequestResponse[] = [];
    for (let i = 0; i < 14; i++) answers.push(await submit(flow, ['patient', 'clinician'][i] ?? `sprayed-${i}`, 'Winter2026!', sprayer));
    assert.deepEqual(answers.map((r) => r.statusCode), [...Array<number>(10).fill(401), ...Array<number>(4).fill(429)]);
    for (const res of answers.slice(10)) assertSlowed(res, 36);
    assert.equal((await submit(flow, 'sprayed-x', 'Winter2026!', address(31))).statusCode, 401, 'another address has its own allowance');
    assertSlowed(await submit(flow, 'patient', 'patient-demo', sprayer), 36);

    await advance(36);
    assert.equal((await submit(flow, 'sprayed-20', 'Winter2026!', sprayer)).statusCode, 401, '36 s later, one more');
    assertSlowed(await submit(flow, 'sprayed-21', 'Winter2026!', sprayer), 36);
    const reasons = (await failures([sprayer])).map((f) => f.details.reason);
    assert.deepEqual(reasons, [...Array<string>(10).fill('invalid'), ...Array<string>(5).fill('throttled_source'), 'invalid', 'throttled_source']);
  });

  it('successful sign-ins do not use up an address’s allowance: many people behind one NAT share it only for their mistakes', async () => {
    const nat = address(40);
    const flow = await start();
    for (let i = 0; i < 9; i++) assert.equal((await submit(flow, `typo-${i}`, 'wrong', nat)).statusCode, 401);
    for (let i = 0; i < 5; i++) {
      const signIn = await start();
      assertSignedIn(await submit(signIn, 'clinician', 'clinician-demo', nat));
    }
    assert.equal((await submit(flow, 'typo-9', 'wrong', nat)).statusCode, 401, 'the tenth mistake');
    assertSlowed(await submit(flow, 'typo-10', 'wrong', nat), 36);
  });

  it('an unknown user name is answered exactly like a real one, before and after the budget: same status, page and headers', async () => {
    const flow = await start();
    // Same length, so that the echoed user name is the only difference in the page.
    const [real, unknown] = ['clinician', 'clinic1an'];
    const same = (a: LightMyRequestResponse, b: LightMyRequestResponse) => {
      assert.equal(a.statusCode, b.statusCode);
      assert.equal(a.body.replaceAll(real, 'NAME'), b.body.replaceAll(unknown, 'NAME'));
      const headers = (res: LightMyRequestResponse) => Object.fromEntries(Object.entries(res.headers).filter(([name]) => name !== 'date' && name !== 'x-request-id'));
      assert.deepEqual(headers(a), headers(b));
    };
    for (let i = 0; i < 5; i++) {
      const [a, b] = [await submit(flow, real, 'wrong', address(50 + i)), await submit(flow, unknown, 'wrong', address(60 + i))];
      assert.equal(a.statusCode, 401);
      same(a, b);
    }
    const [a, b] = [await submit(flow, real, 'clinician-demo', address(55)), await submit(flow, unknown, 'clinician-demo', address(65))];
    assertSlowed(a, 30);
    same(a, b);

    const rows = await failures(Array.from({ length: 16 }, (_, i) => address(50 + i)));
    assert.deepEqual(
      rows.map((r) => [r.user_id, r.details.reason]),
      [...Array.from({ length: 5 }, () => [['demo-clinician', 'invalid'], [null, 'invalid']]).flat(), ['demo-clinician', 'throttled_account'], [null, 'throttled_account']],
    );
    assert.ok(!JSON.stringify(rows).includes('clinician-demo'), 'no password in the audit trail');
  });

  it('the owner, with the device cookie of an earlier sign-in, signs in while an attacker slows the user name', async () => {
    const owner = new Browser(app, TEST_ISSUER);
    const home = address(70);
    const first = await submit(await start(app, owner), 'patient', 'patient-demo', home);
    assertSignedIn(first);
    const setCookie = ([] as string[]).concat(first.headers['set-cookie'] ?? []).find((c) => c.startsWith('smart_device='));
    assert.match(setCookie ?? '', /^smart_device=[0-9a-z]+\.[\w-]{22}\.[\w-]{43}; Path=\/interaction; Max-Age=15552000; HttpOnly; SameSite=Lax$/);
    const device = owner.cookie('smart_device');

    const attack = await start();
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => submit(attack, 'patient', `guess-${i}`, address(100 + i))));
    assert.deepEqual(statuses(answers), { 401: 5, 429: 7 });
    assertSlowed(await submit(attack, 'patient', 'patient-demo', address(120)), 30);

    // The owner's browser asked to sign in again (prompt=login, OIDC Core §3.1.2.1).
    const again = await start(app, owner, { prompt: 'login' });
    assert.equal(title(again.page), 'Sign in');
    assertSignedIn(await submit(again, 'patient', 'patient-demo', home), 'the owner signs in at once');
    assert.notEqual(owner.cookie('smart_device'), device, 'a new device token at each sign-in');
    assertSlowed(await submit(attack, 'patient', 'guess-x', address(121)), 30);
  });

  it('a device cookie counts only for its own user name, has an allowance of its own, and cannot be forged', async () => {
    const owner = new Browser(app, TEST_ISSUER);
    const home = address(80);
    assertSignedIn(await submit(await start(app, owner), 'patient', 'patient-demo', home));
    const attack = await start();
    for (let i = 0; i < 5; i++) {
      assert.equal((await submit(attack, 'clinician', `guess-${i}`, address(130 + i))).statusCode, 401);
      assert.equal((await submit(attack, 'patient', `guess-${i}`, address(140 + i))).statusCode, 401);
    }
    const flow = await start(app, owner, { prompt: 'login' });
    assertSlowed(await submit(flow, 'clinician', 'clinician-demo', home), 30);

    const forged = new Browser(app, TEST_ISSUER);
    const [issued, id, mac] = owner.cookie('smart_device')!.split('.') as [string, string, string];
    forged.setCookie('smart_device', `${issued}.${id}.${mac.slice(0, -1)}${mac.endsWith('A') ? 'B' : 'A'}`, '/interaction');
    assertSlowed(await submit(await start(app, forged), 'patient', 'patient-demo', address(150)), 30);

    for (let i = 0; i < 5; i++) assert.equal((await submit(flow, 'patient', `mistake-${i}`, home)).statusCode, 401);
    assertSlowed(await submit(flow, 'patient', 'patient-demo', home), 30);
    assert.equal((await failures([home])).at(-1)?.details.reason, 'throttled_device');
  });

  it('the limits hold across two server processes on one database', async () => {
    const other = await testApp(ctx.current.database);
    try {
      const [here, there] = [await start(), await start(other)];
      const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => submit(i % 2 ? here : there, 'clinician', `guess-${i}`, address(160 + i))));
      assert.deepEqual(statuses(answers), { 401: 5, 429: 15 });

      const sprayer = address(190);
      const sprayed: number[] = [];
      for (let i = 0; i < 12; i++) sprayed.push((await submit(i % 2 ? here : there, `sprayed-${i}`, 'wrong', sprayer)).statusCode);
      assert.deepEqual(sprayed, [...Array<number>(10).fill(401), 429, 429]);
    } finally {
      await other.close();
    }
  });

  it('a new password set by an operator lifts the slowdown on the user name', async () => {
    const created = await admin('POST', '/users', { username: 'resettable', password: 'first-password-1', fhirUser: 'Practitioner/r', name: 'Re Settable' });
    assert.equal(created.statusCode, 201, created.body);
    const flow = await start();
    for (let i = 0; i < 5; i++) assert.equal((await submit(flow, 'resettable', `guess-${i}`, address(200 + i))).statusCode, 401);
    assertSlowed(await submit(flow, 'resettable', 'first-password-1', address(205)), 30);
    const reset = await admin('POST', `/users/${created.json<{ id: string }>().id}/password`, { password: 'second-password-2' });
    assert.equal(reset.statusCode, 204);
    assertSignedIn(await submit(flow, 'resettable', 'second-password-2', address(206)));
  });

  it('a hash made with older argon2 parameters still signs in, and is made again with today’s at that sign-in', async () => {
    for (const [n, params] of LEGACY_ARGON2.entries()) {
      const name = `legacy-${n}`;
      const legacy = await hash('legacy-password-1', params);
      await addUser(name, legacy);
      const stored = async () => (await db().selectFrom('users').select(['password_hash', 'last_login_at']).where('id', '=', name).executeTakeFirstOrThrow());
      const flow = await start();
      assert.equal((await submit(flow, name, 'wrong-password', address(215 + 4 * n))).statusCode, 401);
      assert.equal((await stored()).password_hash, legacy, 'a wrong password changes nothing');

      assertSignedIn(await submit(flow, name, 'legacy-password-1', address(216 + 4 * n)));
      const renewed = await stored();
      assert.match(renewed.password_hash!, /^\$argon2id\$v=19\$m=12288,t=3,p=1\$/);
      assert.notEqual(renewed.last_login_at, null);
      assert.equal(await verify(renewed.password_hash!, 'legacy-password-1'), true);

      assertSignedIn(await submit(await start(), name, 'legacy-password-1', address(217 + 4 * n)), 'the new hash signs in');
      assert.equal((await stored()).password_hash, renewed.password_hash, 'a current hash is left as it is');
      assert.equal((await submit(await start(), name, 'legacy-password-2', address(218 + 4 * n))).statusCode, 401);
    }
  });

  it('a refused password answers no sooner than the floor, whatever the stored hash was made with, and for unknown and disabled users', async () => {
    const slow = await hash('slow-password-1', LEGACY_ARGON2[0]);
    await addUser('slow-hash', slow);
    await addUser('off-user', await hash('off-password-1'), true);
    const flow = await start();
    for (const [n, username] of ['slow-hash', 'clinician', 'no-such-user-here', 'off-user'].entries()) {
      const started = performance.now();
      const res = await submit(flow, username, 'wrong-password', address(230 + n));
      const took = performance.now() - started;
      assert.equal(res.statusCode, 401, username);
      assert.ok(took >= REFUSED_PASSWORD_FLOOR_MS, `${username}: refused after ${took.toFixed(1)} ms`);
    }
  });

  it('a right password is refused if an operator sets a new one or disables the user while it is being checked', async () => {
    // Hashed slowly on purpose (about half a second), so that the operator's change lands while argon2 runs.
    const SLOW = { algorithm: 2, memoryCost: 65_536, timeCost: 40, parallelism: 1 } as const;
    const changes = {
      'new password': (id: string) => admin('POST', `/users/${id}/password`, { password: 'operator-set-password-2' }),
      disabled: (id: string) => admin('PATCH', `/users/${id}`, { disabled: true }),
    };
    for (const [n, [change, apply]] of Object.entries(changes).entries()) {
      const id = `raced-${n}`;
      const slow = await hash('raced-password-1', SLOW);
      await addUser(id, slow);
      await db().deleteFrom('login_throttle').execute();
      const flow = await start();
      const answer = submit(flow, id, 'raced-password-1', address(240 + n));
      // The attempt is counted on the user name just before the password is checked.
      const counted = async () => (await db().selectFrom('login_throttle').select('kind').where('kind', '=', 'account').executeTakeFirst()) !== undefined;
      for (const until = Date.now() + 10_000; !(await counted()); await new Promise((r) => setTimeout(r, 2))) assert.ok(Date.now() < until, `${change}: the attempt was never counted`);
      const changed = await apply(id);
      assert.ok(changed.statusCode < 300, `${change}: ${changed.statusCode} ${changed.body}`);
      const res = await answer;
      assert.equal(res.statusCode, 401, `${change}: ${res.body.slice(0, 300)}`);
      const stored = await db().selectFrom('users').select(['password_hash', 'last_login_at']).where('id', '=', id).executeTakeFirstOrThrow();
      assert.equal(stored.last_login_at, null, change);
      if (change === 'new password') {
        assert.notEqual(stored.password_hash, slow);
        assert.equal(await verify(stored.password_hash!, 'operator-set-password-2'), true, 'the operator’s password stands: the old one’s new hash did not replace it');
      } else assert.equal(stored.password_hash, slow, 'not made again for a disabled user');
    }
  });

  it('a sign-in runs prepared statements, each parsed and planned once per connection (every one unprepared where they are off)', { skip: kind === 'pglite' ? 'statements are counted on the Postgres pool' : false }, async () => {
    const counts = app.runtime.database.statementCounts!()!;
    const measure = async (username: string, password: string, ip: string) => {
      const flow = await start();
      await app.runtime.audit.flush();
      const was = { ...counts };
      const res = await submit(flow, username, password, ip);
      await app.runtime.audit.flush();
      return { status: res.statusCode, statements: counts.statements - was.statements, unprepared: counts.unprepared - was.unprepared };
    };
    await measure('clinician', 'clinician-demo', address(219));
    // The interaction; the user by name and, beside it, the attempt counted on the source; the attempt counted on
    // the account; the throttle settled with the last sign-in; the interaction saved with the login.success
    // event. Before, the user and the throttle's statements went unnamed: 4 of 6 parsed and planned each time.
    assert.deepEqual(await measure('clinician', 'clinician-demo', address(220)), { status: 200, statements: 6, unprepared: PREPARED_STATEMENTS ? 0 : 6 });
    // The interaction; the user beside the source's count; the account's count; the login.failure event.
    assert.deepEqual(await measure('clinician', 'wrong-password', address(221)), { status: 401, statements: 5, unprepared: PREPARED_STATEMENTS ? 0 : 5 });
  });

  it('housekeeping deletes throttle rows once they are forgotten', async () => {
    const flow = await start();
    assert.equal((await submit(flow, 'patient', 'wrong', address(210))).statusCode, 401);
    const kinds = async () => (await db().selectFrom('login_throttle').select('kind').orderBy('kind').execute()).map((r) => r.kind);
    assert.deepEqual(await kinds(), ['account', 'source']);
    await app.runtime.maintenance.housekeeping();
    assert.deepEqual(await kinds(), ['account', 'source'], 'nothing forgotten yet');
    await advance(37);
    await app.runtime.maintenance.housekeeping();
    assert.deepEqual(await kinds(), ['account'], 'the source is back to its full allowance: nothing to keep');
    await advance(24 * 3600);
    await app.runtime.maintenance.housekeeping();
    assert.deepEqual(await kinds(), [], 'a day without attempts forgets the user name');
  });

  /**
   * The figures of the hardening report: instead of waiting, the throttle's clock is moved forward by each
   * Retry-After (the time an attacker would wait; the time the requests take counts too), and every 401 is
   * a password checked.
   */
  it('lets through 12 guesses in the first hour against one user name, then 4 an hour; 109 from one address, then 100 an hour', async (t) => {
    const flow = await start();
    const guessesPerHour = async (attempt: (i: number) => Promise<LightMyRequestResponse>, hours: number): Promise<number[]> => {
      const perHour = Array<number>(hours).fill(0);
      const started = performance.now();
      let skipped = 0;
      const clock = () => skipped + (performance.now() - started) / 1000;
      for (let i = 0; clock() < hours * 3600; i++) {
        const res = await attempt(i);
        if (res.statusCode === 401) {
          perHour[Math.floor(clock() / 3600)]!++;
          continue;
        }
        assert.equal(res.statusCode, 429);
        const wait = Number(res.headers['retry-after']);
        await advance(wait);
        skipped += wait;
      }
      return perHour;
    };

    const account = await guessesPerHour((i) => submit(flow, 'patient', `guess-${i}`, address(1000 + i)), 2);
    t.diagnostic(`one user name, a new address for every guess: ${account.join(', ')} guesses in hours 1, 2`);
    assert.deepEqual(account, [12, 4]);

    await db().deleteFrom('login_throttle').execute();
    const source = await guessesPerHour((i) => submit(flow, `sprayed-${i}`, 'Winter2026!', address(220)), 2);
    t.diagnostic(`one address, a new user name for every guess: ${source.join(', ')} guesses in hours 1, 2`);
    assert.deepEqual(source, [109, 100]);
  });
});
