// ESLint: the recommended rules, for the package's modules (browser and Node), its tools and tests.
import js from '@eslint/js';
import globals from 'globals';

export default [
  { ignores: ['build/', 'dist/', 'node_modules/', 'test-artifacts/', '.cache/'] },
  js.configs.recommended,
  {
    languageOptions: {
      ecmaVersion: 2024,
      sourceType: 'module',
      globals: { ...globals.browser, ...globals.worker, ...globals.node },
    },
    rules: {
      'no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Parsers of untrusted text and terminal output match control characters on purpose.
      'no-control-regex': 'off',
      // Tests assign a result they check only in some branches; the rule flags that style, not bugs.
      'no-useless-assignment': 'off',
    },
  },
  {
    files: ['tests/**/*.js'],
    languageOptions: { globals: { ...globals.jest } },
  },
  {
    // Code in page.evaluate runs in the test page, which tests/browser/page.js gives these globals.
    files: ['tests/browser/*.test.js'],
    languageOptions: {
      globals: { weblora: 'readonly', log: 'readonly', setStatus: 'readonly', heartbeat: 'readonly', inspectStore: 'readonly', sha256Hex: 'readonly' },
    },
  },
];
