// scripts/run-specs.mjs: directories expand to their specs, a run with no test fails, and a
// file that hangs is killed (with what it started) and fails after the per-file time limit.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { waitUntil } from '../helpers/wait.js';
import { alive } from '../server/support.js';

const RUNNER = new URL('../../scripts/run-specs.mjs', import.meta.url).pathname;
const T = { timeout: 60_000 };

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rake-run-specs-'));
  await mkdir(join(dir, 'tree', 'deeper'), { recursive: true });
  await mkdir(join(dir, 'empty'));
  await writeFile(join(dir, 'empty', 'notes.md'), 'no spec here\n');
  const passing = "import { it } from 'node:test';\nit('passes', () => {});\n";
  await writeFile(join(dir, 'tree', 'one.spec.ts'), passing);
  await writeFile(join(dir, 'tree', 'deeper', 'two.spec.ts'), passing);
  await writeFile(join(dir, 'tree', 'helper.ts'), 'export const x = 1;\n');
  await writeFile(join(dir, 'none.spec.ts'), "import 'node:test';\n");
  await writeFile(
    join(dir, 'mixed.spec.ts'),
    "import assert from 'node:assert';\nimport { it } from 'node:test';\nit('passes', () => {});\nit('fails', () => assert.equal(1, 2));\nit.skip('skipped', () => {});\n",
  );
  // One passing test, then a child in its process group and a handle that never closes.
  await writeFile(
    join(dir, 'hangs.spec.ts'),
    [
      "import { spawn } from 'node:child_process';",
      "import { writeFileSync } from 'node:fs';",
      "import { it } from 'node:test';",
      "it('passes, then hangs', () => {",
      "  const child = spawn('sleep', ['300'], { stdio: 'ignore' });",
      `  writeFileSync(${JSON.stringify(join(dir, 'sleep.pid'))}, String(child.pid));`,
      '  setInterval(() => {}, 1000);',
      '});',
      '',
    ].join('\n'),
  );
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs the runner; resolves its exit status and output. */
function runSpecs(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [RUNNER, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString('utf8');
    });
    child.stderr.on('data', (c: Buffer) => {
      out += c.toString('utf8');
    });
    child.once('close', (status) => resolve({ status, out }));
  });
}

const lastLine = (out: string) => out.trimEnd().split('\n').at(-1);

describe('scripts/run-specs.mjs', () => {
  it('expands a directory to every *.spec.ts under it, recursively', T, async () => {
    const { status, out } = await runSpecs([join(dir, 'tree')]);
    assert.equal(status, 0, out);
    assert.match(out, /run-specs: 2 file\(s\), 2 test\(s\)/);
    assert.equal(lastLine(out), 'specs: 2 passed, 0 failed, 0 skipped');
  });

  it('fails a directory that holds no spec, and a path that does not exist', T, async () => {
    const empty = await runSpecs([join(dir, 'empty')]);
    assert.equal(empty.status, 1);
    assert.match(empty.out, /run-specs: no spec files \(\*\.spec\.ts\) under .*empty/);
    const missing = await runSpecs([join(dir, 'nowhere')]);
    assert.equal(missing.status, 1);
    assert.match(missing.out, /nowhere: no such file or directory/);
  });

  it('fails a run in which no test ran', T, async () => {
    const { status, out } = await runSpecs([join(dir, 'none.spec.ts')]);
    assert.equal(status, 1, out);
    assert.match(out, /none\.spec\.ts: ran no test/);
    assert.match(out, /run-specs: no test ran/);
    assert.equal(lastLine(out), 'specs: 0 passed, 1 failed, 0 skipped');
  });

  it(
    'counts passed, failed and skipped tests over the files, and fails on a failure',
    T,
    async () => {
      const { status, out } = await runSpecs([join(dir, 'mixed.spec.ts'), join(dir, 'tree')]);
      assert.equal(status, 1, out);
      assert.match(out, /failed: .*mixed\.spec\.ts/);
      assert.equal(lastLine(out), 'specs: 3 passed, 1 failed, 1 skipped');
    },
  );

  it(
    'kills a file that outlives RAKE_SPEC_FILE_TIMEOUT, with its process group, and fails it',
    T,
    async () => {
      const started = Date.now();
      const { status, out } = await runSpecs([join(dir, 'hangs.spec.ts'), join(dir, 'tree')], {
        RAKE_SPEC_FILE_TIMEOUT: '3',
      });
      assert.equal(status, 1, out);
      assert.match(out, /hangs\.spec\.ts: TIMED OUT after 3 s \(RAKE_SPEC_FILE_TIMEOUT\)/);
      // What the file printed before it hung is shown, and the other files still ran.
      assert.match(out, /✔ passes, then hangs/);
      assert.equal(lastLine(out), 'specs: 2 passed, 1 failed, 0 skipped');
      assert.ok(Date.now() - started < 30_000, 'the runner waited far past the limit');
      const sleeper = Number(await readFile(join(dir, 'sleep.pid'), 'utf8'));
      await waitUntil(() => !alive(sleeper), { what: `the hung file's child ${sleeper} to die` });
    },
  );

  it('refuses a RAKE_SPEC_FILE_TIMEOUT that is not a positive number of seconds', T, async () => {
    const { status, out } = await runSpecs([join(dir, 'tree')], { RAKE_SPEC_FILE_TIMEOUT: '5m' });
    assert.equal(status, 1);
    assert.match(out, /RAKE_SPEC_FILE_TIMEOUT=5m: expected a number of seconds above 0/);
  });
});
