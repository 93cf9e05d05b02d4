// Issue 18, item 16: no spec installs packages when it is loaded; whatever a spec needs is
// installed by the test set-up (scripts/ensure-test-tools.sh, run by npm test and CI).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';

const ROOT = new URL('../..', import.meta.url).pathname;
const SELF = relative(ROOT, new URL(import.meta.url).pathname);

/** Package managers and this project's install scripts, as a spec would run them. */
const INSTALLS = [
  /\bapt-get\b/,
  /\bapt install\b/,
  /\bdpkg -i\b/,
  /\bnpm (?:install|ci)\b/,
  /\bpip3? install\b/,
  /install-chromium\.sh/,
  /install-tools\.sh/,
  /ensure-test-tools\.sh['"`]\s*\]/,
];

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return e.name === 'node_modules' ? [] : sources(path);
    return /\.(?:ts|mts|js|mjs|sh)$/.test(e.name) ? [relative(ROOT, path)] : [];
  });
}

describe('the specs', () => {
  it('install nothing: no package manager or install script is run from spec/', () => {
    const found: string[] = [];
    const files = sources(join(ROOT, 'spec')).filter((f) => f !== SELF);
    assert.ok(files.length > 50, `only ${files.length} spec sources found`);
    for (const file of files) {
      const lines = readFileSync(join(ROOT, file), 'utf8').split('\n');
      for (const [i, line] of lines.entries()) {
        // Comments may name the set-up script; code may not run an installer.
        if (/^\s*(?:\/\/|\*|#)/.test(line)) continue;
        for (const pattern of INSTALLS) {
          if (pattern.test(line)) found.push(`${file}:${i + 1}: ${line.trim()}`);
        }
      }
    }
    assert.deepEqual(
      found,
      [],
      `installs belong in scripts/ensure-test-tools.sh:\n${found.join('\n')}`,
    );
  });
});
