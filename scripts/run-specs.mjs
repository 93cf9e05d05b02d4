#!/usr/bin/env node
// Runs every spec under spec/ with node:test and the tsx loader. Node 20's `--test` does not
// expand globs, so the files are listed here explicitly. Pass file paths to run only those.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;

/** @param {string} dir @returns {string[]} */
function findSpecs(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    if (name === 'fixtures' || name === 'node_modules') continue;
    const full = join(dir, name);
    if (statSync(full).isDirectory()) out.push(...findSpecs(full));
    else if (name.endsWith('.spec.ts')) out.push(relative(root, full));
  }
  return out;
}

const args = process.argv.slice(2);
const files = args.length > 0 ? args : findSpecs(join(root, 'spec'));
if (files.length === 0) {
  console.error('run-specs: no spec files found under spec/');
  process.exit(1);
}
const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-reporter=spec', '--test-concurrency=2', ...files],
  { cwd: root, stdio: 'inherit' },
);
process.exit(result.status ?? 1);
