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
