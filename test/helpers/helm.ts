import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { parse as parseYaml, stringify as toYaml } from 'yaml';

/**
 * Renders a Helm chart the way `helm template` does, for the part of Go's text/template and of Helm's
 * functions our chart uses (the machines that run CI have no helm binary). Anything else it meets is an
 * error, so a template that strays from this subset fails its test rather than rendering wrongly:
 * actions with `{{-`/`-}}` trimming and comments; `if`/`else`/`end`, `with`, `range $k, $v := …`,
 * `define`/`include`; pipelines with parentheses; .Values, .Release, .Chart, `$`, variables; the functions
 * quote, toYaml, nindent, indent, default, required, fail, trunc, trimSuffix, printf (%s %d %v), add, int,
 * not, and, or, eq, ne, ge, gt, le, lt.
 */

type Value = unknown;
type Node =
  | { readonly kind: 'text'; readonly text: string }
  | { readonly kind: 'action'; readonly pipeline: string }
  | { readonly kind: 'if' | 'with'; readonly pipeline: string; readonly then: Node[]; readonly otherwise: Node[] }
  | { readonly kind: 'range'; readonly vars: readonly string[]; readonly pipeline: string; readonly body: Node[] };

interface Scope {
  readonly dot: Value;
  readonly root: Value;
  readonly vars: ReadonlyMap<string, Value>;
}

export class TemplateError extends Error {}

const ACTION = /\{\{(-\s)?([\s\S]*?)(\s-)?\}\}/g;

/** Text and actions, trimming applied. */
function lex(source: string): ({ text: string } | { action: string })[] {
  const out: ({ text: string } | { action: string })[] = [];
  let last = 0;
  let trimNext = false;
  for (const match of source.matchAll(ACTION)) {
    let text = source.slice(last, match.index);
    if (trimNext) text = text.replace(/^\s+/, '');
    if (match[1]) text = text.replace(/\s+$/, '');
    out.push({ text });
    const action = match[2]!.trim();
    if (!(action.startsWith('/*') && action.endsWith('*/'))) out.push({ action });
    trimNext = Boolean(match[3]);
    last = match.index + match[0].length;
  }
  let rest = source.slice(last);
  if (trimNext) rest = rest.replace(/^\s+/, '');
  out.push({ text: rest });
  return out;
}

/** The tree of one file, and the `define`d templates found in it. */
function parseTemplate(source: string, defines: Map<string, Node[]>): Node[] {
  const tokens = lex(source);
  let i = 0;
  const block = (ends: readonly string[]): { nodes: Node[]; end: string } => {
    const nodes: Node[] = [];
    while (i < tokens.length) {
      const token = tokens[i++]!;
      if ('text' in token) {
        if (token.text) nodes.push({ kind: 'text', text: token.text });
        continue;
      }
      const [word = '', ...rest] = token.action.split(/\s+/);
      const tail = token.action.slice(word.length).trim();
      if (ends.includes(word)) return { nodes, end: word };
      if (word === 'if' || word === 'with') {
        const then = block(['else', 'end']);
        const otherwise = then.end === 'else' ? block(['end']).nodes : [];
        nodes.push({ kind: word, pipeline: tail, then: then.nodes, otherwise });
      } else if (word === 'range') {
        const declared = /^(\$\w+)(?:\s*,\s*(\$\w+))?\s*:=\s*(.+)$/.exec(tail);
        const body = block(['end']).nodes;
        nodes.push({ kind: 'range', vars: declared ? [declared[1]!, declared[2]].filter((v): v is string => v !== undefined) : [], pipeline: declared ? declared[3]! : tail, body });
      } else if (word === 'define') {
        const name = /^"([^"]+)"$/.exec(rest.join(' '));
        if (!name) throw new TemplateError(`define needs a quoted name: ${token.action}`);
        defines.set(name[1]!, block(['end']).nodes);
      } else if (['else', 'end', 'block', 'template', 'break', 'continue'].includes(word)) {
        throw new TemplateError(`unexpected {{ ${token.action} }}`);
      } else {
        nodes.push({ kind: 'action', pipeline: token.action });
      }
    }
    if (ends.length) throw new TemplateError(`missing {{ end }} (expected ${ends.join(' or ')})`);
    return { nodes, end: '' };
  };
  return block([]).nodes;
}

/** Words of a command: strings, parenthesised pipelines and bare words. */
function words(text: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      out.push(text.slice(i, j + 1));
      i = j + 1;
    } else if (c === '(') {
      let depth = 0;
      let j = i;
      for (; j < text.length; j++) {
        if (text[j] === '(') depth++;
        else if (text[j] === ')' && --depth === 0) break;
      }
      if (depth !== 0) throw new TemplateError(`unbalanced parentheses in ${text}`);
      out.push(text.slice(i, j + 1));
      i = j + 1;
    } else {
      let j = i;
      while (j < text.length && !/[\s(]/.test(text[j]!)) j++;
      out.push(text.slice(i, j));
      i = j;
    }
  }
  return out;
}

/** Splits a pipeline at the `|` outside strings and parentheses. */
function commands(pipeline: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < pipeline.length; i++) {
    const c = pipeline[i];
    if (quoted) {
      if (c === '\\') i++;
      else if (c === '"') quoted = false;
    } else if (c === '"') quoted = true;
    else if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '|' && depth === 0) {
      out.push(pipeline.slice(start, i).trim());
      start = i + 1;
    }
  }
  out.push(pipeline.slice(start).trim());
  return out;
}

const empty = (v: Value): boolean =>
  v === undefined || v === null || v === false || v === 0 || v === '' || (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0);

function field(value: Value, path: readonly string[]): Value {
  let current = value;
  for (const name of path) {
    if (current === undefined || current === null) return undefined;
    if (typeof current !== 'object') throw new TemplateError(`cannot read .${name} of ${JSON.stringify(current)}`);
    current = (current as Record<string, Value>)[name];
  }
  return current;
}

const text = (v: Value): string => {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return v === undefined || v === null ? '' : JSON.stringify(v);
};
const number = (v: Value): number => {
  const n = typeof v === 'number' ? v : Number(text(v));
  if (!Number.isFinite(n)) throw new TemplateError(`not a number: ${text(v)}`);
  return n;
};

export class Chart {
  readonly #defines = new Map<string, Node[]>();
  readonly #files = new Map<string, Node[]>();
  readonly #meta: Record<string, Value>;
  readonly defaults: Record<string, Value>;

  constructor(dir: string) {
    const meta = parseYaml(readFileSync(join(dir, 'Chart.yaml'), 'utf8')) as Record<string, Value>;
    this.#meta = { Name: meta.name, Version: meta.version, AppVersion: meta.appVersion };
    this.defaults = parseYaml(readFileSync(join(dir, 'values.yaml'), 'utf8')) as Record<string, Value>;
    for (const name of readdirSync(join(dir, 'templates')).sort()) {
      const nodes = parseTemplate(readFileSync(join(dir, 'templates', name), 'utf8'), this.#defines);
      if (!name.startsWith('_') && name.endsWith('.yaml')) this.#files.set(name, nodes);
    }
  }

  /** Each template file's output, values merged over values.yaml like `helm template --set`. */
  render(values: Record<string, Value> = {}, release = { Name: 'auth', Namespace: 'default' }): Map<string, string> {
    const root = { Values: merge(this.defaults, values), Release: { ...release, Service: 'Helm' }, Chart: this.#meta };
    const out = new Map<string, string>();
    for (const [name, nodes] of this.#files) out.set(name, this.#run(nodes, { dot: root, root, vars: new Map([['$', root]]) }));
    return out;
  }

  #run(nodes: readonly Node[], scope: Scope): string {
    let out = '';
    for (const node of nodes) {
      switch (node.kind) {
        case 'text':
          out += node.text;
          break;
        case 'action':
          out += text(this.#pipeline(node.pipeline, scope));
          break;
        case 'if': {
          const value = this.#pipeline(node.pipeline, scope);
          out += this.#run(empty(value) ? node.otherwise : node.then, scope);
          break;
        }
        case 'with': {
          const value = this.#pipeline(node.pipeline, scope);
          out += empty(value) ? this.#run(node.otherwise, scope) : this.#run(node.then, { ...scope, dot: value });
          break;
        }
        case 'range': {
          const value = this.#pipeline(node.pipeline, scope);
          if (empty(value)) break;
          const entries: [Value, Value][] = Array.isArray(value)
            ? value.map((v, i) => [i, v])
            : Object.keys(value as object)
                .sort()
                .map((k) => [k, (value as Record<string, Value>)[k]]);
          for (const [key, item] of entries) {
            const vars = new Map(scope.vars);
            if (node.vars.length === 2) {
              vars.set(node.vars[0]!, key);
              vars.set(node.vars[1]!, item);
            } else if (node.vars.length === 1) vars.set(node.vars[0]!, item);
            out += this.#run(node.body, { ...scope, dot: item, vars });
          }
          break;
        }
      }
    }
    return out;
  }

  #pipeline(pipeline: string, scope: Scope): Value {
    let result: Value;
    let first = true;
    for (const command of commands(pipeline)) {
      const [head = '', ...args] = words(command);
      const piped = first ? [] : [result];
      if (/^[a-zA-Z]\w*$/.test(head) && !['true', 'false', 'nil'].includes(head)) {
        result = this.#call(head, [...args.map((a) => this.#term(a, scope)), ...piped], scope);
      } else {
        if (args.length || piped.length) throw new TemplateError(`${head} is not a function: ${command}`);
        result = this.#term(head, scope);
      }
      first = false;
    }
    return result;
  }

  #term(word: string, scope: Scope): Value {
    if (word.startsWith('(')) return this.#pipeline(word.slice(1, -1), scope);
    if (word.startsWith('"')) return JSON.parse(word) as string;
    if (/^-?\d+$/.test(word)) return Number(word);
    if (word === 'true' || word === 'false') return word === 'true';
    if (word === 'nil') return null;
    if (word === '.') return scope.dot;
    if (word.startsWith('.')) return field(scope.dot, word.slice(1).split('.'));
    if (word.startsWith('$')) {
      const [name = '', ...path] = word.split('.');
      if (!scope.vars.has(name)) throw new TemplateError(`undefined variable ${name}`);
      return field(scope.vars.get(name), path);
    }
    throw new TemplateError(`cannot evaluate ${word}`);
  }

  #call(name: string, args: Value[], scope: Scope): Value {
    const arity = (n: number): void => {
      if (args.length !== n) throw new TemplateError(`${name} takes ${n} arguments, got ${args.length}`);
    };
    switch (name) {
      case 'include': {
        arity(2);
        const body = this.#defines.get(text(args[0]));
        if (!body) throw new TemplateError(`no template "${text(args[0])}"`);
        return this.#run(body, { dot: args[1], root: scope.root, vars: new Map([['$', args[1]]]) });
      }
      case 'quote':
        arity(1);
        return JSON.stringify(text(args[0]));
      case 'toYaml':
        arity(1);
        return toYaml(args[0]).replace(/\n$/, '');
      case 'nindent':
      case 'indent': {
        arity(2);
        const pad = ' '.repeat(number(args[0]));
        const indented = text(args[1])
          .split('\n')
          .map((line) => pad + line)
          .join('\n');
        return name === 'nindent' ? `\n${indented}` : indented;
      }
      case 'default':
        arity(2);
        return empty(args[1]) ? args[0] : args[1];
      case 'required':
        arity(2);
        if (empty(args[1])) throw new TemplateError(text(args[0]));
        return args[1];
      case 'fail':
        arity(1);
        throw new TemplateError(text(args[0]));
      case 'trunc':
        arity(2);
        return text(args[1]).slice(0, number(args[0]));
      case 'trimSuffix': {
        arity(2);
        const [suffix, s] = [text(args[0]), text(args[1])];
        return suffix && s.endsWith(suffix) ? s.slice(0, -suffix.length) : s;
      }
      case 'printf': {
        const [format, ...rest] = args;
        let k = 0;
        return text(format).replace(/%[sdv]/g, () => text(rest[k++]));
      }
      case 'add':
        return args.reduce<number>((sum, v) => sum + number(v), 0);
      case 'int':
        arity(1);
        return Math.trunc(number(args[0]));
      case 'not':
        arity(1);
        return empty(args[0]);
      case 'and':
        return args.find((v) => empty(v)) ?? args.at(-1);
      case 'or':
        return args.find((v) => !empty(v)) ?? args.at(-1);
      case 'eq':
        arity(2);
        return args[0] === args[1];
      case 'ne':
        arity(2);
        return args[0] !== args[1];
      case 'ge':
      case 'gt':
      case 'le':
      case 'lt': {
        arity(2);
        const [a, b] = [number(args[0]), number(args[1])];
        return name === 'ge' ? a >= b : name === 'gt' ? a > b : name === 'le' ? a <= b : a < b;
      }
      default:
        throw new TemplateError(`function ${name} is not supported here`);
    }
  }
}

function merge(base: Record<string, Value>, over: Record<string, Value>): Record<string, Value> {
  const out: Record<string, Value> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const current = out[key];
    out[key] =
      value && typeof value === 'object' && !Array.isArray(value) && current && typeof current === 'object' && !Array.isArray(current)
        ? merge(current as Record<string, Value>, value as Record<string, Value>)
        : value;
  }
  return out;
}
