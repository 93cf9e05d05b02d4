// How a job's first process gets into its cgroup (src/server/spawn-helper.ts): created there
// by clone3(CLONE_INTO_CGROUP), so the helper never moves between cgroups (each move waits
// for an RCU grace period: 4–8 ms on every job's path once the hierarchy has been quiet);
// moved there only where clone3 cannot (RAKE_CLONE_INTO_CGROUP=0 stands in for such a
// kernel). Either way the job runs wholly inside its own cgroup, with the same start-up as
// posix_spawn gave it. Real cgroups (root or a delegated cgroup2 subtree), real processes.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { type Logger, pino } from 'pino';
import { createContainment } from '../../src/server/containment.js';
import {
  createLauncher,
  HelperLauncher,
  type JobProcess,
  type Launcher,
} from '../../src/server/launcher.js';
import { collect } from './support.js';

const T = { timeout: 30_000 };
const silent = pino({ level: 'silent' });

/** Why cgroups cannot be used here, or undefined when they can. */
const noCgroups: string | undefined = await createContainment('cgroup', silent).then(
  async (c) => {
    await c.close();
    return undefined;
  },
  (err: unknown) => (err as Error).message,
);

async function run(
  launcher: Launcher,
  command: string,
  cwd: string,
): Promise<{ job: JobProcess; out: string; err: string; status: number | string }> {
  const job = await launcher.launch(command, cwd);
  const [out, err, status] = await Promise.all([
    collect(job.stdout),
    collect(job.stderr),
    job.exited,
  ]);
  return { job, out, err, status };
}

/** The cgroup v2 path in a `/proc/PID/cgroup` text. */
const v2 = (text: string) =>
  text
    .split('\n')
    .find((l) => l.startsWith('0::'))
    ?.slice(3);

for (const mode of ['clone3', 'moved'] as const) {
  describe(`a job enters its cgroup: ${mode}`, () => {
    let launcher: Launcher;
    let dir: string;
    const saved = process.env.RAKE_CLONE_INTO_CGROUP;
    before(async () => {
      if (noCgroups !== undefined) return;
      dir = await mkdtemp(join(tmpdir(), 'rake-cgroup-entry-'));
      // Two directories first on PATH, each with a program of the same name: the first's
      // cannot be run (no x bit), so execvp passes it over and runs the second's.
      for (const [sub, perm] of [
        ['noexec', 0o644],
        ['exec', 0o755],
      ] as const) {
        await mkdir(join(dir, sub));
        await writeFile(join(dir, sub, 'rake-path-probe'), `#!/bin/sh\necho ${sub} "$@"\n`, {
          mode: perm,
        });
      }
      // The helper reads its environment once it runs a job: set it for this launcher only.
      const savedPath = process.env.PATH;
      process.env.PATH = `${join(dir, 'noexec')}:${join(dir, 'exec')}:${savedPath ?? ''}`;
      process.env.RAKE_CLONE_INTO_CGROUP = mode === 'moved' ? '0' : '1';
      launcher = await createLauncher('python3', silent, 'python3', 'cgroup');
      process.env.PATH = savedPath;
      if (saved === undefined) delete process.env.RAKE_CLONE_INTO_CGROUP;
      else process.env.RAKE_CLONE_INTO_CGROUP = saved;
    });
    after(async () => {
      if (noCgroups !== undefined) return;
      await launcher.close();
      await rm(dir, { recursive: true, force: true });
    });

    it(
      'a command of plain words (exec without a shell) runs inside the job cgroup',
      T,
      async (t) => {
        if (noCgroups !== undefined) return t.skip(`no cgroups here: ${noCgroups}`);
        const r = await run(launcher, 'cat /proc/self/cgroup', dir);
        assert.equal(r.status, 0, r.err);
        assert.equal(r.job.entry, mode);
        assert.match(v2(r.out) ?? '', /\/job-\d+$/, r.out);
      },
    );

    it(
      'a shell command and what it starts run inside it, in a process group of their own',
      T,
      async (t) => {
        if (noCgroups !== undefined) return t.skip(`no cgroups here: ${noCgroups}`);
        const r = await run(
          launcher,
          'cat /proc/$$/cgroup; (cat /proc/self/cgroup); ps -o pid=,pgid= -p $$',
          dir,
        );
        assert.equal(r.status, 0, r.err);
        assert.equal(r.job.entry, mode);
        const [shell, sub] = r.out.split('\n').filter((l) => l.startsWith('0::'));
        assert.match(shell ?? '', /\/job-\d+$/);
        assert.equal(sub, shell, 'a process the job started is outside its cgroup');
        const [pid, pgid] = (r.out.split('\n').find((l) => /^\s*\d+\s+\d+\s*$/.test(l)) ?? '')
          .trim()
          .split(/\s+/);
        assert.equal(pid, pgid, 'the job does not lead a process group of its own');
      },
    );

    it('starts with no signal ignored or blocked, as posix_spawn gave it', T, async (t) => {
      if (noCgroups !== undefined) return t.skip(`no cgroups here: ${noCgroups}`);
      const r = await run(launcher, 'grep -E "^Sig(Ign|Blk):" /proc/self/status', dir);
      assert.equal(r.status, 0, r.err);
      // Signals 1–31 (the helper ignores INT, HUP and TERM, Python ignores PIPE and XFSZ).
      const mask = (name: string) =>
        BigInt(`0x${new RegExp(`^${name}:\\s+([0-9a-f]+)$`, 'm').exec(r.out)?.[1] ?? 'ff'}`) &
        0x7fffffffn;
      assert.equal(mask('SigIgn'), 0n, r.out);
      assert.equal(mask('SigBlk'), 0n, r.out);
    });

    it(
      'a program is found along PATH as execvp finds it (one that cannot run is passed over)',
      T,
      async (t) => {
        if (noCgroups !== undefined) return t.skip(`no cgroups here: ${noCgroups}`);
        const r = await run(launcher, 'rake-path-probe a b', dir);
        assert.deepEqual([r.out, r.status, r.job.entry], ['exec a b\n', 0, mode], r.err);
      },
    );

    it('a program that is not there: the shell says so, status 127', T, async (t) => {
      if (noCgroups !== undefined) return t.skip(`no cgroups here: ${noCgroups}`);
      const r = await run(launcher, 'no-such-program-rake-ts', dir);
      assert.equal(r.status, 127);
      assert.match(r.err, /no-such-program-rake-ts: not found/);
    });

    it('jobs after a killed job run: a killed cgroup is not handed on', T, async (t) => {
      if (noCgroups !== undefined) return t.skip(`no cgroups here: ${noCgroups}`);
      // On Linux 6.18 a process cloned into a cgroup that was once killed (cgroup.kill) is
      // killed at birth: reusing that cgroup would kill every later job (status 137).
      for (let i = 0; i < 3; i++) {
        const doomed = await launcher.launch('sleep 30', dir);
        doomed.kill();
        assert.equal(await doomed.exited, 137);
        const r = await run(launcher, `echo fine ${i}`, dir);
        assert.deepEqual([r.out, r.status], [`fine ${i}\n`, 0], r.err);
      }
    });

    it('the helper stays in its own cgroup', T, async (t) => {
      if (noCgroups !== undefined) return t.skip(`no cgroups here: ${noCgroups}`);
      // The job's parent is the helper. Its `s` line, and so `launch`, comes after its move
      // back home: read its cgroup from here then, not from inside the job, which may run
      // before the helper has moved back (in `moved` mode it failed so at load 3-5).
      const job = await launcher.launch('echo $PPID; exec sleep 30', dir);
      const helperPid = await new Promise<string>((resolve) => {
        let text = '';
        job.stdout.on('data', (chunk: Buffer) => {
          text += chunk.toString();
          if (text.includes('\n')) resolve(text.trim());
        });
      });
      const out = await readFile(`/proc/${helperPid}/cgroup`, 'utf8');
      job.kill();
      assert.equal(await job.exited, 137);
      // Between jobs it is home, never in a job's cgroup.
      assert.match(v2(out) ?? '', /\/helper$/, out);
      const self = await readFile('/proc/self/cgroup', 'utf8');
      assert.notEqual(v2(self), v2(out));
    });
  });
}

describe('a job enters its cgroup: auto (RAKE_CLONE_INTO_CGROUP unset)', () => {
  it(
    'a job after a pause is cloned into it; jobs that come in a burst are moved (cheap then)',
    T,
    async (t) => {
      if (noCgroups !== undefined) return t.skip(`no cgroups here: ${noCgroups}`);
      // As on a kernel where a move after a pause waits for a grace period (most, as they boot).
      await withLauncher({ RAKE_CGROUP_MOVES: 'costly' }, silent, async (launcher, dir) => {
        // The first job: nothing started before it.
        const first = await run(launcher, 'cat /proc/self/cgroup', dir);
        assert.equal(first.job.entry, 'clone3');
        // Eight at once: the helper reads them together; each after the first follows a start
        // by microseconds, so at least one is moved, and every one runs in its own cgroup.
        const burst = await Promise.all(
          Array.from({ length: 8 }, () => run(launcher, 'cat /proc/self/cgroup', dir)),
        );
        const seen = new Set<string>();
        for (const r of burst) {
          assert.equal(r.status, 0, r.err);
          assert.ok(r.job.entry === 'clone3' || r.job.entry === 'moved', r.job.entry);
          const at = v2(r.out) ?? '';
          assert.match(at, /\/job-\d+$/, r.out);
          seen.add(at);
        }
        assert.equal(seen.size, 8, 'two jobs at once shared a cgroup');
        assert.ok(
          burst.some((r) => r.job.entry === 'moved'),
          'every job of the burst was cloned',
        );
      });
    },
  );

  it(
    'where moves are cheap (RAKE_CGROUP_MOVES=cheap), a job after a pause is moved too',
    T,
    async (t) => {
      if (noCgroups !== undefined) return t.skip(`no cgroups here: ${noCgroups}`);
      await withLauncher({ RAKE_CGROUP_MOVES: 'cheap' }, silent, async (launcher, dir) => {
        for (let i = 0; i < 2; i++) {
          const r = await run(launcher, 'cat /proc/self/cgroup', dir);
          assert.equal(r.status, 0, r.err);
          assert.equal(r.job.entry, 'moved');
          assert.match(v2(r.out) ?? '', /\/job-\d+$/, r.out);
        }
      });
    },
  );

  it(
    'the helper measures what a move costs once idle, says so, and jobs follow it',
    T,
    async (t) => {
      if (noCgroups !== undefined) return t.skip(`no cgroups here: ${noCgroups}`);
      const lines = new PassThrough();
      const said = new Promise<{ cgroupMoves: string; moveMs: number }>((resolve) => {
        let text = '';
        lines.on('data', (chunk: Buffer) => {
          text += chunk.toString();
          for (const line of text.split('\n')) {
            if (line.includes('"cgroupMoves"')) resolve(JSON.parse(line));
          }
        });
      });
      const logger = pino({ level: 'info' }, lines);
      await withLauncher({ RAKE_CGROUP_MOVES: undefined }, logger, async (launcher, dir) => {
        // Idle from its start: three probes, each 50 ms after the last move.
        const verdict = await said;
        assert.ok(['cheap', 'costly'].includes(verdict.cgroupMoves), JSON.stringify(verdict));
        assert.ok(verdict.moveMs >= 0, JSON.stringify(verdict));
        assert.ok(launcher instanceof HelperLauncher);
        assert.equal(launcher.cgroupMoves, verdict.cgroupMoves);
        const r = await run(launcher, 'cat /proc/self/cgroup', dir);
        assert.equal(r.status, 0, r.err);
        assert.equal(r.job.entry, verdict.cgroupMoves === 'cheap' ? 'moved' : 'clone3');
        assert.match(v2(r.out) ?? '', /\/job-\d+$/, r.out);
      });
    },
  );
});

/**
 * A cgroup launcher in `auto` (RAKE_CLONE_INTO_CGROUP unset), its helper started with the
 * environment changed as `vars` says, and a fresh directory: both gone after `use`.
 */
async function withLauncher(
  vars: Record<string, string | undefined>,
  logger: Logger,
  use: (launcher: Launcher, dir: string) => Promise<void>,
): Promise<void> {
  const launcher = await withEnv({ RAKE_CLONE_INTO_CGROUP: undefined, ...vars }, () =>
    createLauncher('python3', logger, 'python3', 'cgroup'),
  );
  const dir = await mkdtemp(join(tmpdir(), 'rake-cgroup-entry-'));
  try {
    await use(launcher, dir);
  } finally {
    await launcher.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Runs `make` with the environment changed as `vars` says (undefined: unset), then restores it. */
async function withEnv<T>(
  vars: Record<string, string | undefined>,
  make: () => Promise<T>,
): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const set = (values: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(values)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  set(vars);
  try {
    return await make();
  } finally {
    set(saved);
  }
}
