import type { FastifySchemaValidationError } from 'fastify';

type SchemaErrorDataVar = 'body' | 'headers' | 'params' | 'querystring';

/**
 * Schema validation errors in words a person reads (an operator at the CLI, a developer calling the admin
 * API): `password: must have at least 10 characters`, never ajv's `body/password must NOT have fewer than
 * 10 characters`. The field is named as it is written in the request; the rest says what is expected.
 */
export function schemaErrorFormatter(errors: readonly FastifySchemaValidationError[], dataVar: SchemaErrorDataVar): Error {
  const messages = [...new Set(errors.filter((e) => !isBranchDetail(e, errors)).map((e) => describe(e, dataVar)))];
  return new Error(messages.join('; '));
}

const WHOLE: Record<string, string> = { body: 'the request body', querystring: 'the query string', params: 'the URL', headers: 'the headers' };

function describe(error: FastifySchemaValidationError, dataVar: SchemaErrorDataVar): string {
  const params = error.params;
  const at = fieldName(error.instancePath);
  const subject = (name: string | undefined): string => (name ? `${name}: ` : `${WHOLE[dataVar] ?? dataVar} `);
  switch (error.keyword) {
    case 'required':
      return `${subject(join(at, String(params.missingProperty)))}is required`;
    case 'additionalProperties':
      return `${subject(join(at, String(params.additionalProperty)))}is not a known property`;
    default:
      return `${subject(at)}${expectation(error.keyword, params) ?? error.message ?? 'is not valid'}`;
  }
}

function expectation(keyword: string, params: Record<string, unknown>): string | undefined {
  const n = (key: string) => Number(params[key]);
  const plural = (count: number, word: string, words = `${word}s`) => `${count} ${count === 1 ? word : words}`;
  switch (keyword) {
    case 'minLength':
      return `must have at least ${plural(n('limit'), 'character')}`;
    case 'maxLength':
      return `must have at most ${plural(n('limit'), 'character')}`;
    case 'minItems':
      return `must have at least ${plural(n('limit'), 'item')}`;
    case 'maxItems':
      return `must have at most ${plural(n('limit'), 'item')}`;
    case 'minProperties':
      return `must have at least ${plural(n('limit'), 'property', 'properties')}`;
    case 'maxProperties':
      return `must have at most ${plural(n('limit'), 'property', 'properties')}`;
    case 'minimum':
      return `must be at least ${n('limit')}`;
    case 'maximum':
      return `must be at most ${n('limit')}`;
    case 'exclusiveMinimum':
      return `must be more than ${n('limit')}`;
    case 'exclusiveMaximum':
      return `must be less than ${n('limit')}`;
    case 'type':
      return `must be ${article(String(params.type).split(',').join(' or '))}`;
    case 'enum':
      return `must be one of ${(params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'const':
      return `must be ${JSON.stringify(params.allowedValue)}`;
    case 'pattern':
      return `must match the pattern ${String(params.pattern)}`;
    case 'format':
      return `must be a valid ${String(params.format)}`;
    case 'uniqueItems':
      return `must not repeat an item (items ${String(params.j)} and ${String(params.i)} are the same)`;
    case 'anyOf':
    case 'oneOf':
      return 'matches none of the allowed forms';
    default:
      return undefined;
  }
}

/** anyOf/oneOf report every branch's failure before their own: the summary alone says more. */
function isBranchDetail(error: FastifySchemaValidationError, all: readonly FastifySchemaValidationError[]): boolean {
  return all.some((other) => other !== error && (other.keyword === 'anyOf' || other.keyword === 'oneOf') && error.schemaPath.startsWith(other.schemaPath.replace(/\/(anyOf|oneOf)$/, '/$1/')));
}

function article(type: string): string {
  return /^(integer|object|array)/.test(type) ? `an ${type}` : `a ${type}`;
}

/** `/fhirContext/0/role` → `fhirContext[0].role`. */
function fieldName(instancePath: string): string | undefined {
  if (!instancePath) return undefined;
  return instancePath
    .slice(1)
    .split('/')
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((name, part) => (/^\d+$/.test(part) ? `${name}[${part}]` : name ? `${name}.${part}` : part), '');
}

function join(parent: string | undefined, child: string): string {
  return parent ? `${parent}.${child}` : child;
}
