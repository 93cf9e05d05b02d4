// Where a local action runs (issue 18, item 13): by default in a job directory of the local
// server, seeing only its `requires` files; with --local-here in the Rakefile's directory,
// as make runs recipes. The program runs in-process with captured streams; the local server
// is a real one on loopback, the commands real processes.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ServerHandle } from '../../src/server/index.js';
import { listFiles, project, removeDir, startServers } from '../client/support.js';
import { rake } from './support.js';

const root = new URL('../../', import.meta.url).pathname;
const bin = join(root, 'bin/rake-ts.js');
const built = existsSync(join(root, 'dist/rake-ts.cjs'));

describe('rake-ts --local-here', { timeout: 60_000 }, () => {
  let local: ServerHandle;
  let dir = '';
  before(async () => {
    [local] = (await startServers(1)) as [ServerHandle];
  });
  after(async () => {
    await local.close();
  });

  const setUp = async (actions: string) => {
    if (dir !== '') await removeDir(dir);
    dir = await project({ 'present.txt': 'I am here\n', 'old.o': 'stale\n' });
    await writeFile(join(dir, 'Rakefile'), `PORT = ${local.port}\n\nall:\n${actions}`);
  };
  after(async () => {
    if (dir !== '') await removeDir(dir);
  });

  it('runs local actions in the Rakefile directory: they see and change its files', async () => {
    await setUp('\tcat present.txt\n\trm -f *.o && echo made > new.txt\n');
    const r = await rake(dir, ['--local-here', '--no-embedded', '--progress=never']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^I am here$/m);
    assert.deepEqual(await listFiles(dir), ['Rakefile', 'new.txt', 'present.txt']);
    assert.equal(await readFile(join(dir, 'new.txt'), 'utf8'), 'made\n');
    // No server was involved: the summary names the place `here`.
    assert.match(r.stderr, /on 1 host \(here=2\)/);
  });

  it('without it, a local action runs in a job directory of the local server', async () => {
    await setUp('\tcat present.txt\n');
    const r = await rake(dir, ['--no-embedded', '--progress=never']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /present\.txt: No such file or directory/);
    assert.ok(existsSync(join(dir, 'old.o')));
  });

  it('a failure here is reported with its stderr and exit status; --fail-fast kills the rest', async () => {
    // The first action waits until the second has started and written its shell's pid.
    await setUp(
      '\tfor i in $(seq 500); do [ -s sleeper.pid ] && break; sleep 0.01; done; echo bad >&2; exit 4\n\techo $$ > sleeper.pid; exec sleep 30\n',
    );
    const started = Date.now();
    const r = await rake(dir, ['--local-here', '--fail-fast', '--progress=never']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bad/);
    assert.match(r.stderr, /exited with status 4 here/);
    const pid = Number(await readFile(join(dir, 'sleeper.pid'), 'utf8'));
    assert.ok(pid > 0);
    assert.throws(() => process.kill(pid, 0), /ESRCH/, 'the cancelled action’s process is gone');
    assert.ok(Date.now() - started < 25_000, 'the sleeper did not run its course');
  });

  it('the built program runs a local action here too', {
    skip: built ? false : 'run `npm run build` first',
  }, async () => {
    await setUp('\tcat present.txt\n');
    const r = spawnSync(
      process.execPath,
      [bin, '--local-here', '--no-embedded', '--progress=never'],
      {
        cwd: dir,
        encoding: 'utf8',
        timeout: 30_000,
      },
    );
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^I am here$/m);
  });

  it('--help and -n say where local actions run', async () => {
    const help = await rake(dir, ['--help']);
    assert.match(
      help.stdout.replace(/\s+/g, ' '),
      /--local-here run local actions here, in the Rakefile's directory, as make runs recipes/,
    );
    await setUp('\tcat present.txt\n\t\trequires present.txt\n');
    const plan = await rake(dir, ['-n', '--local-here']);
    assert.match(
      plan.stdout,
      /\[local \] cat present\.txt {2}# line 4, on here\n {11}reads present\.txt\n/,
    );
  });
});
