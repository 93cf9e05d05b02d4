// bin/rake-ts.js runs the bundled CLI through V8's code cache (see the comment there).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { freePort } from '../client/support.js';

const root = new URL('../../', import.meta.url).pathname;
const built = existsSync(join(root, 'dist/rake-ts.cjs'));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };

/**
 * A copy of the built program (bin/ and the bundle) in a new directory named from `prefix`,
 * removed after the suite: its runs own their cache files.
 */
function copyOfProgram(prefix: string): string {
  const home = mkdtempSync(join(tmpdir(), prefix));
  mkdirSync(join(home, 'bin'));
  mkdirSync(join(home, 'dist'));
  for (const name of ['rake-ts.js', 'early-dial.js', 'package.json']) {
    copyFileSync(join(root, 'bin', name), join(home, 'bin', name));
  }
  copyFileSync(join(root, 'dist/rake-ts.cjs'), join(home, 'dist/rake-ts.cjs'));
  // As the package is: ES modules but for bin/, which its own package.json makes CommonJS.
  writeFileSync(
    join(home, 'package.json'),
    JSON.stringify({ name: 'rake-ts', version: pkg.version, type: 'module' }),
  );
  after(() => rmSync(home, { recursive: true, force: true }));
  return home;
}

describe('the code cache of the built rake-ts', {
  skip: built ? false : 'run `npm run build` first',
}, () => {
  // A copy of the program (bin/ and the bundle), so these runs own their cache files.
  const home = copyOfProgram('rake-code-cache-');

  const rake = (args: string[]) =>
    spawnSync(process.execPath, [join(home, 'bin/rake-ts.js'), ...args], {
      encoding: 'utf8',
      cwd: home,
      env: { ...process.env, XDG_CACHE_HOME: join(home, 'xdg') },
    });
  const caches = (kind: string) =>
    readdirSync(join(home, 'dist')).filter((n) => n.endsWith(`.${kind}.v8cache`));

  it('is written beside the bundle by the first run and read by the next', () => {
    assert.deepEqual(caches('other'), []);
    const first = rake(['--version']);
    assert.equal(first.status, 0, first.stderr);
    assert.equal(first.stdout, `${pkg.version}\n`);
    const [name] = caches('other');
    assert.ok(name, 'no cache written');
    // Named by the bundle's size, time and inode, and V8's version.
    assert.match(name, /^rake-ts\.\d+-\d+-\d+-v8-[\d.a-z-]+\.other\.v8cache$/);
    const bytes = readFileSync(join(home, 'dist', name));
    const second = rake(['--version']);
    assert.equal(second.status, 0, second.stderr);
    assert.equal(second.stdout, first.stdout);
    // Accepted, so not written again.
    assert.deepEqual(readFileSync(join(home, 'dist', name)), bytes);
    assert.deepEqual(caches('other'), [name]);
  });

  it('keeps a build apart from the other commands', async () => {
    const r = rake(['check', '--help']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(caches('run').length, 0);
    writeFileSync(join(home, 'Rakefile'), `PORT = ${await freePort()}\n\nlocal:\n\techo hi\n`);
    // Nothing listens on PORT and the embedded server is allowed: the build runs.
    const build = rake([]);
    assert.equal(build.status, 0, build.stderr);
    assert.match(build.stdout, /hi\n/);
    assert.equal(caches('run').length, 1);
    // serve runs under the daemon's tier-up budget, and V8 checks a cache against the flags.
    const serve = rake(['serve', '--help']);
    assert.equal(serve.status, 0, serve.stderr);
    assert.equal(caches('serve').length, 1);
  });

  it('is replaced when V8 rejects it, and the program runs all the same', () => {
    const [name] = caches('other');
    assert.ok(name);
    const garbage = Buffer.alloc(4096, 0x5a);
    writeFileSync(join(home, 'dist', name), garbage);
    const r = rake(['--version']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `${pkg.version}\n`);
    assert.notDeepEqual(readFileSync(join(home, 'dist', name)), garbage);
  });

  it('is never one written for another bundle', () => {
    const before = caches('other');
    // Rebuilt: same length, other bytes (V8 alone would take the old cache for it).
    const bundle = join(home, 'dist/rake-ts.cjs');
    writeFileSync(bundle, readFileSync(bundle, 'latin1').replace('rake-ts', 'rake-TS'), 'latin1');
    const r = rake(['--version']);
    assert.equal(r.status, 0, r.stderr);
    const now = caches('other');
    assert.equal(now.length, 1, `one cache: ${now.join(', ')}`);
    assert.ok(!before.includes(now[0] as string), 'a new cache for the new bundle');
    // The old bundle's caches of both kinds are gone with it.
    assert.deepEqual(caches('run'), []);
  });
});

describe('the built rake-ts where its code cache cannot be written', {
  skip: built ? false : 'run `npm run build` first',
}, () => {
  // A fresh copy, as after an install: no cache anywhere yet.
  const home = copyOfProgram('rake-code-cache-ro-');

  // The name bin/rake-ts.js gives the cache of this bundle (see cachePaths there).
  const st = statSync(join(home, 'dist/rake-ts.cjs'));
  const name = `rake-ts.${st.size}-${Math.trunc(st.mtimeMs)}-${st.ino}-v8-${process.versions.v8}.other.v8cache`;
  // Where it would go beside the bundle: a directory (not empty) of that name, so neither a
  // read nor the rename of a written file succeeds there, whoever runs this (root ignores
  // a read-only mode).
  mkdirSync(join(home, 'dist', name, 'taken'), { recursive: true });

  const rake = (args: string[], cacheHome: string) =>
    spawnSync(process.execPath, [join(home, 'bin/rake-ts.js'), ...args], {
      encoding: 'utf8',
      cwd: home,
      env: { ...process.env, XDG_CACHE_HOME: cacheHome },
    });
  const leftovers = () => readdirSync(join(home, 'dist')).filter((n) => n.endsWith('.tmp'));

  it('runs without one where none can be written, and leaves nothing behind', () => {
    // The user's cache directory is a file: it cannot be made there either.
    const notADir = join(home, 'cache-is-a-file');
    writeFileSync(notADir, '');
    for (let i = 0; i < 2; i++) {
      const r = rake(['--version'], notADir);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, `${pkg.version}\n`);
      assert.equal(r.stderr, '');
    }
    assert.deepEqual(leftovers(), []);
    assert.deepEqual(readdirSync(join(home, 'dist', name)), ['taken']);
  });

  it("is kept in the user's cache directory when it cannot be beside the bundle", () => {
    const xdg = join(home, 'xdg');
    const first = rake(['--version'], xdg);
    assert.equal(first.status, 0, first.stderr);
    assert.equal(first.stdout, `${pkg.version}\n`);
    const cached = join(xdg, 'rake-ts', name);
    const bytes = readFileSync(cached);
    assert.ok(bytes.length > 0);
    const second = rake(['--version'], xdg);
    assert.equal(second.status, 0, second.stderr);
    assert.equal(second.stdout, first.stdout);
    // Read and accepted there, so not written again.
    assert.deepEqual(readFileSync(cached), bytes);
    assert.deepEqual(leftovers(), []);
  });
});
