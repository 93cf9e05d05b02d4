import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { OWNER_TAG, removeStale } from '../../src/server/stale.js';

describe('directories dead servers left', () => {
  const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
  after(() => sleeper.kill('SIGKILL'));

  it('removes those tagged with a pid that no longer runs, and nothing else', async () => {
    const dead = spawn('true');
    await new Promise((ok) => dead.once('exit', ok));
    const root = await mkdtemp(join(tmpdir(), 'rake-stale-'));
    const names = {
      deadJob: `job-3-p${dead.pid}-abc`,
      deadSpare: `spare-p${dead.pid}-abc`,
      deadWorkdir: `rakeserver-p${dead.pid}-abc`,
      deadSocketDir: `rakeserver-spawn-p${dead.pid}-abc`,
      liveJob: `job-4-p${sleeper.pid}-abc`,
      ownJob: `job-5-${OWNER_TAG}-abc`,
      untagged: 'job-6-abc',
      other: `build-p${dead.pid}-abc`,
    };
    for (const name of Object.values(names))
      await mkdir(join(root, name, 'sub'), { recursive: true });
    await writeFile(join(root, `spare-p${dead.pid}-file`), 'a file, not a directory');
    const removed = await removeStale(root, pino({ level: 'silent' }));
    assert.equal(removed, 4);
    assert.deepEqual(
      (await readdir(root)).sort(),
      [names.liveJob, names.ownJob, names.untagged, names.other, `spare-p${dead.pid}-file`].sort(),
    );
    await rm(root, { recursive: true, force: true });
  });
});
