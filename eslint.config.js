// @ts-check
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

/** Folders (or top-level files) of src/, by layer. */
const ENTRY = ['cli', 'app', 'main'];
const PROTOCOL = ['oidc', 'udap'];
const HTTP_ADAPTERS = ['http', 'interactions', 'account', 'admin', 'gateway', 'sandbox', 'maintenance'];
const STORES = ['db', 'users', 'clients', 'launch', 'directory', 'grants', 'keys', 'audit', 'seed', 'fhir-store', 'payer'];

/**
 * Files matching `files` may not import from the named folders (or top-level files) of src/; from
 * `typesOnly` they may import types.
 * @param {string} files
 * @param {string[]} forbidden
 * @param {string} why
 * @param {string[]} [typesOnly]
 */
function layer(files, forbidden, why, typesOnly = []) {
  /** @param {string[]} names */
  const pattern = (names) => `(^|/)(${names.join('|')})(/|\\.js$)`;
  return [
    {
      files: [files],
      rules: {
        '@typescript-eslint/no-restricted-imports': [
          'error',
          {
            patterns: [
              { regex: pattern(forbidden), message: `layering: ${why}` },
              ...(typesOnly.length ? [{ regex: pattern(typesOnly), allowTypeImports: true, message: `layering: ${why}` }] : []),
            ],
          },
        ],
      },
    },
  ];
}

export default defineConfig(
  { ignores: ['dist/', 'node_modules/', '.data/', 'coverage/', 'public/'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: { allowDefaultProject: ['eslint.config.js'] }, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // The bugs that matter in an auth server: forgotten awaits, unhandled cases, type-only imports kept honest.
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-confusing-void-expression': 'off',
      // Fastify plugins and hooks are async by convention whether or not they await.
      '@typescript-eslint/require-await': 'off',
      'no-console': 'error',
      eqeqeq: ['error', 'always'],
    },
  },
  // The layers (docs/architecture.md): dependencies point down only. Entry (main, cli, app) → HTTP adapters
  // (http, interactions, account, admin, maintenance) → protocol adapters (oidc) → policy (smart, pure) →
  // stores (db and each area's repository) → foundation (config, security, errors, paths). The policy layer
  // may read the stores' types; nothing below it imports it. test/architecture.test.ts finds cycles.
  ...layer('src/{config,security,observability}/**/*.ts', ['smart', ...PROTOCOL, ...HTTP_ADAPTERS, ...STORES, ...ENTRY], 'the foundation imports nothing of the server'),
  ...layer('src/{errors,paths}.ts', ['smart', ...PROTOCOL, ...HTTP_ADAPTERS, ...STORES, ...ENTRY], 'the foundation imports nothing of the server'),
  ...layer(`src/{${STORES.join(',')}}/**/*.ts`, ['smart', ...PROTOCOL, ...HTTP_ADAPTERS, ...ENTRY], 'a store uses the database and other stores only'),
  ...layer('src/smart/**/*.ts', [...PROTOCOL, ...HTTP_ADAPTERS, ...ENTRY], 'the policy layer is pure: types of the stores only', STORES),
  ...layer('src/oidc/**/*.ts', [...HTTP_ADAPTERS, ...ENTRY], 'oidc-provider\'s seams sit below the HTTP adapters'),
  // UDAP (trust of certificates, trusted registration) sits beside oidc; oidc's client adapter uses it, never the reverse.
  ...layer('src/udap/**/*.ts', ['oidc', ...HTTP_ADAPTERS, ...ENTRY], 'UDAP is a protocol adapter below the HTTP adapters, and oidc-provider\'s seams call it'),
  ...layer(`src/{${HTTP_ADAPTERS.filter((d) => d !== 'maintenance').join(',')}}/**/*.ts`, ENTRY, 'adapters are wired by the entry, never the reverse'),
  ...layer('src/maintenance.ts', ENTRY, 'adapters are wired by the entry, never the reverse'),
  // The embedded FHIR server (the sandbox's, the gateway tests' upstream) is an upstream like any other.
  ...layer('src/fhir/**/*.ts', ['smart', ...PROTOCOL, ...HTTP_ADAPTERS, ...STORES, ...ENTRY], 'the embedded FHIR server stands alone: the gateway knows it only as an upstream'),
  {
    // Benchmarks and scripts report on the terminal.
    files: ['bench/**/*.ts', 'scripts/**/*.ts'],
    rules: { 'no-console': 'off' },
  },
  {
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-floating-promises': ['error', { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'before', 'after', 'beforeEach', 'afterEach'] }] }],
    },
  },
);
