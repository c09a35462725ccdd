/**
 * Text that Postgres cannot store as given: NUL (U+0000), which `text` and `jsonb` refuse, and a lone UTF-16
 * surrogate, whose escape `jsonb` refuses and which `text` silently turns into U+FFFD (UTF-8 has no encoding
 * for it). Input holding either is refused where it enters (src/http/input-guard.ts) and again where it would
 * be stored, so that it never becomes a database error, and so a server error.
 */

export function isStorableText(value: string): boolean {
  return !value.includes('\u0000') && value.isWellFormed();
}

/** How deep JSON input may nest: FHIR resources and client metadata stay far below it. */
export const MAX_JSON_DEPTH = 64;

export interface InputProblem {
  /** Where, as a path into the value: `body.client_name`, `query.state`. */
  readonly at: string;
  readonly problem: 'unstorable' | 'too-deep';
}

/**
 * The first string or key in a JSON-like value that cannot be stored, or the first place it nests deeper than
 * {@link MAX_JSON_DEPTH}; `at` names the value ('' for paths that start at its keys). Walks without recursion,
 * so that no input can exhaust the stack.
 */
export function inputProblem(value: unknown, at: string): InputProblem | undefined {
  const stack: { value: unknown; at: string; depth: number }[] = [{ value, at, depth: 0 }];
  while (stack.length) {
    const item = stack.pop()!;
    if (typeof item.value === 'string') {
      if (!isStorableText(item.value)) return { at: item.at, problem: 'unstorable' };
      continue;
    }
    if (item.value === null || typeof item.value !== 'object') continue;
    if (item.depth >= MAX_JSON_DEPTH) return { at: item.at, problem: 'too-deep' };
    for (const [key, child] of Object.entries(item.value)) {
      const childAt = Array.isArray(item.value) ? `${item.at}[${key}]` : item.at ? `${item.at}.${key}` : key;
      if (!isStorableText(key)) return { at: childAt, problem: 'unstorable' };
      stack.push({ value: child, at: childAt, depth: item.depth + 1 });
    }
  }
  return undefined;
}

/** The words for a problem, for an error_description. */
export function describeInputProblem({ at, problem }: InputProblem): string {
  return problem === 'unstorable'
    ? `${at} contains a NUL character or an unpaired UTF-16 surrogate, which no value here may hold`
    : `${at} is nested more than ${MAX_JSON_DEPTH} levels deep`;
}
