// What the built program does before its first action: no look-ups it does not need.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { project, removeDir } from '../client/support.js';

const root = new URL('../../', import.meta.url).pathname;
const built = existsSync(join(root, 'dist/rake-ts.cjs'));

/** Preloaded: records every directory the process lists (fs.readdirSync, fs.readdir). */
const PRELOAD = `data:text/javascript,${encodeURIComponent(`
import fs from 'node:fs';
const listed = [];
const sync = fs.readdirSync;
fs.readdirSync = function (path, ...rest) { listed.push(String(path)); return sync.call(this, path, ...rest); };
const cb = fs.readdir;
fs.readdir = function (path, ...rest) { listed.push(String(path)); return cb.call(this, path, ...rest); };
process.on('exit', () => fs.writeFileSync(process.env.RAKE_LIST_REPORT, JSON.stringify(listed)));
`)}`;

describe('the start of the built program', {
  skip: built ? false : 'run `npm run build` first',
}, () => {
  let dir = '';
  after(() => removeDir(dir));

  it('lists neither the working directory nor its parents (yargs looked for a package.json)', async () => {
    dir = await project();
    writeFileSync(join(dir, 'Rakefile'), 'local:\n\techo hi\n');
    const report = join(dir, 'listed.json');
    const r = spawnSync(
      process.execPath,
      ['--import', PRELOAD, join(root, 'bin/rake-ts.js'), '--local-here', '--no-embedded', '-q'],
      { cwd: dir, encoding: 'utf8', env: { ...process.env, RAKE_LIST_REPORT: report } },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^hi$/m);
    const listed = JSON.parse(readFileSync(report, 'utf8')) as string[];
    const ancestors = new Set<string>();
    for (let d = dir; !ancestors.has(d); d = dirname(d)) ancestors.add(d);
    assert.deepEqual(
      listed.filter((p) => ancestors.has(p.replace(/\/$/, '') || '/')),
      [],
      `listed: ${listed.join(', ')}`,
    );
  });
});

/** Preloaded: records, as the process exits, every file module it required. */
const MODULES = `data:text/javascript,${encodeURIComponent(`
import fs from 'node:fs';
import { createRequire } from 'node:module';
const cache = createRequire('/').cache;
process.on('exit', () => fs.writeFileSync(process.env.RAKE_MODULES_REPORT, JSON.stringify(Object.keys(cache))));
`)}`;

describe('the loader of the built program (bin/early-dial.js)', {
  skip: built ? false : 'run `npm run build` first',
}, () => {
  let dir = '';
  after(() => removeDir(dir));

  /** Whether `rake-ts ARGS`, run in `dir` with `rakefile` as ./Rakefile, loaded it. */
  const loaded = (rakefile: string, args: string[]) => {
    writeFileSync(join(dir, 'Rakefile'), rakefile);
    const report = join(dir, 'modules.json');
    const r = spawnSync(
      process.execPath,
      [
        '--import',
        MODULES,
        join(root, 'bin/rake-ts.js'),
        ...['--no-embedded', '--no-fallback', '--connect-timeout=0.5', '-q', ...args],
      ],
      { cwd: dir, encoding: 'utf8', env: { ...process.env, RAKE_MODULES_REPORT: report } },
    );
    assert.ok(r.status !== null, r.stderr);
    const modules = JSON.parse(readFileSync(report, 'utf8')) as string[];
    return modules.some((p) => p.endsWith('/bin/early-dial.js'));
  };

  it('is loaded only for a run that may dial ahead: not for loopback hosts, no hosts, a plan', async () => {
    dir = await project();
    // 0.0.0.0: not a loopback name to the client; port 1: refused here, nothing leaves.
    const remote = 'HOSTS = 0.0.0.0:1\nall:\n\tremote-true\n';
    const loopback = 'HOSTS = 127.0.0.1:1 localhost:1 LOCALHOST\nall:\n\tremote-true\n';
    assert.equal(loaded(remote, []), true);
    assert.equal(loaded(remote, ['-n']), false);
    assert.equal(loaded(loopback, []), false);
    assert.equal(loaded('all:\n\ttrue\n', []), false);
    // A flag that names hosts or another file: the loader judges.
    assert.equal(loaded(loopback, ['--hosts', '0.0.0.0:1']), true);
    assert.equal(loaded(loopback, ['-f', 'Rakefile']), true);
  });
});
