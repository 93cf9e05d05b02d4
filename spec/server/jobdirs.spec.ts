import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { JobDirs, layoutOf } from '../../src/server/jobdirs.js';

/** Every entry under `dir`, relative, sorted, directories marked with a trailing slash. */
async function tree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .map((e) => {
      const parent = (e.parentPath ?? dir).slice(dir.length + 1);
      const name = parent === '' ? e.name : `${parent}/${e.name}`;
      return e.isDirectory() ? `${name}/` : name;
    })
    .sort();
}

describe('job directories', () => {
  let workdir: string;
  before(async () => {
    workdir = await mkdtemp(join(tmpdir(), 'rake-jobdirs-'));
  });
  after(() => rm(workdir, { recursive: true, force: true }));

  it('reuses an emptied directory, subdirectories and all, for a job that needs that layout', async () => {
    const dirs = new JobDirs(workdir, 4);
    const first = dirs.take(1);
    const inode = (await stat(first)).ino;
    await mkdir(join(first, 'include/deep'), { recursive: true });
    await writeFile(join(first, 'include/deep/a.h'), 'x');
    await writeFile(join(first, 'out.o'), 'y');
    await chmod(first, 0o777);
    await chmod(join(first, 'include'), 0o700);
    await dirs.give(first, { small: true });
    assert.deepEqual(
      (await readdir(workdir)).map((n) => n.replace(/-.*/, '')),
      ['spare'],
      'a given-back directory is spare, not job-',
    );
    // A job with another layout (here: none) gets a new, empty directory.
    const other = dirs.take(2);
    const otherInode = (await stat(other)).ino;
    assert.notEqual(otherInode, inode);
    assert.deepEqual(await tree(other), []);
    // One with the same layout gets the spare: exactly those directories, empty, fresh modes.
    const second = dirs.take(3, layoutOf(['include/deep/a.h', 'include/b.h', 'x.c']));
    assert.match(second, /\/job-3-[^/]+$/);
    assert.equal((await stat(second)).ino, inode, 'the same directory, reused');
    assert.deepEqual(await tree(second), ['include/', 'include/deep/']);
    assert.equal((await stat(second)).mode & 0o777, 0o700);
    assert.equal((await stat(join(second, 'include'))).mode & 0o777, 0o777 & ~process.umask());
    await dirs.give(second, { small: true });
    await dirs.give(other, { small: true });
    // A job with no subdirectories, or a layout nobody has, takes the empty spare.
    const third = dirs.take(4, ['elsewhere']);
    assert.equal((await stat(third)).ino, otherInode, 'the empty spare, reused');
    assert.deepEqual(await tree(third), []);
    await dirs.give(third, { small: true });
    await dirs.close();
    assert.deepEqual(await readdir(workdir), []);
  });

  it('removes a directory not known to be small, and spares beyond the bound', async () => {
    const dirs = new JobDirs(workdir, 1);
    const [a, b, c] = [dirs.take(1), dirs.take(2), dirs.take(3)];
    await writeFile(join(a, 'f'), 'x');
    await dirs.give(a); // not known small: removed
    await writeFile(join(b, 'f'), 'x');
    await dirs.give(b, { small: true }); // emptied: the one spare
    await writeFile(join(c, 'f'), 'x');
    await dirs.give(c, { small: true }); // beyond the bound of 1 spare: removed
    const left = await readdir(workdir);
    assert.equal(left.length, 1, `one spare directory: ${left.join(' ')}`);
    assert.match(left[0] ?? '', /^spare-/);
    assert.deepEqual(await readdir(join(workdir, left[0] ?? '')), []);
    await dirs.close();
    assert.deepEqual(await readdir(workdir), []);
  });

  it('layoutOf lists every parent directory once, and gives up past the bounds', () => {
    assert.deepEqual(layoutOf(['a.c', 'include/x.h', 'include/sys/y.h'])?.sort(), [
      'include',
      'include/sys',
    ]);
    assert.deepEqual(layoutOf(['main.c']), []);
    assert.equal(layoutOf(['a/b/c/d/e/f.txt']), undefined);
    assert.equal(layoutOf(Array.from({ length: 17 }, (_, i) => `d${i}/f`)), undefined);
  });
});
