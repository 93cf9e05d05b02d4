// The table of Rakefiles under spec/fixtures/rakefiles/: every valid one parses to exactly
// the model in its expected.json (as `check --json` prints it), every invalid one to exactly
// the diagnostics in its expected.txt (as `check` prints them). To regenerate the expected
// files after a deliberate change, run with UPDATE_FIXTURES=1 and review the diff.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { formatDiagnostics } from '../../grammar/diagnostics.js';
import { rakefileToJson } from '../../grammar/json.js';
import { readRakefile } from '../../grammar/parse.js';

const root = new URL('../fixtures/rakefiles/', import.meta.url).pathname;
const update = process.env.UPDATE_FIXTURES === '1';

function cases(kind: 'valid' | 'invalid'): string[] {
  return readdirSync(join(root, kind)).sort();
}

/** Compares with the expected file, or (in update mode) rewrites it. */
function expectFile(path: string, actual: string): void {
  if (update) writeFileSync(path, actual);
  assert.equal(actual, readFileSync(path, 'utf8'));
}

describe('valid Rakefiles parse to the expected model', () => {
  for (const name of cases('valid')) {
    it(name, async () => {
      const dir = join(root, 'valid', name);
      const result = await readRakefile(join(dir, 'Rakefile'), { file: 'Rakefile' });
      if (!result.ok) assert.fail(formatDiagnostics(result.diagnostics, result.source));
      const json = `${JSON.stringify(rakefileToJson(result.rakefile), null, 2)}\n`;
      expectFile(join(dir, 'expected.json'), json);
    });
  }
});

describe('invalid Rakefiles get exactly the expected diagnostics', () => {
  for (const name of cases('invalid')) {
    it(name, async () => {
      const dir = join(root, 'invalid', name);
      const result = await readRakefile(join(dir, 'Rakefile'), { file: 'Rakefile' });
      assert.equal(result.ok, false, 'expected diagnostics, got a model');
      if (result.ok) return;
      expectFile(join(dir, 'expected.txt'), formatDiagnostics(result.diagnostics, result.source));
    });
  }
});
