// Operator jobEvents (src/client/ops/job-events.ts): a job's progress on one host becomes
// the action's events, with phase timings; a lost job is an AttemptFailure.
import { describe, it } from 'node:test';
import { catchError, map, of } from 'rxjs';
import { JobError } from '../../../src/client/errors.js';
import { type AttemptFailure, JobDeadline, jobEvents } from '../../../src/client/ops/job-events.js';
import { ActionOutput } from '../../../src/client/output.js';
import type { JobProgress } from '../../../src/client/transport.js';
import { REF, scheduler, story } from './support.js';

const P: Record<string, JobProgress> = {
  c: { type: 'connected' },
  u: { type: 'uploaded', files: 2, bytes: 10 },
  U: { type: 'uploaded', files: 0, bytes: 0, startReported: true },
  q: { type: 'queued' },
  g: { type: 'started' },
  s: { type: 'replied', ok: true, stdout: ActionOutput.of('out\n'), files: true },
  f: { type: 'replied', ok: false, stderr: 'boom\n', exitStatus: 2 },
  d: { type: 'downloaded', files: ['a.o'], bytes: 3 },
  k: {
    type: 'cached',
    key: 'k1',
    stdout: ActionOutput.of(''),
    files: ['a.o'],
    bytes: 3,
  },
};

const INFO = { attempt: 1, reason: 'cheapest' as const, costs: [], pollMs: 1, started: 0 };
const LOST = new JobError('host-lost', 'connection lost before the reply: ECONNRESET', true);

/** The events as stories, and an AttemptFailure as its kind and phases. */
const told = (ts: ReturnType<typeof scheduler>) =>
  jobEvents({ action: REF, host: 'a:1', info: INFO }, ts, 0);
const tell = map(story);
const failure = catchError((e: AttemptFailure) =>
  of(`lost ${e.error.kind} beforeReply=${e.error.beforeReply} ${JSON.stringify(e.phases)}`),
);

describe('jobEvents (marbles)', () => {
  it('connect, upload, run, download: the upload, the output and the success with its phases', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const job = cold('-c-u---s-d-|', P);
      expectObservable(job.pipe(told(ts), tell)).toBe('---u-------(os|)', {
        u: 'uploaded 2 files 2ms',
        o: 'output out\n',
        s: `ok on a:1 ${JSON.stringify({ poll: 1, connect: 1, upload: 2, run: 4, download: 4 })}`,
      });
    });
  });

  it('a host that reports queueing: queued and run are phases of their own', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const job = cold('-cU-q--g--s|', P);
      expectObservable(job.pipe(told(ts), tell)).toBe('----q--g---(os|)', {
        q: 'action-queued',
        g: 'action-started',
        o: 'output out\n',
        s: `ok on a:1 ${JSON.stringify({ poll: 1, connect: 1, upload: 1, queued: 5, run: 3, download: 1 })}`,
      });
    });
  });

  it('a failure reply is the action-failed event; losing the connection after it says nothing more', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const job = cold('-c-u--f--#', P, LOST);
      expectObservable(job.pipe(told(ts), tell)).toBe('---u--f--|', {
        u: 'uploaded 2 files 2ms',
        f: 'failed exit-non-zero on a:1',
      });
    });
  });

  it('a connection lost before the reply is an AttemptFailure with the phases it reached', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const job = cold('-c-u--#', P, LOST);
      expectObservable(job.pipe(told(ts), tell, failure)).toBe('---u--(x|)', {
        u: 'uploaded 2 files 2ms',
        x: `lost host-lost beforeReply=true ${JSON.stringify({ poll: 1, connect: 1, upload: 2, run: 3, download: 0 })}`,
      });
    });
  });

  it('the job deadline is a timeout, before the reply or (while downloading) after it', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const deadline = new JobDeadline('the job took longer than 5 ms');
      expectObservable(cold('-c---#', P, deadline).pipe(told(ts), failure)).toBe('-----(x|)', {
        x: `lost timeout beforeReply=true ${JSON.stringify({ poll: 1, connect: 1, upload: 4, run: 0, download: 0 })}`,
      });
      expectObservable(cold('-c-u-s-#', P, deadline).pipe(told(ts), tell, failure)).toBe(
        '---u---(x|)',
        {
          u: 'uploaded 2 files 2ms',
          x: `lost timeout beforeReply=false ${JSON.stringify({ poll: 1, connect: 1, upload: 2, run: 2, download: 2 })}`,
        },
      );
    });
  });

  it('a cache hit: the restore is the only phase, and the success says cached', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      expectObservable(cold('--k|', P).pipe(told(ts), tell)).toBe(
        '---s|'.replace('---s|', '---(s|)'),
        {
          s: `ok on a:1 cached k1 ${JSON.stringify({ poll: 1, connect: 0, upload: 0, run: 0, download: 3 })}`,
        },
      );
    });
  });
});
