import { Ajv, type ErrorObject } from 'ajv';

import { HttpProblem } from '../../errors.js';

/*
 * The admin API's request schemas, applied to input that did not come through one of its routes (the
 * operator console's forms): the same rules, and a message a person can act on, naming the field.
 */
const ajv = new Ajv({ allErrors: false, strict: false, verbose: true });

/**
 * A checker for `schema` that returns the value as `T` (the type the schema describes, as the route's
 * generic states it) or throws HttpProblem 400 naming the first field that does not fit.
 */
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- T is the caller's statement of what the schema describes
export function inputChecker<T>(schema: object): (value: unknown) => T {
  const validate = ajv.compile<T>(schema);
  return (value: unknown): T => {
    if (!validate(value)) throw HttpProblem.invalid(describe(validate.errors?.[0]));
    return value;
  };
}

function describe(error: ErrorObject | undefined): string {
  if (!error) return 'the input is not valid';
  const field = error.instancePath
    .split('/')
    .slice(1)
    .map((part, i) => (/^\d+$/.test(part) ? `[${Number(part) + 1}]` : `${i ? '.' : ''}${part}`))
    .join('');
  const params = error.params as Record<string, unknown>;
  const described = (error.parentSchema as { description?: unknown } | undefined)?.description;
  switch (error.keyword) {
    case 'additionalProperties':
      return `${String(params.additionalProperty)} is not a field here`;
    case 'required':
      return `${String(params.missingProperty)} is required`;
    case 'pattern':
      return `${field || 'the value'} is not in the expected form${typeof described === 'string' ? `: ${described}` : ''}`;
    case 'enum':
      return `${field || 'the value'} must be one of ${(params.allowedValues as unknown[]).map(String).join(', ')}`;
    default:
      return `${field || 'the input'} ${error.message ?? 'is not valid'}`;
  }
}
