import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { CONFIG_VARIABLES, ConfigError, loadConfig } from '../src/config/config.js';
import { PACKAGE_ROOT } from '../src/paths.js';

const KEY = 'ab'.repeat(32);

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
    return [...error.problems];
  }
  assert.fail('expected the configuration to be refused');
}

describe('configuration', () => {
  it('has working defaults with nothing set: embedded database, localhost issuer, one FHIR base under it', () => {
    const config = loadConfig({});
    assert.equal(config.port, 3000);
    assert.equal(config.host, 'localhost');
    assert.equal(config.issuer, 'http://localhost:3000');
    assert.deepEqual(config.database, { kind: 'pglite', dataDir: './.data' });
    assert.deepEqual(config.fhirBaseUrls, ['http://localhost:3000/fhir']);
    assert.equal(config.secretKey, undefined);
    assert.equal(config.seedDemo, true);
    assert.equal(config.logLevel, 'info');
    assert.equal(config.trustProxy, false);
    assert.deepEqual([...config.signingAlgs].sort(), ['ES256', 'ES384', 'RS256', 'RS384']);
    assert.ok(Object.isFrozen(config));
    assert.ok(Object.isFrozen(config.fhirBaseUrls));
  });

  it('UDAP_CONFIG: unset or empty, UDAP is off; a file that is not there or not JSON is named with the fault', () => {
    assert.equal(loadConfig({}).udap, undefined);
    assert.equal(loadConfig({ UDAP_CONFIG: '' }).udap, undefined);
    assert.deepEqual(problems({ UDAP_CONFIG: '/nonexistent/udap.json' }), ['UDAP_CONFIG (/nonexistent/udap.json): cannot be read: ENOENT']);
    const misspelt = join(mkdtempSync(join(tmpdir(), 'udap-config-')), 'udap.json');
    writeFileSync(misspelt, '{"communitys": []}');
    assert.deepEqual(problems({ UDAP_CONFIG: misspelt }), [`UDAP_CONFIG (${misspelt}) communities: is required`, `UDAP_CONFIG (${misspelt}) communitys: is not a known setting (communities)`]);
    writeFileSync(misspelt, '{"communities": [');
    assert.match(problems({ UDAP_CONFIG: misspelt })[0]!, /^UDAP_CONFIG \(.*\): is not JSON: /);
  });

  it('derives the default issuer from PORT', () => {
    assert.equal(loadConfig({ PORT: '8080' }).issuer, 'http://localhost:8080');
  });

  it('treats empty values as unset', () => {
    const config = loadConfig({ PORT: '', DATABASE_URL: '', LOG_LEVEL: '  ' });
    assert.equal(config.port, 3000);
    assert.equal(config.database.kind, 'pglite');
    assert.equal(config.logLevel, 'info');
  });

  it('reads Postgres settings and requires SECRET_KEY and FHIR_BASE_URLS with DATABASE_URL', () => {
    assert.deepEqual(problems({ DATABASE_URL: 'postgres://u@db/smart' }), [
      'FHIR_BASE_URLS is required when DATABASE_URL is set: comma-separated absolute http(s) URLs of the FHIR servers this server issues tokens for',
      'SECRET_KEY is required when DATABASE_URL is set: a 32-byte key as 64 hex characters or base64 (`npx smart-auth gen-secret` prints one)',
    ]);
    const config = loadConfig({ DATABASE_URL: 'postgresql://u:p@db:5432/smart', SECRET_KEY: KEY, FHIR_BASE_URLS: 'https://fhir.example.org/r4' });
    assert.deepEqual(config.database, { kind: 'postgres', url: 'postgresql://u:p@db:5432/smart' });
    assert.equal(config.secretKey?.toString('hex'), KEY);
    assert.equal(config.seedDemo, false);
  });

  it('DATABASE_REPLICA_URL: a standby of DATABASE_URL, read within DATABASE_REPLICA_MAX_LAG_MS (5 s by default); never echoed back', () => {
    const primary = { DATABASE_URL: 'postgres://u:p@db/smart', SECRET_KEY: KEY, FHIR_BASE_URLS: 'https://fhir.example.org/r4' };
    assert.equal(loadConfig(primary).databaseReplica, undefined);
    assert.deepEqual(loadConfig({ ...primary, DATABASE_REPLICA_URL: 'postgres://u:p@standby/smart' }).databaseReplica, { url: 'postgres://u:p@standby/smart', maxLagMs: 5000 });
    assert.deepEqual(loadConfig({ ...primary, DATABASE_REPLICA_URL: 'postgres://u:p@standby/smart', DATABASE_REPLICA_MAX_LAG_MS: '2500' }).databaseReplica, { url: 'postgres://u:p@standby/smart', maxLagMs: 2500 });
    assert.deepEqual(problems({ ...primary, DATABASE_REPLICA_URL: 'mysql://u:secret@standby/smart', DATABASE_REPLICA_MAX_LAG_MS: '50' }), [
      'DATABASE_REPLICA_URL=(value hidden) is invalid: expected a postgres:// or postgresql:// connection URL of a hot standby of DATABASE_URL',
      'DATABASE_REPLICA_MAX_LAG_MS="50" is invalid: expected an integer number of milliseconds from 2000 (the lag is measured every second) to 600000',
    ]);
    assert.deepEqual(problems({ DATABASE_REPLICA_URL: 'postgres://u:secret@standby/smart' }), ['DATABASE_REPLICA_URL needs DATABASE_URL: a read replica is a standby of a Postgres primary, and the embedded database has none']);
  });

  it('normalises FHIR base URLs (case of scheme and host, trailing slash) and drops duplicates', () => {
    const config = loadConfig({ FHIR_BASE_URLS: 'HTTPS://FHIR.Example.org/R4/,https://fhir.example.org/R4,http://localhost:8080/fhir' });
    assert.deepEqual(config.fhirBaseUrls, ['https://fhir.example.org/R4', 'http://localhost:8080/fhir']);
  });

  it('accepts SECRET_KEY as hex, base64 and base64url', () => {
    const bytes = Buffer.from(KEY, 'hex');
    for (const form of [KEY, bytes.toString('base64'), bytes.toString('base64url')]) {
      assert.equal(loadConfig({ SECRET_KEY: form }).secretKey?.toString('hex'), KEY, form);
    }
  });

  it('AUDIT_CHECKPOINT_SECONDS: an hour by default, 0 for off, at most a week', () => {
    assert.equal(loadConfig({}).auditCheckpointSeconds, 3600);
    assert.equal(loadConfig({ AUDIT_CHECKPOINT_SECONDS: '0' }).auditCheckpointSeconds, 0);
    assert.deepEqual(problems({ AUDIT_CHECKPOINT_SECONDS: '604801' }), ['AUDIT_CHECKPOINT_SECONDS="604801" is invalid: expected an integer number of seconds from 0 (off) to 604800 (a week)']);
  });

  it('INTROSPECTION_AUDIT_WINDOW_SECONDS: a minute by default, 0 for a row each, at most an hour', () => {
    assert.equal(loadConfig({}).introspectionAuditWindowSeconds, 60);
    assert.equal(loadConfig({ INTROSPECTION_AUDIT_WINDOW_SECONDS: '0' }).introspectionAuditWindowSeconds, 0);
    assert.deepEqual(problems({ INTROSPECTION_AUDIT_WINDOW_SECONDS: '3601' }), ['INTROSPECTION_AUDIT_WINDOW_SECONDS="3601" is invalid: expected an integer number of seconds from 0 (a row for each introspection) to 3600']);
  });

  it('SENSITIVE_SECURITY_LABELS: restricted confidentiality and the HL7 sensitivity codes by default; a list of system|code otherwise', () => {
    const confidentiality = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
    const actCode = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
    assert.deepEqual(loadConfig({}).sensitiveSecurityLabels, [`${confidentiality}|R`, `${confidentiality}|V`, ...['BH', 'ETH', 'SUD', 'HIV', 'SEX', 'STD', 'SDV', 'PSY'].map((c) => `${actCode}|${c}`)]);
    assert.deepEqual(loadConfig({ SENSITIVE_SECURITY_LABELS: 'urn:example:labels|secret,http://x.example/cs|42' }).sensitiveSecurityLabels, ['urn:example:labels|secret', 'http://x.example/cs|42']);
    for (const bad of ['R', 'http://x.example/cs|', 'a|b,,c|d', 'a|b c']) {
      assert.deepEqual(problems({ SENSITIVE_SECURITY_LABELS: bad }), [`SENSITIVE_SECURITY_LABELS=${JSON.stringify(bad)} is invalid: expected comma-separated security labels as system|code, e.g. http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R`]);
    }
  });

  it('names each bad variable with what it expects', () => {
    assert.deepEqual(problems({ PORT: 'eighty' }), ['PORT="eighty" is invalid: expected an integer from 0 to 65535 (0 picks a free port)']);
    assert.deepEqual(problems({ PORT: '70000' }), ['PORT="70000" is invalid: expected an integer from 0 to 65535 (0 picks a free port)']);
    assert.deepEqual(problems({ LOG_LEVEL: 'verbose' }), ['LOG_LEVEL="verbose" is invalid: expected one of fatal, error, warn, info, debug, trace, silent']);
    assert.deepEqual(problems({ DATABASE_URL: 'mysql://x' }), ['DATABASE_URL=(value hidden) is invalid: expected a postgres:// or postgresql:// connection URL']);
    // URLs the pattern lets through but the driver cannot parse: refused here, not at the first connection with a stack trace.
    const rest = { SECRET_KEY: KEY, FHIR_BASE_URLS: 'https://fhir.example.org/r4' };
    for (const url of ['postgres://u@db:99999/smart', 'postgresql://[::1/smart', 'postgres://u:p@db:port/smart']) {
      assert.deepEqual(problems({ ...rest, DATABASE_URL: url }), ['DATABASE_URL=(value hidden) is invalid: expected a connection URL the Postgres driver can read (a port from 1 to 65535, an IPv6 address in brackets, user name and password percent-encoded)'], url);
      assert.deepEqual(problems({ ...rest, DATABASE_URL: 'postgres://u@db/smart', DATABASE_REPLICA_URL: url }), ['DATABASE_REPLICA_URL=(value hidden) is invalid: expected a connection URL the Postgres driver can read (a port from 1 to 65535, an IPv6 address in brackets, user name and password percent-encoded)'], url);
    }
    // What the driver does read stays accepted: an empty host with the socket as a parameter, odd percent signs.
    for (const url of ['postgres://u@/smart?host=/var/run/postgresql', 'postgres://u:p%zz@db/smart', 'postgresql://u@[::1]:5432/smart']) assert.equal(loadConfig({ ...rest, DATABASE_URL: url }).database.kind, 'postgres', url);
    assert.deepEqual(problems({ ISSUER: 'ftp://auth.example.org' }), [
      'ISSUER="ftp://auth.example.org" is invalid: expected an absolute http(s) URL without query or fragment, e.g. https://auth.example.org',
    ]);
    assert.deepEqual(problems({ ISSUER: 'https://auth.example.org/?x=1' }), [
      'ISSUER="https://auth.example.org/?x=1" is invalid: expected an absolute http(s) URL without query or fragment, e.g. https://auth.example.org',
    ]);
    assert.deepEqual(problems({ SIGNING_ALGS: 'RS256,HS256' }), [
      'SIGNING_ALGS="RS256,HS256" is invalid: expected comma-separated algorithms from RS256, RS384, ES256, ES384; RS256 is always included',
    ]);
    assert.deepEqual(problems({ KEY_ROTATION_DAYS: '-1' }), ['KEY_ROTATION_DAYS="-1" is invalid: expected an integer number of days from 0 (off) to 3650']);
    assert.deepEqual(problems({ SEED_DEMO: 'yes' }), ['SEED_DEMO="yes" is invalid: expected true or false']);
  });

  it('reports every bad variable at once', () => {
    assert.equal(problems({ PORT: 'x', LOG_LEVEL: 'y', SEED_DEMO: 'z' }).length, 3);
  });

  it('refuses plain http issuers outside loopback', () => {
    assert.deepEqual(problems({ ISSUER: 'http://auth.example.org' }), [
      'ISSUER="http://auth.example.org" is invalid: expected an https URL (plain http is only allowed for localhost, 127.0.0.1 or [::1])',
    ]);
    assert.equal(loadConfig({ ISSUER: 'http://127.0.0.1:3000/' }).issuer, 'http://127.0.0.1:3000');
    assert.equal(loadConfig({ ISSUER: 'https://auth.example.org/smart/' }).issuer, 'https://auth.example.org/smart');
  });

  it('refuses FHIR base URLs that are not absolute http(s) URLs', () => {
    assert.deepEqual(problems({ FHIR_BASE_URLS: 'https://ok.example/fhir,fhir.example.org' }), [
      'FHIR_BASE_URLS entry "fhir.example.org" is invalid: expected an absolute http(s) URL without query, fragment or credentials',
    ]);
    assert.deepEqual(problems({ FHIR_BASE_URLS: 'https://fhir.example.org/r4?x=1' }), [
      'FHIR_BASE_URLS entry "https://fhir.example.org/r4?x=1" is invalid: expected an absolute http(s) URL without query, fragment or credentials',
    ]);
  });

  it('never echoes a secret value in an error', () => {
    const shortToken = 'short-but-secret-token';
    const out = problems({ ADMIN_TOKEN: shortToken, SECRET_KEY: 'not-a-key-secret-value' });
    assert.deepEqual(out, [
      'ADMIN_TOKEN=(value hidden) is invalid: expected at least 32 printable characters without spaces (e.g. `openssl rand -base64 32`)',
      'SECRET_KEY is invalid: expected a 32-byte key as 64 hex characters or 43/44 base64 characters (`npx smart-auth gen-secret` prints one)',
    ]);
    assert.ok(!out.join('\n').includes(shortToken));
    assert.ok(!out.join('\n').includes('not-a-key-secret-value'));
  });

  it('parses TRUST_PROXY as a switch or a list of proxy addresses', () => {
    assert.equal(loadConfig({ TRUST_PROXY: 'true' }).trustProxy, true);
    assert.deepEqual(loadConfig({ TRUST_PROXY: '10.0.0.0/8,::1,loopback' }).trustProxy, ['10.0.0.0/8', '::1', 'loopback']);
    assert.deepEqual(problems({ TRUST_PROXY: '10.0.0.0/33' }), [
      'TRUST_PROXY entry "10.0.0.0/33" is invalid: expected an IPv4/IPv6 address, a CIDR range such as 10.0.0.0/8, or loopback, linklocal, uniquelocal',
    ]);
    assert.deepEqual(problems({ TRUST_PROXY: 'proxy.internal' }), [
      'TRUST_PROXY entry "proxy.internal" is invalid: expected an IPv4/IPv6 address, a CIDR range such as 10.0.0.0/8, or loopback, linklocal, uniquelocal',
    ]);
  });

  it('reads the connection timeouts, and refuses a headers timeout longer than the request timeout', () => {
    const defaults = loadConfig({});
    assert.deepEqual([defaults.headersTimeoutSeconds, defaults.requestTimeoutSeconds, defaults.keepAliveTimeoutSeconds], [10, 30, 72]);
    const set = loadConfig({ HEADERS_TIMEOUT_SECONDS: '5', REQUEST_TIMEOUT_SECONDS: '120', KEEP_ALIVE_TIMEOUT_SECONDS: '65' });
    assert.deepEqual([set.headersTimeoutSeconds, set.requestTimeoutSeconds, set.keepAliveTimeoutSeconds], [5, 120, 65]);
    assert.deepEqual(problems({ HEADERS_TIMEOUT_SECONDS: '20', REQUEST_TIMEOUT_SECONDS: '15' }), ['HEADERS_TIMEOUT_SECONDS=20 is invalid: expected at most REQUEST_TIMEOUT_SECONDS (15)']);
    assert.deepEqual(problems({ REQUEST_TIMEOUT_SECONDS: '0' }), ['REQUEST_TIMEOUT_SECONDS="0" is invalid: expected an integer number of seconds from 1 to 3600']);
  });

  it('FHIR_UPSTREAMS: each fronted base with its upstream, headers and options; every mistake named', () => {
    const config = loadConfig({
      FHIR_BASE_URLS: 'http://localhost:3000/fhir,http://localhost:3000/r4',
      FHIR_UPSTREAMS: 'http://localhost:3000/fhir/=http://hapi:8080/fhir/,http://localhost:3000/r4=https://fhir.internal/r4',
      FHIR_UPSTREAM_HEADERS: JSON.stringify({ 'http://localhost:3000/fhir': { Authorization: 'Basic abc', 'X-Api-Key': 'k' } }),
      FHIR_UPSTREAM_OPTIONS: JSON.stringify({ 'http://localhost:3000/r4': { timeoutSeconds: 5, connections: 8, allow: ['$validate', '_filter'] } }),
      FHIR_UPSTREAM_TIMEOUT_SECONDS: '20',
    });
    assert.deepEqual(config.fhirUpstreams, [
      { base: 'http://localhost:3000/fhir', url: 'http://hapi:8080/fhir', headers: { authorization: 'Basic abc', 'x-api-key': 'k' }, timeoutSeconds: 20, connections: 64, allow: [] },
      { base: 'http://localhost:3000/r4', url: 'https://fhir.internal/r4', headers: {}, timeoutSeconds: 5, connections: 8, allow: ['$validate', '_filter'] },
    ]);
    assert.deepEqual(loadConfig({ SANDBOX: 'false' }).fhirUpstreams, [], 'no upstream: discovery only, as before');
    assert.deepEqual(loadConfig({ SANDBOX: 'false', FHIR_UPSTREAMS: 'http://localhost:3000/fhir=embedded' }).fhirUpstreams.map((u) => u.url), ['embedded'], 'the embedded FHIR server, asked for by name');

    assert.deepEqual(problems({ FHIR_UPSTREAMS: 'http://localhost:3000/other=http://hapi/fhir' }), ['FHIR_UPSTREAMS entry "http://localhost:3000/other=http://hapi/fhir" is invalid: http://localhost:3000/other is not one of FHIR_BASE_URLS (http://localhost:3000/fhir)']);
    assert.deepEqual(problems({ FHIR_UPSTREAMS: 'http://localhost:3000/fhir=ftp://hapi/fhir' }), ['FHIR_UPSTREAMS entry "http://localhost:3000/fhir=ftp://hapi/fhir" is invalid: expected FHIR_BASE_URL=UPSTREAM_URL, both absolute http(s) URLs (or UPSTREAM_URL embedded)']);
    assert.deepEqual(problems({ FHIR_UPSTREAMS: 'http://localhost:3000/fhir=http://user:pw@hapi/fhir' }), ['FHIR_UPSTREAMS entry for http://localhost:3000/fhir is invalid: put the upstream\'s credentials in FHIR_UPSTREAM_HEADERS, not in its URL']);
    assert.deepEqual(problems({ FHIR_BASE_URLS: 'http://localhost:3000', FHIR_UPSTREAMS: 'http://localhost:3000=http://hapi/fhir' }), ['FHIR_UPSTREAMS entry "http://localhost:3000=http://hapi/fhir" is invalid: a fronted FHIR base needs a path of its own (e.g. http://localhost:3000/fhir), not the server\'s root']);
    const headers = problems({ FHIR_UPSTREAMS: 'http://localhost:3000/fhir=http://hapi/fhir', FHIR_UPSTREAM_HEADERS: JSON.stringify({ 'http://localhost:3000/fhir': { Host: 'x', 'Bad Name': 'y', Ok: 'line\nbreak' } }) });
    assert.deepEqual(headers, [
      'FHIR_UPSTREAM_HEADERS for http://localhost:3000/fhir is invalid: Host is set by the gateway itself',
      'FHIR_UPSTREAM_HEADERS for http://localhost:3000/fhir is invalid: header "Bad Name" needs a token name and a string value of printable characters',
      'FHIR_UPSTREAM_HEADERS for http://localhost:3000/fhir is invalid: header "Ok" needs a token name and a string value of printable characters',
    ]);
    const secretHeader = problems({ FHIR_UPSTREAMS: 'http://localhost:3000/fhir=http://hapi/fhir', FHIR_UPSTREAM_HEADERS: '{"Authorization": "Basic top-secret"' });
    assert.deepEqual(secretHeader, ['FHIR_UPSTREAM_HEADERS is invalid: expected a JSON object from FHIR base URL to an object'], 'the value, which holds credentials, is never echoed');
    assert.deepEqual(problems({ FHIR_UPSTREAMS: 'http://localhost:3000/fhir=http://hapi/fhir', FHIR_UPSTREAM_OPTIONS: JSON.stringify({ 'http://localhost:3000/fhir': { timeoutSeconds: 0, allow: ['rm -rf'], retries: 3 } }) }), [
      'FHIR_UPSTREAM_OPTIONS for http://localhost:3000/fhir is invalid: unknown option retries (expected timeoutSeconds, connections, allow)',
      'FHIR_UPSTREAM_OPTIONS for http://localhost:3000/fhir is invalid: timeoutSeconds must be an integer from 1 to 600',
      'FHIR_UPSTREAM_OPTIONS for http://localhost:3000/fhir is invalid: allow must be a list of operations ($name) and search features (_filter, _query, _contained)',
    ]);
    assert.deepEqual(problems({ FHIR_UPSTREAMS: 'http://localhost:3000/fhir=http://hapi/fhir', FHIR_UPSTREAM_OPTIONS: JSON.stringify({ 'http://localhost:3000/r4': {} }) }), ['FHIR_UPSTREAM_OPTIONS names http://localhost:3000/r4, which is not a base in FHIR_UPSTREAMS']);
    assert.deepEqual(problems({ FHIR_UPSTREAM_HEADERS: '{}' }), ['FHIR_UPSTREAM_HEADERS and FHIR_UPSTREAM_OPTIONS apply to the bases in FHIR_UPSTREAMS, which is not set']);
  });

  it('SANDBOX: on by default on the embedded database, off with DATABASE_URL, either way when set; it decides the demo data, registration and the embedded FHIR server', () => {
    const embedded = loadConfig({});
    assert.equal(embedded.sandbox, true);
    assert.equal(embedded.sandboxReason, 'SANDBOX unset and no DATABASE_URL: the embedded database is a sandbox');
    assert.deepEqual([embedded.seedDemo, embedded.registration, embedded.registrationStatus], [true, 'open', 'active']);
    assert.deepEqual(embedded.fhirUpstreams, [{ base: 'http://localhost:3000/fhir', url: 'embedded', headers: {}, timeoutSeconds: 30, connections: 64, allow: [] }]);

    const deployment = loadConfig({ DATABASE_URL: 'postgres://db/x', SECRET_KEY: KEY, FHIR_BASE_URLS: 'https://ehr.example.org/fhir' });
    assert.equal(deployment.sandbox, false);
    assert.equal(deployment.sandboxReason, 'SANDBOX unset and DATABASE_URL set: a deployment');
    assert.deepEqual([deployment.seedDemo, deployment.registration, deployment.registrationStatus, deployment.fhirUpstreams.length], [false, 'token', 'pending', 0]);

    const off = loadConfig({ SANDBOX: 'false' });
    assert.deepEqual([off.sandbox, off.sandboxReason, off.seedDemo, off.registration, off.fhirUpstreams.length], [false, 'SANDBOX=false', false, 'token', 0]);
    const on = loadConfig({ SANDBOX: 'true', DATABASE_URL: 'postgres://db/x', SECRET_KEY: KEY, FHIR_BASE_URLS: 'https://ehr.example.org/fhir' });
    assert.deepEqual([on.sandbox, on.seedDemo, on.fhirUpstreams[0]?.url], [true, true, 'embedded']);
    assert.equal(loadConfig({ SANDBOX: 'true', FHIR_UPSTREAMS: 'http://localhost:3000/fhir=http://hapi/fhir' }).fhirUpstreams[0]?.url, 'http://hapi/fhir', 'FHIR_UPSTREAMS wins over the embedded server');
    assert.deepEqual(problems({ SANDBOX: 'yes' }), ['SANDBOX="yes" is invalid: expected true or false']);
    assert.deepEqual(problems({ SANDBOX: 'true', FHIR_BASE_URLS: 'http://localhost:3000' }), ['FHIR_BASE_URLS entry "http://localhost:3000" is invalid in sandbox mode: the embedded FHIR server is served under it, so it needs a path of its own (e.g. http://localhost:3000/fhir)']);
  });

  it('keeps earlier secret keys for decryption', () => {
    const config = loadConfig({ SECRET_KEY: KEY, SECRET_KEYS_PREVIOUS: `${'cd'.repeat(32)}, ${'ef'.repeat(32)}` });
    assert.deepEqual(config.previousSecretKeys.map((k) => k.toString('hex')), ['cd'.repeat(32), 'ef'.repeat(32)]);
  });

  it('.env.example documents exactly the variables the server reads, and loads as it is', () => {
    const text = readFileSync(join(PACKAGE_ROOT, '.env.example'), 'utf8');
    const documented = [...text.matchAll(/^([A-Z_]+)=/gm)].map((m) => m[1]);
    assert.deepEqual([...documented].sort(), [...CONFIG_VARIABLES].sort());
    const values: Record<string, string> = {};
    for (const [, name = '', value = ''] of text.matchAll(/^([A-Z_]+)=(.*)$/gm)) values[name] = value;
    assert.doesNotThrow(() => loadConfig(values));
  });
});
