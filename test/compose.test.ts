import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';

import { parse } from 'yaml';

import { PACKAGE_ROOT } from '../src/paths.js';

interface Service {
  image?: string;
  build?: unknown;
  profiles?: string[];
  env_file?: (string | { path: string; required?: boolean })[] | string;
  environment?: Record<string, string | number | boolean | null>;
  ports?: unknown[];
  healthcheck?: { test?: unknown };
  restart?: string;
}

/**
 * .env.example variables the compose file sets itself, for the container: where it listens, the database
 * it composes, and no demo data. Every other one comes from .env untouched.
 */
const SET_BY_COMPOSE = ['DATABASE_URL', 'HOST', 'PORT', 'SECRET_KEY', 'SEED_DEMO'];

describe('docker-compose.yml', () => {
  let services: Record<string, Service>;
  let servers: [string, Service][];
  let documented: string[];

  before(async () => {
    const compose = parse(await readFile(join(PACKAGE_ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, Service> };
    services = compose.services;
    servers = Object.entries(services).filter(([, s]) => s.build !== undefined);
    const example = await readFile(join(PACKAGE_ROOT, '.env.example'), 'utf8');
    documented = [...example.matchAll(/^([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!);
  });

  it('runs the server, and two more behind a proxy in the scale profile', () => {
    assert.deepEqual(servers.map(([name, s]) => [name, s.profiles ?? []]), [['smart-auth', []], ['smart-auth-a', ['scale']], ['smart-auth-b', ['scale']]]);
    assert.deepEqual(services.proxy?.profiles, ['scale']);
  });

  it('seeds no demo data (its users have published passwords)', () => {
    for (const [name, s] of servers) assert.equal(s.environment?.SEED_DEMO, 'false', name);
  });

  it('has no default secrets: compose refuses to start without the database password and SECRET_KEY', () => {
    const required = (value: unknown, variable: string): boolean => typeof value === 'string' && value.includes(`\${${variable}:?`);
    assert.ok(required(services.postgres?.environment?.POSTGRES_PASSWORD, 'POSTGRES_PASSWORD'));
    for (const [name, s] of servers) {
      assert.ok(required(s.environment?.DATABASE_URL, 'POSTGRES_PASSWORD'), `${name}: DATABASE_URL`);
      assert.ok(required(s.environment?.SECRET_KEY, 'SECRET_KEY'), `${name}: SECRET_KEY`);
    }
    const text = JSON.stringify(services);
    assert.doesNotMatch(text, /PASSWORD:-|SECRET_KEY:-|ADMIN_TOKEN:-/, 'no fallback value for a secret');
  });

  it('passes every variable of .env.example to the server', () => {
    assert.ok(documented.length > 30);
    for (const [name, s] of servers) {
      const files = [s.env_file ?? []].flat().map((f) => (typeof f === 'string' ? { path: f } : f));
      assert.deepEqual(files, [{ path: '.env', required: true }], `${name}: env_file`);
      const overridden = Object.keys(s.environment ?? {}).filter((v) => documented.includes(v) && !(name !== 'smart-auth' && v === 'TRUST_PROXY'));
      assert.deepEqual(overridden.sort(), SET_BY_COMPOSE, `${name}: variables set by compose rather than .env`);
    }
  });

  it('does not publish Postgres; only the servers (and the proxy) are reachable', () => {
    assert.equal(services.postgres?.ports, undefined);
    assert.deepEqual(Object.entries(services).filter(([, s]) => s.ports).map(([name]) => name).sort(), ['proxy', 'smart-auth']);
  });

  it('gives every service a health check and a restart policy', () => {
    for (const [name, s] of Object.entries(services)) {
      assert.ok(Array.isArray(s.healthcheck?.test), `${name}: healthcheck`);
      assert.equal(s.restart, 'unless-stopped', `${name}: restart`);
    }
  });
});
