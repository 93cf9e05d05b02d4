// A finished job's cgroup, empty, is kept for the next job (making and removing one cost
// about 0.4 ms of server CPU per job), and nothing of the finished job's group can reach the
// job that holds it next. Real cgroups (root or a delegated cgroup2 subtree), real processes.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { type Containment, createContainment } from '../../src/server/containment.js';
import { waitUntil } from '../helpers/wait.js';
import { alive } from './support.js';

const T = { timeout: 30_000 };

const cgroups: Containment | string = await createContainment(
  'cgroup',
  pino({ level: 'silent' }),
).catch((err: unknown) => (err as Error).message);

/** A `sleep 30` that first puts itself into the cgroup whose `cgroup.procs` is `procs`. */
function sleeperIn(procs: string): number {
  const child = spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec sleep 30', procs], {
    stdio: 'ignore',
  });
  child.unref();
  if (child.pid === undefined) throw new Error('no pid');
  return child.pid;
}

const inCgroup = (pid: number, procs: string) =>
  existsSync(procs) && readFileSync(procs, 'utf8').split('\n').includes(String(pid));

describe('job cgroups kept for the next job', () => {
  it(
    'a released empty cgroup serves the next job; the old group cannot kill into it',
    T,
    async (t) => {
      if (typeof cgroups === 'string') return t.skip(`no cgroups here: ${cgroups}`);
      const c = cgroups;
      try {
        const first = c.open(1);
        const firstPid = sleeperIn(first.procs as string);
        await waitUntil(() => inCgroup(firstPid, first.procs as string), { what: 'the process' });
        // The job's last process ends by itself, as most jobs' shells do.
        process.kill(firstPid, 'SIGKILL');
        await waitUntil(() => !inCgroup(firstPid, first.procs as string), { what: 'the exit' });
        assert.equal(await first.release(), true);

        const second = c.open(2);
        assert.equal(second.procs, first.procs, 'the empty cgroup was not reused');
        const secondPid = sleeperIn(second.procs as string);
        await waitUntil(() => inCgroup(secondPid, second.procs as string), { what: 'the process' });
        // A late kill of the finished job (a time-out or a vanished client racing its end).
        first.kill();
        await new Promise((r) => setTimeout(r, 100));
        assert.equal(alive(secondPid), true, "the first job's kill reached the second job");
        assert.equal(await second.release(), true);
        await waitUntil(() => !alive(secondPid), { what: 'the process' });
      } finally {
        await c.close();
      }
      assert.equal(existsSync(dirname(c.detail)), true);
      assert.equal(existsSync(c.detail), false, "the server's cgroup was not removed at close");
    },
  );

  it('a cgroup that had to be killed is removed, not handed on', T, async (t) => {
    if (typeof cgroups === 'string') return t.skip(`no cgroups here: ${cgroups}`);
    const c = await createContainment('cgroup', pino({ level: 'silent' }));
    try {
      const first = c.open(1);
      const pid = sleeperIn(first.procs as string);
      await waitUntil(() => inCgroup(pid, first.procs as string), { what: 'the process' });
      // Still running at release: cgroup.kill ends it. Linux 6.18 kills at birth whatever is
      // later cloned into a cgroup once killed, so that cgroup must serve no other job.
      assert.equal(await first.release(), true);
      await waitUntil(() => !alive(pid), { what: 'the process' });
      assert.equal(existsSync(dirname(first.procs as string)), false, 'the killed cgroup is left');
      const second = c.open(2);
      assert.notEqual(second.procs, first.procs, 'the killed cgroup was handed on');
      assert.equal(await second.release(), true);
    } finally {
      await c.close();
    }
  });
});
