// The adaptive dispatch queue (issue 20): per host, how many jobs beyond its slots keep its
// slots busy through the client's own reaction, learnt from the server saying whether each
// job waited for a slot (extension `queue`). Pure state (AdaptiveQueue), then the dispatcher
// in virtual time deepening the queue of a host whose slot idled, and not of one whose jobs
// found work waiting ahead of them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Observable } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { LoadDispatcher, type Placement } from '../../src/client/dispatch.js';
import type { LoadProbe } from '../../src/client/load-stream.js';
import {
  AdaptiveQueue,
  MAX_QUEUE_DEPTH,
  MIN_QUEUE_DEPTH,
  SLACK_TO_SHALLOW,
} from '../../src/client/queue-depth.js';
import { Assignments } from '../../src/client/select.js';

const starved = { behind: true, queuedMs: 0, runMs: 2 };
const slack = { behind: true, queuedMs: 50, runMs: 2 };

describe('AdaptiveQueue (pure)', () => {
  it('deepens when a job placed behind the slots found one free; up to the maximum', () => {
    const q = new AdaptiveQueue();
    assert.equal(q.depth('a'), MIN_QUEUE_DEPTH);
    // A job placed at a free slot (not behind) says nothing, started at once or not.
    assert.equal(q.note('a', { behind: false, queuedMs: 0, runMs: 2 }), MIN_QUEUE_DEPTH);
    assert.equal(q.note('a', starved), MIN_QUEUE_DEPTH + 1);
    assert.equal(q.depth('a'), MIN_QUEUE_DEPTH + 1);
    assert.equal(q.depth('b'), MIN_QUEUE_DEPTH, 'per host');
    for (let i = 0; i < 20; i++) q.note('a', starved);
    assert.equal(q.depth('a'), MAX_QUEUE_DEPTH);
  });

  it('shallows after 4 × depth jobs in a row that waited longer than a run; a tight one resets', () => {
    const q = new AdaptiveQueue();
    q.note('a', starved);
    q.note('a', starved);
    assert.equal(q.depth('a'), 3);
    for (let i = 0; i < SLACK_TO_SHALLOW * 3 - 1; i++) q.note('a', slack);
    assert.equal(q.depth('a'), 3, 'one short of the count');
    // A job that waited, but less than a run: no slack to spare; the count starts again.
    q.note('a', { behind: true, queuedMs: 1, runMs: 2 });
    for (let i = 0; i < SLACK_TO_SHALLOW * 3 - 1; i++) q.note('a', slack);
    assert.equal(q.depth('a'), 3);
    q.note('a', slack);
    assert.equal(q.depth('a'), 2);
    for (let i = 0; i < 100; i++) q.note('a', slack);
    assert.equal(q.depth('a'), MIN_QUEUE_DEPTH);
  });
});

describe('LoadDispatcher with queue auto', () => {
  /**
   * One one-slot host `a`, idle, beating every 10 ms; 8 actions at frame 1. Each placed job
   * ends 2 frames later, saying it waited `queuedMs` for the slot. Returns [frame, action].
   */
  function placements(queue: number | 'auto', queuedMs: number): Array<[number, number]> {
    const ts = new TestScheduler((a, e) => assert.deepStrictEqual(a, e));
    const placed: Array<[number, number]> = [];
    ts.run(({ cold }) => {
      const idle: LoadProbe = {
        type: 'load',
        load: { jobs: 0, running: 0, queued: 0, slots: 1, beatMs: 10 },
      };
      // An idle load at once and every beat: the dispatcher counts its own jobs (`sincePoll`).
      const stream = cold<LoadProbe>('a 9ms a 9ms a 9ms a', { a: idle });
      const d = new LoadDispatcher(
        [{ host: 'a', port: 1 }],
        () => stream as Observable<LoadProbe>,
        new Assignments(),
        { queue, reconnectMs: 1000, scheduler: ts },
      );
      for (let i = 1; i <= 8; i++) {
        ts.schedule(() => {
          d.place().subscribe((p: Placement) => {
            placed.push([ts.now(), i]);
            if (p.kind !== 'placed') return;
            ts.schedule(() => {
              p.note({ queuedMs, runMs: 2 });
              p.assignment.release();
            }, 2);
          });
        }, 1);
      }
      ts.schedule(() => d.stop(), 30);
    });
    return placed;
  }

  const fixedOne: Array<[number, number]> = [
    [1, 1],
    [1, 2],
    [3, 3],
    [3, 4],
    [5, 5],
    [5, 6],
    [7, 7],
    [7, 8],
  ];

  it('a host whose queued jobs found the slot free gets a deeper queue at once', () => {
    // Job 2 was placed behind job 1 yet started at once (queued 0): the slot had idled. At 3
    // the depth is 2: three go (3 at the slot, 4 and 5 queued behind it); 4 and 5 idled too,
    // so at 5 the rest go at once.
    assert.deepEqual(placements('auto', 0), [
      [1, 1],
      [1, 2],
      [3, 3],
      [3, 4],
      [3, 5],
      [5, 6],
      [5, 7],
      [5, 8],
    ]);
    // A fixed queue of 1 does not learn.
    assert.deepEqual(placements(1, 0), fixedOne);
  });

  it('a host whose queued jobs waited for their slot keeps the shallow queue', () => {
    assert.deepEqual(placements('auto', 5), fixedOne);
  });
});
