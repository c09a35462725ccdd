import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { checkClientMetadata, checkSelfWritten, ClientRuleError, toProviderMetadata, toRfc7591Metadata, widenedProperties } from '../../src/smart/client-rules.js';

const operator = { writer: 'operator', vouched: true, allowHttpJwksUri: false } as const;
const self = { writer: 'self', vouched: false, allowHttpJwksUri: false } as const;
const app = { redirect_uris: ['https://app.example/cb'], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'], scope: 'openid launch/patient patient/*.rs' };
const refused = (metadata: Record<string, unknown>, options: Parameters<typeof checkClientMetadata>[1], message: string) =>
  assert.throws(() => checkClientMetadata(metadata, options), (e: unknown) => e instanceof ClientRuleError && e.message === message);

describe('client rules', () => {
  it('redirect URIs: https, http on loopback, private-use schemes in reverse-domain form; never a fragment', () => {
    for (const uri of ['https://app.example/cb', 'http://localhost:8080/cb', 'http://127.0.0.1/cb', 'http://[::1]:9/cb', 'com.example.app:/callback']) checkClientMetadata({ ...app, redirect_uris: [uri] }, self);
    refused({ ...app, redirect_uris: ['http://app.example/cb'] }, operator, 'redirect_uris: http://app.example/cb must use https (http only on localhost)');
    refused({ ...app, redirect_uris: ['data:text/html,x'] }, operator, 'redirect_uris: data:text/html,x must not use the data scheme');
    refused({ ...app, redirect_uris: ['https://app.example/cb#x'] }, operator, 'redirect_uris: https://app.example/cb#x must not have a fragment');
    refused({ ...app, redirect_uris: [] }, operator, 'redirect_uris: at least one is required for the authorization_code grant');
  });

  it('what only an operator may give: system/ scopes without a voucher, this server\'s own scopes ever', () => {
    const backend = { grant_types: ['client_credentials'], token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [{ kty: 'EC', kid: 'k' }] } };
    checkClientMetadata({ ...backend, scope: 'system/*.rs' }, operator);
    checkClientMetadata({ ...backend, scope: 'system/*.rs' }, { ...self, vouched: true });
    refused({ ...backend, scope: 'system/*.rs' }, self, 'scope system/*.rs: only an operator can register a client for this (admin API, or REGISTRATION_STATUS=pending for approval)');
    refused({ ...backend, scope: 'admin' }, { ...self, vouched: true }, 'scope admin: only an operator can register a client for this (admin API, or REGISTRATION_STATUS=pending for approval)');
    assert.throws(() => checkSelfWritten({ consent: 'required' }), /consent can only be set by an operator/);
    assert.throws(() => checkSelfWritten({ allowed_scope: 'x' }), /allowed_scope is not client metadata a client can set/);
  });

  it('keys and key URLs: public keys only; https URLs (http only where private addresses are allowed)', () => {
    const backend = { grant_types: ['client_credentials'], token_endpoint_auth_method: 'private_key_jwt' };
    refused({ ...backend, jwks: { keys: [{ kty: 'oct', k: 'secret' }] } }, operator, 'jwks: publish public keys only (a key holds private or symmetric material)');
    refused({ ...backend, jwks_uri: 'http://keys.example/jwks' }, operator, 'jwks_uri must be an absolute https URL');
    checkClientMetadata({ ...backend, jwks_uri: 'http://127.0.0.1:9/jwks' }, { ...operator, allowHttpJwksUri: true });
    refused({ ...backend }, operator, 'jwks or jwks_uri is required for private_key_jwt');
    refused({ grant_types: ['client_credentials'], token_endpoint_auth_method: 'none' }, operator, 'token_endpoint_auth_method: none cannot be used with client_credentials; backend services authenticate with private_key_jwt');
  });

  it('refuses text no value may hold, wherever it is', () => {
    refused({ ...app, client_name: 'a\u0000b' }, operator, 'client_name contains a NUL character or an unpaired UTF-16 surrogate, which no value here may hold');
    refused({ ...app, contacts: ['\ud800'] }, operator, 'contacts[0] contains a NUL character or an unpaired UTF-16 surrogate, which no value here may hold');
  });

  it('a change widens when it adds scopes, grants, redirect URIs, keys or changes how the client authenticates', () => {
    assert.deepEqual(widenedProperties(app, { ...app, scope: 'openid patient/Observation.rs' }), [], 'narrower scopes');
    assert.deepEqual(widenedProperties(app, { ...app, client_name: 'New name', redirect_uris: [] }), []);
    assert.deepEqual(widenedProperties(app, { ...app, scope: 'openid user/*.rs' }), ['scope']);
    assert.deepEqual(widenedProperties(app, { ...app, scope: undefined }), ['scope'], 'no scope means any patient/user scope');
    assert.deepEqual(widenedProperties(app, { ...app, grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_basic' }), ['grant_types', 'token_endpoint_auth_method']);
    assert.deepEqual(widenedProperties(app, { ...app, redirect_uris: ['https://evil.example/steal'], launch_uri: 'https://evil.example/launch' }), ['redirect_uris', 'launch_uri']);
    const keyed = { ...app, jwks: { keys: [{ kty: 'EC', kid: 'a', x: '1' }] } };
    assert.deepEqual(widenedProperties(keyed, { ...keyed, jwks: { keys: [] } }), []);
    assert.deepEqual(widenedProperties(keyed, { ...keyed, jwks: { keys: [{ kty: 'EC', kid: 'b', x: '2' }] } }), ['jwks']);
  });

  it('maps stored metadata to what oidc-provider is served and back', () => {
    const stored = { ...app, jwks_uri: 'https://keys.example/jwks' };
    const served = toProviderMetadata(stored);
    assert.deepEqual(served, { redirect_uris: app.redirect_uris, token_endpoint_auth_method: 'none', grant_types: app.grant_types, allowed_scope: app.scope, registered_jwks_uri: 'https://keys.example/jwks', jwks: { keys: [] } });
    assert.deepEqual(toRfc7591Metadata(served), stored);
  });
});
