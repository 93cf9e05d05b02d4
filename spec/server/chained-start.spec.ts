// A queued job starts in the spawn helper the moment the job before it ends
// (src/server/slots.ts, launcher.ts, spawn-helper.ts): prepared ahead of its slot, chained to
// a running job, started as the helper reaps that job, without the server in between. Real
// helper, real processes; nothing here starts a chained job but the helper itself.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { prepareJob, runJob } from '../../src/server/job.js';
import { createLauncher, type JobProcess, type Launcher } from '../../src/server/launcher.js';
import { JobSlots, type SlotHold, SlotWaitAborted } from '../../src/server/slots.js';
import { waitUntil } from '../helpers/wait.js';
import { collect } from './support.js';

const T = { timeout: 30_000 };
const silent = pino({ level: 'silent' });

/**
 * Resolves when `prepared`'s launcher starts it on its own (its `onEarlyStart`), after
 * whatever was told of it before (the job slots) has been.
 */
function earlyStart(prepared: { onEarlyStart: (() => void) | undefined }): Promise<void> {
  return new Promise((ok) => {
    const told = prepared.onEarlyStart;
    prepared.onEarlyStart = () => {
      told?.();
      ok();
    };
  });
}

/**
 * Returns once the helper has handled every request sent so far: it handles them in order,
 * so a job started after them has. (A job's end is no request: a job killed from here, its
 * cgroup killed at once, may end before the helper has read a drop sent just before; the
 * dropped job then starts and is killed at once, docs/server.md.)
 */
async function helperCaughtUp(launcher: Launcher, dir: string): Promise<void> {
  const probe = await launcher.launch('true', dir);
  await probe.exited;
}

const exists = (path: string) =>
  stat(path).then(
    () => true,
    () => false,
  );

describe('chained start', () => {
  let launcher: Launcher;
  let dir: string;
  before(async () => {
    launcher = await createLauncher('python3', silent);
    dir = await mkdtemp(join(tmpdir(), 'rake-chain-'));
  });
  after(async () => {
    await launcher.close();
    await rm(dir, { recursive: true, force: true });
  });

  describe('the spawn helper', () => {
    it('starts a chained job by itself the moment the job before it ends', T, async () => {
      const first = await launcher.launch('sleep 30', dir);
      const prepared = launcher.prepare?.(`echo $$ > next.pid; echo second`, dir);
      assert.ok(prepared, 'the helper launcher prepares jobs');
      assert.equal(first.chain?.(prepared), true);
      // Chained to a running job: nothing starts it while that job runs.
      const started = earlyStart(prepared);
      assert.equal(await exists(join(dir, 'next.pid')), false);
      first.kill();
      // The helper starts it as it reaps the first: nobody here has called `start`.
      await started;
      const second = await prepared.start();
      assert.equal(await first.exited, 137);
      const [out, status] = await Promise.all([collect(second.stdout), second.exited]);
      assert.equal(out, 'second\n');
      assert.equal(status, 0);
      // `start` after the fact returns the same job, and sends nothing more.
      assert.equal(await prepared.start(), second);
    });

    it(
      'starts a chained job at once when asked, while the job before it still runs',
      T,
      async () => {
        const first = await launcher.launch('sleep 30', dir);
        const prepared = launcher.prepare?.('echo now', dir);
        assert.ok(prepared);
        assert.equal(first.chain?.(prepared), true);
        let early = false;
        prepared.onEarlyStart = () => {
          early = true;
        };
        const second = await prepared.start();
        assert.equal(await collect(second.stdout), 'now\n');
        assert.equal(await second.exited, 0);
        assert.equal(early, false, 'started because it was asked, not by the chain');
        first.kill();
        assert.equal(await first.exited, 137);
      },
    );

    it('never runs a chained job given up before the job before it ends', T, async () => {
      const first = await launcher.launch('sleep 30', dir);
      const prepared = launcher.prepare?.('touch dropped.mark', dir);
      assert.ok(prepared);
      assert.equal(first.chain?.(prepared), true);
      prepared.drop();
      await assert.rejects(prepared.start(), /given up/);
      await helperCaughtUp(launcher, dir);
      first.kill();
      await first.exited;
      // The helper handles requests in order: a job started after the first's end has been
      // reaped shows that the dropped one would have started by now.
      const after = await launcher.launch('echo after', dir);
      assert.equal(await collect(after.stdout), 'after\n');
      await after.exited;
      assert.equal(await exists(join(dir, 'dropped.mark')), false);
    });

    it('chains nothing to a job that has ended, and one successor at most', T, async () => {
      const done = await launcher.launch('true', dir);
      await done.exited;
      const late = launcher.prepare?.('echo late', dir);
      assert.ok(late);
      assert.equal(done.chain?.(late), false);
      const running = await launcher.launch('sleep 30', dir);
      assert.equal(running.chain?.(late), true);
      const another = launcher.prepare?.('echo another', dir);
      assert.ok(another);
      // Already on its way: `late` cannot be chained twice.
      assert.equal(running.chain?.(late), false);
      another.drop();
      running.kill();
      const job = await late.start();
      assert.equal(await collect(job.stdout), 'late\n');
    });
  });

  describe('job slots', () => {
    /** Acquires a slot and starts `command` in it, telling the slot its job. */
    async function hold(
      slots: JobSlots,
      command: string,
    ): Promise<{ slot: SlotHold; job: JobProcess }> {
      const slot = await slots.acquire(new AbortController().signal);
      const job = await launcher.launch(command, dir);
      slot.running(job);
      return { slot, job };
    }

    it(
      'gives the slot to the chained job when it starts, before the ended job lets go',
      T,
      async () => {
        const slots = new JobSlots(1);
        const a = await hold(slots, 'sleep 30');
        const prepared = prepareJob(launcher, 'echo $$; sleep 30', dir);
        assert.ok(prepared);
        const b = slots.acquire(new AbortController().signal, () => prepared);
        assert.equal(slots.queued, 1);
        a.job.kill();
        // The helper started B as it reaped A: B holds the slot although A's hold is not released.
        const bSlot = await b;
        assert.equal(slots.running, 1);
        assert.equal(slots.queued, 0);
        const bJob = await prepared.start();
        bSlot.running(bJob);
        // A's release frees nothing: the slot went to B. A third waiter still waits, chained to B.
        a.slot.release();
        assert.equal(slots.running, 1);
        const third = prepareJob(launcher, 'echo third', dir);
        assert.ok(third);
        let granted = false;
        const c = slots
          .acquire(new AbortController().signal, () => third)
          .then((s) => {
            granted = true;
            return s;
          });
        assert.equal(slots.queued, 1);
        await new Promise((ok) => setImmediate(ok));
        assert.equal(granted, false);
        bJob.kill();
        const cSlot = await c;
        const cJob = await third.start();
        assert.equal(await collect(cJob.stdout), 'third\n');
        bSlot.release();
        cSlot.release();
        assert.equal(slots.running, 0);
      },
    );

    it("gives a job's slot to its chained successor, even out of queue order", T, async () => {
      // Two slots: B (the head) is chained to A, the older job, and C to A2.
      const slots = new JobSlots(2);
      const a = await hold(slots, 'sleep 30');
      const a2 = await hold(slots, 'sleep 30');
      const pb = prepareJob(launcher, 'echo b', dir);
      const pc = prepareJob(launcher, 'echo c', dir);
      assert.ok(pb && pc);
      let bGranted = false;
      const b = slots
        .acquire(new AbortController().signal, () => pb)
        .then((s) => {
          bGranted = true;
          return s;
        });
      const c = slots.acquire(new AbortController().signal, () => pc);
      // A2's hold let go of before the helper told of C's start: its slot goes to C, chained
      // to it, not to the head of the queue.
      a2.slot.release();
      const cSlot = await c;
      const cJob = await pc.start();
      assert.equal(await collect(cJob.stdout), 'c\n');
      assert.equal(bGranted, false);
      assert.equal(slots.running, 2);
      // B is still chained to A: the helper starts it as A ends.
      const started = earlyStart(pb);
      a.job.kill();
      await started;
      const bSlot = await b;
      const bJob = await pb.start();
      assert.equal(await collect(bJob.stdout), 'b\n');
      a.slot.release();
      bSlot.release();
      cSlot.release();
      a2.job.kill();
      assert.equal(slots.running, 0);
    });

    it(
      'drops a chained waiter whose client leaves, and chains the next in its place',
      T,
      async () => {
        const slots = new JobSlots(1);
        const a = await hold(slots, 'sleep 30');
        const gone = prepareJob(launcher, 'touch left.mark', dir);
        const next = prepareJob(launcher, 'echo next', dir);
        assert.ok(gone && next);
        const leaving = new AbortController();
        const left = slots.acquire(leaving.signal, () => gone);
        const waits = slots.acquire(new AbortController().signal, () => next);
        leaving.abort();
        await assert.rejects(left, SlotWaitAborted);
        assert.equal(slots.queued, 1);
        await helperCaughtUp(launcher, dir);
        const started = earlyStart(next);
        a.job.kill();
        // `next` was chained to A once `gone` left: the helper starts it as A ends.
        await started;
        const slot = await waits;
        const job = await next.start();
        assert.equal(await collect(job.stdout), 'next\n');
        a.slot.release();
        slot.release();
        assert.equal(await exists(join(dir, 'left.mark')), false);
        assert.equal(slots.running, 0);
      },
    );

    it('runs a queued job through runJob with its output and status', T, async () => {
      const slots = new JobSlots(1);
      const a = await hold(slots, 'sleep 30');
      const prepared = prepareJob(launcher, 'echo out; echo err >&2; exit 4', dir);
      assert.ok(prepared);
      const waiting = slots.acquire(new AbortController().signal, () => prepared);
      a.job.kill();
      const slot = await waiting;
      const outcome = await runJob(
        {
          command: 'unused: the prepared job runs',
          cwd: dir,
          signal: new AbortController().signal,
          timeoutMs: 0,
          maxOutputBytes: 1 << 20,
          prepared: slot.prepared,
          started: (job) => slot.running(job),
        },
        launcher,
      );
      slot.release();
      a.slot.release();
      assert.equal(outcome.reason, 'exited');
      if (outcome.reason !== 'exited') return;
      assert.equal(outcome.exitCode, 4);
      assert.equal(Buffer.concat(outcome.stdout).toString(), 'out\n');
      assert.equal(outcome.stderr.toString(), 'err\n');
    });

    it('prepares only the waiters next for a slot, however long the queue', T, async () => {
      const slots = new JobSlots(1);
      const a = await hold(slots, 'sleep 30');
      let made = 0;
      const waiting = Array.from({ length: 5 }, (_, i) =>
        slots.acquire(new AbortController().signal, () => {
          made++;
          return prepareJob(launcher, `echo ${i}`, dir);
        }),
      );
      assert.equal(slots.queued, 5);
      assert.equal(made, 1, 'one running job: one waiter prepared and chained');
      a.job.kill();
      for (const [i, w] of waiting.entries()) {
        const slot = await w;
        assert.ok(slot.prepared, `waiter ${i} was prepared once next`);
        const job = await slot.prepared.start();
        slot.running(job);
        assert.equal(await collect(job.stdout), `${i}\n`);
        await job.exited;
        slot.release();
      }
      assert.equal(made, 5);
      a.slot.release();
      assert.equal(slots.running, 0);
    });

    it('prepares nothing that cannot run, nor on a launcher that cannot chain', T, async () => {
      assert.equal(prepareJob(launcher, 'echo a\0b', dir), undefined);
      const node = await createLauncher('node', silent);
      try {
        assert.equal(prepareJob(node, 'echo hi', dir), undefined);
      } finally {
        await node.close();
      }
    });

    it('runs a chained job in its own directory', T, async () => {
      const slots = new JobSlots(1);
      const a = await hold(slots, 'sleep 30');
      const prepared = prepareJob(launcher, 'pwd > where.txt', dir);
      assert.ok(prepared);
      const waiting = slots.acquire(new AbortController().signal, () => prepared);
      a.job.kill();
      const slot = await waiting;
      const job = await prepared.start();
      await job.exited;
      slot.release();
      a.slot.release();
      await waitUntil(async () => exists(join(dir, 'where.txt')), { what: 'where.txt' });
      assert.equal((await readFile(join(dir, 'where.txt'), 'utf8')).trim(), dir);
    });
  });
});
