import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import type { FastifyInstance } from 'fastify';

import { testApp, TEST_ISSUER } from './helpers/app.js';
import { Browser, inputValue } from './helpers/browser.js';
import { describeEachDatabase } from './helpers/databases.js';

/**
 * A console session ends with the decision that ended it, not at the operator's next click: a session left
 * unused while its operator is disabled, loses the role, or has their password reset must not come back; one
 * opened with ADMIN_TOKEN ends when the token is rotated or removed.
 */
const ADMIN_TOKEN = 'console-admin-token-0123456789abcdefghij';

describeEachDatabase('console sessions end with the account, the role and the password', (ctx) => {
  let app: FastifyInstance;
  const api = (method: 'POST' | 'PATCH', url: string, payload: unknown) =>
    app.inject({ method, url: `/admin/api${url}`, headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, payload: payload as string });

  before(async () => {
    app = await testApp(ctx.current.database, { ADMIN_TOKEN });
  });
  after(() => app.close());

  async function operator(id: string): Promise<Browser> {
    assert.equal((await api('POST', '/users', { id, username: id, password: 'operator-pass-1', fhirUser: 'Practitioner/op-1', name: 'Op', roles: ['admin'] })).statusCode, 201);
    const browser = new Browser(app, TEST_ISSUER);
    const csrf = inputValue((await browser.send('GET', '/admin/sign-in')).body, 'csrf');
    assert.equal((await browser.send('POST', '/admin/sign-in', { csrf, username: id, password: 'operator-pass-1' })).statusCode, 303);
    assert.equal((await browser.send('GET', '/admin/users')).statusCode, 200);
    return browser;
  }

  it('a password reset signs the operator out of the console', async () => {
    const browser = await operator('op-reset');
    assert.equal((await api('POST', '/users/op-reset/password', { password: 'another-password-2' })).statusCode, 204);
    const res = await browser.send('GET', '/admin/users');
    assert.equal(res.statusCode, 303, 'the session opened with the old password is over');
    assert.equal(res.headers.location, '/admin/sign-in');
  });

  it('a session unused while its operator was disabled does not come back when they are enabled again', async () => {
    const browser = await operator('op-disabled');
    assert.equal((await api('PATCH', '/users/op-disabled', { disabled: true })).statusCode, 200);
    assert.equal((await api('PATCH', '/users/op-disabled', { disabled: false })).statusCode, 200);
    assert.equal((await browser.send('GET', '/admin/users')).statusCode, 303);
  });

  it('a session unused while its operator had no operator role does not come back with the role', async () => {
    const browser = await operator('op-role');
    assert.equal((await api('PATCH', '/users/op-role', { roles: ['clinician'] })).statusCode, 200);
    assert.equal((await api('PATCH', '/users/op-role', { roles: ['admin'] })).statusCode, 200);
    assert.equal((await browser.send('GET', '/admin/users')).statusCode, 303);
  });

  it('a session opened with ADMIN_TOKEN ends when the server runs with another token, or none', async () => {
    const browser = new Browser(app, TEST_ISSUER);
    const csrf = inputValue((await browser.send('GET', '/admin/sign-in')).body, 'csrf');
    assert.equal((await browser.send('POST', '/admin/sign-in/token', { csrf, admin_token: ADMIN_TOKEN })).statusCode, 303);
    const cookie = browser.cookie('smart_console')!;
    const at = async (env: Record<string, string>) => {
      const other = await testApp(ctx.current.database, env);
      try {
        const copy = new Browser(other, TEST_ISSUER);
        copy.setCookie('smart_console', cookie, '/admin');
        return (await copy.send('GET', '/admin/users')).statusCode;
      } finally {
        await other.close();
      }
    };
    assert.equal(await at({ ADMIN_TOKEN }), 200, 'the same token: the session stands (another process of the same server)');
    assert.equal(await at({ ADMIN_TOKEN: 'a-rotated-admin-token-0123456789abcdef' }), 303, 'a rotated token ends it');
    assert.equal(await at({}), 303, 'no token at all ends it');
  });
});
