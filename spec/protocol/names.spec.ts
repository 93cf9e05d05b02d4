import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isProtocolError, prepareInside, resolveInside } from '../../src/protocol/index.js';

const made: string[] = [];
after(() => Promise.all(made.map((d) => rm(d, { recursive: true, force: true }))));
/** A fresh temporary directory, removed after the file's tests. */
async function scratch(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

const badName = (err: unknown) => isProtocolError(err, 'bad-name');

describe('resolveInside', () => {
  it('joins relative names, dropping empty and . segments', () => {
    assert.equal(resolveInside('/job', 'a.txt'), '/job/a.txt');
    assert.equal(resolveInside('/job', 'a//./b/c.o'), '/job/a/b/c.o');
    assert.equal(resolveInside('/job', 'dir\\name'), '/job/dir\\name');
  });

  it('refuses empty, absolute, .. and NUL names', () => {
    for (const name of ['', '.', '/', '/etc/passwd', '..', '../x', 'a/../../x', 'a/..', 'a\0b']) {
      assert.throws(() => resolveInside('/job', name), badName, JSON.stringify(name));
    }
  });
});

describe('prepareInside', () => {
  it('creates parent directories inside the root', async () => {
    const root = await scratch('rake-names-');
    assert.equal(await prepareInside(root, 'a/b/c.txt'), join(root, 'a/b/c.txt'));
    await writeFile(join(root, 'a/b/c.txt'), 'x');
  });

  it('refuses to pass through a symlink or a file', async () => {
    const root = await scratch('rake-names-');
    const outside = await scratch('rake-outside-');
    await symlink(outside, join(root, 'link'));
    await writeFile(join(root, 'file'), 'x');
    await mkdir(join(root, 'real'));
    assert.throws(() => prepareInside(root, 'link/evil'), badName);
    assert.throws(() => prepareInside(root, 'file/evil'), badName);
    assert.equal(await prepareInside(root, 'real/ok'), join(root, 'real/ok'));
    // The final component may be a symlink: the receiver renames over it.
    assert.equal(await prepareInside(root, 'link'), join(root, 'link'));
  });
});
