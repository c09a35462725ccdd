import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { unavailableReason } from '../src/db/faults.js';
import { MigrationError } from '../src/db/migrate.js';

const withCode = (code: string, message = 'x') => Object.assign(new Error(message), { code });

describe('which database errors mean "unavailable, try again"', () => {
  it('the server cannot be reached, restarts, fails over or is full', () => {
    const cases: [unknown, string][] = [
      [withCode('ECONNREFUSED', 'connect ECONNREFUSED 10.0.0.5:5432'), 'connection refused'],
      [withCode('ECONNRESET'), 'connection lost'],
      [withCode('ENOTFOUND', 'getaddrinfo ENOTFOUND db.internal'), 'host name not found'],
      [new Error('Connection terminated unexpectedly'), 'connection lost'],
      [new Error('Connection terminated due to connection timeout'), 'connection timed out'],
      [new Error('timeout exceeded when trying to connect'), 'no connection within the connect timeout'],
      [new Error('Query read timeout'), 'no answer within the query timeout'],
      [withCode('57P01', 'terminating connection due to administrator command'), 'the server is shutting down'],
      [withCode('57P03', 'the database system is starting up'), 'the server is starting up or recovering'],
      [withCode('08006'), 'connection failure'],
      [withCode('53300'), 'too many connections'],
      [withCode('25006'), 'the server is read-only'],
      // Wrapped: kysely's migrator, and Node's connect to every address of a name.
      [new MigrationError('migration (unknown) failed', { cause: withCode('ECONNREFUSED') }), 'connection refused'],
      [Object.assign(new AggregateError([withCode('ECONNREFUSED'), withCode('ECONNREFUSED')]), { code: undefined }), 'connection refused'],
    ];
    for (const [error, reason] of cases) assert.equal(unavailableReason(error), reason, String(error));
  });

  it('everything else is not: a wrong password, a constraint, a bad query, a missing database, a bug', () => {
    for (const error of [withCode('28P01', 'password authentication failed for user "x"'), withCode('23505'), withCode('42601'), withCode('3D000'), new TypeError('x is undefined'), 'a string', undefined]) {
      assert.equal(unavailableReason(error), undefined, String(error));
    }
  });
});
