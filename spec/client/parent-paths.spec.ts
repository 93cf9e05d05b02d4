// Requirements above the Rakefile's directory (issue 18, item 12): `requires ../a/config.h
// ../b/config.h` must never send one file silently. A rake-ts server carries their places
// (extension `cwd`: the job directory stands for the directory above, the command runs in
// the Rakefile directory's name below it), so `#include "../include/x.h"` works; a
// base-protocol host would get both under one base name, so the action fails before
// anything is sent, naming both lines; `rake-ts check` warns about it. Real servers on
// loopback, the real C compiler, real files.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ServerHandle } from '../../src/server/index.js';
import { rake } from '../cli/support.js';
import { type BaseServer, startBaseServer } from '../helpers/base-server.js';
import {
  closeAll,
  listFiles,
  only,
  project,
  removeDir,
  runAll,
  startServers,
  summary,
} from './support.js';

describe('requirements above the Rakefile directory', { timeout: 60_000 }, () => {
  let ours: ServerHandle;
  let base: BaseServer;
  let root = '';
  before(async () => {
    [ours] = (await startServers(1)) as [ServerHandle];
    base = await startBaseServer();
    root = await project({
      'a/config.h': '#define FROM_A 1\n',
      'b/config.h': '#define FROM_B 2\n',
      'include/x.h': '#define ANSWER 42\n',
      'src/main.c': '#include "../include/x.h"\nint answer(void) { return ANSWER; }\n',
      'build/keep.txt': 'here\n',
    });
  });
  after(async () => {
    await closeAll([ours, base]);
    await removeDir(root);
  });

  const build = () => join(root, 'build');

  it('a rake-ts server gets both files in their places; outputs land in the Rakefile directory', async () => {
    const text = [
      `HOSTS = 127.0.0.1:${ours.port}`,
      '',
      'all:',
      '\tremote-cat ../a/config.h ../b/config.h > both.h',
      '\t\trequires ../a/config.h ../b/config.h',
      '\tremote-cc -c ../src/main.c -o main.o && echo compiled',
      '\t\trequires ../src/main.c ../include/x.h',
      '',
    ].join('\n');
    const events = await runAll(build(), text, { embedded: false, fallback: false });
    assert.equal(summary(events).exitStatus, 0, JSON.stringify(only(events, 'action-failed')));
    assert.equal(
      await readFile(join(build(), 'both.h'), 'utf8'),
      '#define FROM_A 1\n#define FROM_B 2\n',
    );
    assert.deepEqual(
      only(events, 'output').map((e) => e.stdout.text()),
      ['compiled\n'],
    );
    // Outputs are written in the Rakefile's directory, and nothing above it changed.
    assert.deepEqual(await listFiles(build()), ['both.h', 'keep.txt', 'main.o']);
    assert.deepEqual(await listFiles(root), [
      'a/config.h',
      'b/config.h',
      'build/both.h',
      'build/keep.txt',
      'build/main.o',
      'include/x.h',
      'src/main.c',
    ]);
  });

  it('a base-protocol host: the action fails before sending, naming both lines', async () => {
    const text = `HOSTS = 127.0.0.1:${base.port}\n\nall:\n\tremote-cat config.h\n\t\trequires ../a/config.h ../b/config.h\n`;
    await writeFile(join(build(), 'Rakefile'), text);
    const events = await runAll(build(), text, { embedded: false, fallback: false });
    const [failed] = only(events, 'action-failed');
    assert.equal(failed?.reason, 'requirement-collision');
    const rakefile = join(build(), 'Rakefile');
    assert.equal(
      failed?.message,
      `requires ../a/config.h (${rakefile}:5:12) and ../b/config.h (${rakefile}:5:26) would both arrive as config.h on 127.0.0.1:${base.port}, a base-protocol host, which gets a file outside the Rakefile's directory under its base name: nothing was sent. Rename one, or run a rake-ts server there (it carries their directories)`,
    );
    assert.equal(summary(events).exitStatus, 1);
    assert.deepEqual(base.received, []);
    assert.deepEqual(base.commands, []);
  });

  it('rake-ts check warns, naming both lines', async () => {
    const text = `HOSTS = 127.0.0.1:${base.port}\n\nall:\n\tremote-cat config.h\n\t\trequires ../a/config.h ../b/config.h\n`;
    await writeFile(join(build(), 'Rakefile'), text);
    const r = await rake(build(), ['check']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /^Rakefile:5:26: warning: requires \.\.\/b\/config\.h and \.\.\/a\/config\.h \(line 5\) would both arrive as config\.h on a base-protocol host \(it gets a file outside the Rakefile's directory under its base name\); a rake-ts server carries their directories$/m,
    );
  });
});

describe('rake-ts -n with requirements above the directory', { timeout: 30_000 }, () => {
  it('says where such a file lands, on either kind of host', async () => {
    const root = await project({ 'a/config.h': 'a\n', 'build/x.c': 'x\n' });
    try {
      await writeFile(
        join(root, 'build', 'Rakefile'),
        'HOSTS = 127.0.0.1:1\n\nall:\n\tremote-cat ../a/config.h x.c\n\t\trequires ../a/config.h ./x.c\n',
      );
      const r = await rake(join(root, 'build'), ['-n']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        r.stdout,
        /sends \.\.\/a\/config\.h \(in place on a rake-ts server; as config\.h on a base-protocol host\), \.\/x\.c as x\.c\n/,
      );
    } finally {
      await removeDir(root);
    }
  });
});
