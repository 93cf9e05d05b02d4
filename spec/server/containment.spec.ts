// Issue 17, defect 3: nothing a job starts outlives it. A job leaves a process behind with
// `setsid` and with a double fork (plus setsid), outside its process group; whichever way
// the job ends (its shell exits, its client vanishes, --job-timeout, server shutdown), with
// either spawner and either containment, every one of them is gone.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { pino } from 'pino';
import { createContainment } from '../../src/server/containment.js';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import { waitUntil } from '../helpers/wait.js';
import { alive, readPids, startServer, type TestServer } from './support.js';

const T = { timeout: 60_000 };

/** Why cgroups cannot be used here, or undefined when they can (probed once, as a server does). */
const noCgroups: string | undefined = await (async () => {
  try {
    const c = await createContainment('cgroup', pino({ level: 'silent' }));
    await c.close();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
})();

/**
 * A command that leaves two processes outside its process group — `setsid sleep 300 &`,
 * and a double fork whose grandchild calls setsid — writes their pids and its own, then
 * runs `tail`.
 */
function escaping(scratch: string, tail: string): string {
  return [
    `echo $$ > ${scratch}/shell.pid`,
    `setsid sleep 300 & echo $! > ${scratch}/setsid.pid`,
    `(setsid sh -c 'sleep 301 & echo $! > ${scratch}/double.pid; wait' &)`,
    tail,
  ].join('; ');
}

const PIDS = ['shell.pid', 'setsid.pid', 'double.pid'];

/** The pids the job wrote, once all are there. */
async function jobPids(scratch: string): Promise<number[]> {
  const pids = await readPids(scratch, PIDS);
  for (const [i, pid] of pids.entries()) assert.ok(pid > 0, `no pid in ${PIDS[i]}`);
  return pids;
}

/** The pids the job wrote, once all are there; checks the escapees really left the group. */
async function escapees(scratch: string): Promise<number[]> {
  const pids = await jobPids(scratch);
  const pgid = (pid: number) =>
    Number(
      readFileSync(`/proc/${pid}/stat`, 'utf8')
        .replace(/^.*\) /, '')
        .split(' ')[2],
    );
  const [shell, setsid, double] = pids as [number, number, number];
  // `setsid` runs setsid() only once it has started: wait for it to leave the group.
  await waitUntil(() => pgid(setsid) !== pgid(shell), { what: 'setsid sleep to leave the group' });
  await waitUntil(() => pgid(double) !== pgid(shell), { what: 'the double fork to leave it' });
  return pids;
}

async function allGone(pids: readonly number[]): Promise<void> {
  for (const pid of pids) {
    await waitUntil(() => !alive(pid), { ms: 10_000, what: `process ${pid} to be gone` });
  }
}

/** Kills what a failed test may have left. */
function cleanUp(scratch: string): void {
  for (const name of PIDS) {
    const file = join(scratch, name);
    if (!existsSync(file)) continue;
    try {
      process.kill(Number(readFileSync(file, 'utf8')), 'SIGKILL');
    } catch {
      // Gone, as it should be.
    }
  }
}

for (const containment of ['cgroup', 'tag'] as const) {
  for (const spawner of ['python3', 'node'] as const) {
    describe(`nothing a job starts outlives it (${containment}, spawner ${spawner})`, () => {
      const start = async (
        t: TestContext,
        jobTimeoutSeconds = 0,
      ): Promise<TestServer | undefined> => {
        if (containment === 'cgroup' && noCgroups !== undefined) {
          t.skip(`no cgroups here: ${noCgroups}`);
          return undefined;
        }
        const server = await startServer({ spawner, containment, jobTimeoutSeconds });
        assert.equal(server.handle.containment, containment);
        assert.equal(server.handle.spawner, spawner);
        return server;
      };

      it('when its shell exits', T, async (t) => {
        const server = await start(t);
        if (!server) return;
        const peer = await RawPeer.connect(server.port);
        try {
          // The shell waits until the double fork has written its pid, then exits.
          const tail = `while [ ! -s ${server.scratch}/double.pid ]; do sleep 0.01; done; echo done`;
          await peer.send(pkt('!C', escaping(server.scratch, tail)));
          await peer.expect(Buffer.concat([hdr('!SS  5'), Buffer.from('done\n')]), 30_000);
          await allGone(await jobPids(server.scratch));
        } finally {
          peer.destroy();
          cleanUp(server.scratch);
          await server.close();
        }
      });

      it('when its client vanishes', T, async (t) => {
        const server = await start(t);
        if (!server) return;
        const peer = await RawPeer.connect(server.port);
        try {
          await peer.send(pkt('!C', escaping(server.scratch, 'sleep 302')));
          const pids = await escapees(server.scratch);
          peer.destroy();
          await allGone(pids);
        } finally {
          peer.destroy();
          cleanUp(server.scratch);
          await server.close();
        }
      });

      it('when --job-timeout fires', T, async (t) => {
        const server = await start(t, 1);
        if (!server) return;
        const peer = await RawPeer.connect(server.port);
        try {
          await peer.send(pkt('!C', escaping(server.scratch, 'sleep 302')));
          const pids = await escapees(server.scratch);
          const first = await peer.packet(30_000);
          assert.match(first.payload.toString(), /job timed out after 1 s/);
          const second = await peer.packet();
          assert.equal(second.payload.toString(), '124');
          await allGone(pids);
        } finally {
          peer.destroy();
          cleanUp(server.scratch);
          await server.close();
        }
      });

      it('when the server shuts down', T, async (t) => {
        const server = await start(t);
        if (!server) return;
        const peer = await RawPeer.connect(server.port);
        try {
          await peer.send(pkt('!C', escaping(server.scratch, 'sleep 302')));
          const pids = await escapees(server.scratch);
          await server.handle.close({ graceSeconds: 0 });
          await allGone(pids);
        } finally {
          peer.destroy();
          cleanUp(server.scratch);
          await server.close();
        }
      });
    });
  }
}

describe('cgroups a killed server left', () => {
  it('are killed and removed by the next server that starts in the same cgroup', T, async (t) => {
    if (noCgroups !== undefined) return t.skip(`no cgroups here: ${noCgroups}`);
    const own = readFileSync('/proc/self/cgroup', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('0::'))
      ?.slice(3) as string;
    const mount = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .find((l) => l.split(' - ')[1]?.startsWith('cgroup2 '))
      ?.split(' ')[4] as string;
    // A pid that no longer runs, as a SIGKILLed server's would be.
    const dead = spawnSync('/bin/true').pid as number;
    const left = join(mount, own, `rakeserver-p${dead}-spec`);
    mkdirSync(join(left, 'job-1'), { recursive: true });
    const sleeper = spawnSync('/bin/sh', [
      '-c',
      `echo $$ > ${join(left, 'job-1', 'cgroup.procs')} || exit 1; setsid sleep 303 > /dev/null 2>&1 & echo $!`,
    ]);
    const pid = Number(sleeper.stdout.toString().trim());
    try {
      assert.ok(alive(pid));
      const server = await startServer({ containment: 'cgroup' });
      try {
        await waitUntil(() => !existsSync(left), { what: `${left} to be removed` });
        await waitUntil(() => !alive(pid), { what: `the left-over sleep ${pid} to die` });
        assert.ok(
          server.logs.some(
            (l) => l.msg === 'removed a cgroup a dead server left' && l.cgroup === left,
          ),
        );
      } finally {
        await server.close();
      }
    } finally {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone.
      }
    }
  });
});
