// The bench, perf and demo scripts' option handling (test/support/tool-args.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { headerComment } from '../support/tool-args.ts';

const REPO_ROOT = resolve(import.meta.dirname, '..', '..');

test('headerComment keeps the leading comment block, without its markers, and stops at the first code line', () => {
  const source = '// First line.\n//\n//   node x.ts [--n N]\nimport a from "b";\n// not this\n';
  assert.equal(headerComment(source), 'First line.\n\n  node x.ts [--n N]');
  assert.equal(headerComment('import a from "b";\n'), '');
});

test('a script prints its header on --help, and one line for an unknown option, exiting 0 and 2', () => {
  // bench/run.ts parses its options before it measures anything.
  const script = resolve(REPO_ROOT, 'bench', 'run.ts');
  const help = spawnSync(process.execPath, [script, '--help'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /^`npm run bench`/);
  assert.match(help.stdout, /node bench\/run\.ts/);
  const bad = spawnSync(process.execPath, [script, '--no-such-option'], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(bad.status, 2);
  assert.equal(bad.stderr, "run.ts: Unknown option '--no-such-option' (--help lists the options)\n");
  assert.equal(bad.stdout, '');
});
