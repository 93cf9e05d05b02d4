#!/usr/bin/env node
// Runs spec files with node:test and the tsx loader: every spec under spec/, or the files and
// directories named on the command line (a directory stands for every *.spec.ts under it).
//
// Each file runs in a process (group) of its own, two at a time, under a time limit: a file
// still running after RAKE_SPEC_FILE_TIMEOUT seconds (default 600) is killed, with everything
// it started in its process group, and fails. A file's output is printed in one piece when it
// ends, so two files never interleave. The run fails when any file fails, times out or exits
// without node:test's summary, and when no test ran at all (a path that holds no spec, a
// file that registers no test). Its last line is the total: `specs: N passed, N failed`.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { isAbsolute, join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const DEFAULT_FILE_TIMEOUT_S = 600;
const PARALLEL = 2;

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

/** @param {string} arg @returns {string[]} the spec files `arg` names */
function expand(arg) {
  const full = isAbsolute(arg) ? arg : join(root, arg);
  if (!existsSync(full)) {
    console.error(`run-specs: ${arg}: no such file or directory`);
    process.exit(1);
  }
  return statSync(full).isDirectory() ? findSpecs(full) : [relative(root, full)];
}

/** @returns {number} the per-file limit in seconds, from RAKE_SPEC_FILE_TIMEOUT */
function fileTimeout() {
  const raw = process.env.RAKE_SPEC_FILE_TIMEOUT;
  if (raw === undefined || raw === '') return DEFAULT_FILE_TIMEOUT_S;
  const seconds = Number(raw);
  if (!Number.isFinite(seconds) || seconds <= 0) {
    console.error(
      `run-specs: RAKE_SPEC_FILE_TIMEOUT=${raw}: expected a number of seconds above 0 (default ${DEFAULT_FILE_TIMEOUT_S})`,
    );
    process.exit(1);
  }
  return seconds;
}

const args = process.argv.slice(2);
const files = [...new Set(args.length > 0 ? args.flatMap(expand) : findSpecs(join(root, 'spec')))];
if (files.length === 0) {
  console.error(
    `run-specs: no spec files (*.spec.ts) under ${args.length > 0 ? args.join(', ') : 'spec/'}`,
  );
  process.exit(1);
}
const limitS = fileTimeout();

/** @type {Set<import('node:child_process').ChildProcess>} */
const running = new Set();
const killGroup = (/** @type {import('node:child_process').ChildProcess} */ child) => {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
  } catch {
    // Gone already.
  }
};
for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM'])) {
  process.once(signal, () => {
    for (const child of running) killGroup(child);
    process.exit(130);
  });
}

/**
 * The last value of `ℹ <name> N` in node:test's spec-reporter summary, or undefined.
 * @param {string} text @param {string} name
 */
function summaryValue(text, name) {
  const all = [...text.matchAll(new RegExp(`^ℹ ${name} (\\d+)$`, 'gm'))];
  const last = all.at(-1);
  return last ? Number(last[1]) : undefined;
}

/**
 * @param {string} file
 * @returns {Promise<{ file: string, ok: boolean, tests: number, pass: number, fail: number, skipped: number, note?: string }>}
 */
function runFile(file) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--test-reporter=spec', '--test-reporter-destination=stdout', file],
      // Its own process group: on a timeout, what the file started goes with it.
      { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
    );
    running.add(child);
    /** @type {Buffer[]} */
    const output = [];
    child.stdout.on('data', (c) => output.push(c));
    child.stderr.on('data', (c) => output.push(c));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child);
    }, limitS * 1000);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      running.delete(child);
      // The file's process is gone; anything it left in its group goes too.
      killGroup(child);
      const text = Buffer.concat(output).toString('utf8');
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      const tests = summaryValue(text, 'tests');
      const pass = summaryValue(text, 'pass') ?? 0;
      const fail = (summaryValue(text, 'fail') ?? 0) + (summaryValue(text, 'cancelled') ?? 0);
      const skipped = (summaryValue(text, 'skipped') ?? 0) + (summaryValue(text, 'todo') ?? 0);
      let note;
      if (timedOut) {
        note = `TIMED OUT after ${limitS} s (RAKE_SPEC_FILE_TIMEOUT): killed with its process group; the output above is all it printed`;
      } else if (tests === undefined && code === 0) {
        note = 'ran no test (it registered none, so node:test printed no summary)';
      } else if (tests === undefined) {
        note = `exited (${signal ?? `status ${code}`}) without node:test's summary`;
      } else if (tests === 0) {
        note = 'ran no test';
      } else if (code !== 0 && fail === 0) {
        note = `exited with status ${code ?? signal} although no test failed`;
      }
      const ok = note === undefined && code === 0 && fail === 0;
      process.stdout.write(`\n── ${file} (${seconds} s)\n${text}`);
      if (note !== undefined) process.stdout.write(`run-specs: ${file}: ${note}\n`);
      resolve({ file, ok, tests: tests ?? 0, pass, fail, skipped, note });
    });
  });
}

const queue = [...files];
/** @type {Awaited<ReturnType<typeof runFile>>[]} */
const results = [];
await Promise.all(
  Array.from({ length: Math.min(PARALLEL, queue.length) }, async () => {
    for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
      results.push(await runFile(file));
    }
  }),
);

const total = (/** @type {'tests' | 'pass' | 'fail' | 'skipped'} */ key) =>
  results.reduce((n, r) => n + r[key], 0);
const failedFiles = results.filter((r) => !r.ok);
// A file that failed without a failing test (timeout, crash, no test) counts as one failure.
const failed = total('fail') + failedFiles.filter((r) => r.fail === 0).length;
console.log(`\nrun-specs: ${results.length} file(s), ${total('tests')} test(s)`);
for (const r of failedFiles) console.log(`  failed: ${r.file}${r.note ? ` (${r.note})` : ''}`);
if (total('tests') === 0) console.log('run-specs: no test ran');
console.log(`specs: ${total('pass')} passed, ${failed} failed, ${total('skipped')} skipped`);
process.exit(failedFiles.length === 0 && total('tests') > 0 ? 0 : 1);
