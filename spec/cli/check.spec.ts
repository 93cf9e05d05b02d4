// `rake-ts check`: in-process through main() with captured streams, and once through the
// built binary (bin/rake-ts.js, after `npm run build`) as a real process.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { main } from '../../src/cli/main.js';
import { capture } from './support.js';

const root = new URL('../../', import.meta.url).pathname;
const fixtures = join(root, 'spec/fixtures/rakefiles');
const typical = join(fixtures, 'valid/typical');
const invalid = join(fixtures, 'invalid/all-at-once');

async function check(argv: string[], cwd = root) {
  const stdout = capture();
  const stderr = capture();
  const code = await main(['check', ...argv], {
    stdout: stdout.stream,
    stderr: stderr.stream,
    cwd,
  });
  return { code, stdout: stdout.text(), stderr: stderr.text() };
}

describe('rake-ts check', () => {
  it('reads ./Rakefile and prints a summary', async () => {
    const r = await check([], typical);
    assert.equal(r.code, 0);
    assert.equal(r.stderr, '');
    assert.equal(
      r.stdout,
      [
        'Rakefile: OK',
        '  actionsets  2',
        '  actions     4 (3 remote, 1 local)',
        '  files       7 required (6 distinct)',
        '  hosts       hostname1:6238 hostname2:6238 hostname3:6333',
        '  port        6238',
        '',
        '  actionset1  3 actions (2 remote, 1 local)',
        '  actionset2  1 action (1 remote)',
        '',
      ].join('\n'),
    );
  });

  it('--json prints the model as documented', async () => {
    const r = await check(['--json'], typical);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, readFileSync(join(typical, 'expected.json'), 'utf8'));
  });

  it('takes the Rakefile as an argument, with -f, or from -C DIR', async () => {
    const label = 'spec/fixtures/rakefiles/valid/typical/Rakefile';
    for (const argv of [
      [label],
      ['-f', label],
      ['-C', 'spec/fixtures/rakefiles/valid/typical'],
      ['-C', 'spec/fixtures/rakefiles/valid', '-f', 'typical/Rakefile'],
    ]) {
      const r = await check(argv);
      assert.equal(r.code, 0, argv.join(' '));
      assert.equal(r.stdout.split('\n')[0], `${label}: OK`);
    }
  });

  it('prints every diagnostic to stderr and exits 2 for an invalid Rakefile', async () => {
    const r = await check([], invalid);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    const expected = readFileSync(join(invalid, 'expected.txt'), 'utf8');
    assert.equal(r.stderr, `${expected}\nrake-ts check: Rakefile: 7 errors\n`);
  });

  it('--json prints the diagnostics as JSON for an invalid Rakefile', async () => {
    const r = await check(['--json'], invalid);
    assert.equal(r.code, 2);
    const json = JSON.parse(r.stdout) as {
      schemaVersion: number;
      ok: boolean;
      diagnostics: { code: string }[];
    };
    assert.equal(json.schemaVersion, 1);
    assert.equal(json.ok, false);
    assert.deepEqual(
      json.diagnostics.map((d) => d.code),
      [
        'invalid-port',
        'invalid-host',
        'requires-before-action',
        'unknown-line',
        'too-many-tabs',
        'repeated-actionset',
        'empty-actionset',
      ],
    );
  });

  it('--print prints the canonical form', async () => {
    const r = await check(['--print'], join(fixtures, 'valid/crlf'));
    assert.equal(r.code, 0);
    assert.match(
      r.stdout,
      /^PORT = 6238\nHOSTS = hostname1 hostname2 hostname3:6333\n\nactionset1:\n\techo/,
    );
  });

  it('exits 2 for a missing file, a missing -C directory, or a Rakefile named twice', async () => {
    const missing = await check(['nope/Rakefile']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^nope\/Rakefile: error: cannot read the Rakefile: no such file/);

    const noDir = await check(['-C', 'nope']);
    assert.equal(noDir.code, 2);
    assert.match(noDir.stderr, /-C nope: no such directory/);

    const twice = await check(['-f', 'a', 'b']);
    assert.equal(twice.code, 2);
    assert.match(twice.stderr, /not both/);
  });

  it('exits 2 on a usage error', async () => {
    const r = await check(['--no-such-flag']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Unknown argument/);
    const both = await check(['--json', '--print'], typical);
    assert.equal(both.code, 2);
  });

  it('--help describes the command', async () => {
    const r = await check(['--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /rake-ts check \[rakefile\]/);
    assert.match(r.stdout, /--json/);
  });
});

const bin = join(root, 'bin/rake-ts.js');
const built = existsSync(join(root, 'dist/rake-ts.cjs'));

describe('the built rake-ts binary', { skip: built ? false : 'run `npm run build` first' }, () => {
  it('checks a Rakefile and exits with its status', () => {
    const ok = spawnSync(process.execPath, [bin, 'check', '-C', typical], { encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /: OK\n/);

    const bad = spawnSync(process.execPath, [bin, 'check', '--json'], {
      cwd: invalid,
      encoding: 'utf8',
    });
    assert.equal(bad.status, 2);
    assert.match(
      bad.stderr,
      /^Rakefile:1:8: error: PORT `99999` is out of range \[invalid-port\]$/m,
    );
    assert.equal((JSON.parse(bad.stdout) as { ok: boolean }).ok, false);
  });

  it("prints package.json's version (found from the bundle in dist/)", () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
    const r = spawnSync(process.execPath, [bin, '--version'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `${pkg.version}\n`);
  });
});
