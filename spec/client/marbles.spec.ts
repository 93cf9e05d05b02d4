// Marble tests: selection, timeouts, retries and cancellation with scripted hosts in
// virtual time. The TCP transport is tested against real servers in the e2e specs.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { filter, map, type Observable } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { type Endpoint, hostKey } from '../../src/client/endpoint.js';
import { JobError } from '../../src/client/errors.js';
import type { RakeEvent } from '../../src/client/events.js';
import { ActionOutput } from '../../src/client/output.js';
import { type CostProbe, pollCosts } from '../../src/client/poll.js';
import { run } from '../../src/client/run.js';
import type { JobProgress, Transport } from '../../src/client/transport.js';
import { model } from './helpers.js';

const scheduler = () =>
  new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

/** Cost marbles: `c` connected, a digit the cost. */
const COST_VALUES: Record<string, CostProbe> = {
  c: { type: 'connected' },
  ...Object.fromEntries([...'0123456789'].map((d) => [d, { type: 'cost', cost: Number(d) }])),
};

/** Job marbles: `c` connected, `u` uploaded, `s` success with stdout, `f` failure reply. */
const JOB_VALUES: Record<string, JobProgress> = {
  c: { type: 'connected' },
  u: { type: 'uploaded', files: 0, bytes: 0 },
  s: { type: 'replied', ok: true, stdout: ActionOutput.of('out\n'), files: false },
  f: { type: 'replied', ok: false, stderr: 'boom\n', exitStatus: 2 },
};

const LOST = new JobError('host-lost', 'connection lost before the reply: ECONNRESET', true);

/** One line per event, enough to read a run's story from a marble. */
function story(e: RakeEvent): string {
  switch (e.type) {
    case 'cost-polled':
      return `poll ${e.cost.host}=${e.cost.cost ?? e.cost.error}`;
    case 'host-chosen':
      return `chose ${e.host} (${e.reason})`;
    case 'action-succeeded':
      return `ok ${e.action.actionId} on ${e.host}`;
    case 'action-failed':
      return `failed ${e.action.actionId}: ${e.reason}${e.host ? ` on ${e.host}` : ''}`;
    case 'action-retried':
      return `retry after ${e.fromHost}`;
    case 'action-cancelled':
      return `cancelled ${e.action.actionId}`;
    case 'fallback-local':
      return `fallback to ${e.host}`;
    case 'done':
      return `done ${e.summary.exitStatus}`;
    default:
      return e.type;
  }
}

/** A transport whose hosts follow marbles; `jobs[host]` may be a list, one per job. */
function scripted(
  ts: TestScheduler,
  costs: Record<string, string>,
  jobs: Record<string, string | string[]>,
): Transport & {
  jobCalls: string[];
  costCalls: string[];
  jobs: Map<string, Observable<JobProgress>[]>;
} {
  const costCalls: string[] = [];
  const made = new Map<string, Observable<JobProgress>[]>();
  const calls: string[] = [];
  const next = new Map<string, number>();
  return {
    jobCalls: calls,
    costCalls,
    jobs: made,
    queryCost: (e: Endpoint) => {
      costCalls.push(hostKey(e));
      return ts.createColdObservable(costs[hostKey(e)] ?? '-', COST_VALUES);
    },
    sendJob: (e: Endpoint) => {
      const host = hostKey(e);
      calls.push(host);
      const script = jobs[host] ?? '-';
      const list = Array.isArray(script) ? script : [script];
      const i = next.get(host) ?? 0;
      next.set(host, i + 1);
      const job = ts.createColdObservable(
        list[Math.min(i, list.length - 1)] as string,
        JOB_VALUES,
        LOST,
      );
      made.set(host, [...(made.get(host) ?? []), job]);
      return job;
    },
  };
}

const opts = (ts: TestScheduler, transport: Transport) => ({
  scheduler: ts,
  transport,
  connectTimeoutMs: 10,
  costTimeoutMs: 10,
  startServer: () => Promise.reject(new Error('no embedded server in marble tests')),
});

describe('pollCosts (marbles)', () => {
  it('emits answers in arrival order, and a timeout as a failed result', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const hosts: Endpoint[] = ['a', 'b', 'c', 'd'].map((host) => ({ host, port: 1 }));
      const script: Record<string, string> = { a: 'c--3', b: 'c-2', c: '-', d: 'c' };
      const result = pollCosts(hosts, (e) => cold(script[e.host] as string, COST_VALUES), {
        connectTimeoutMs: 10,
        replyTimeoutMs: 5,
        scheduler: ts,
      }).pipe(map((r) => `${r.host}=${r.ok ? r.cost : r.error} ${r.rttMs}ms`));
      expectObservable(result).toBe('--ba 1ms d 4ms (c|)', {
        b: 'b:1=2 2ms',
        a: 'a:1=3 3ms',
        d: 'd:1=no answer within 5 ms 5ms',
        c: 'c:1=no connection within 10 ms 10ms',
      });
    });
  });

  it('reports a host that closes without answering', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const result = pollCosts([{ host: 'a', port: 1 }], () => cold('c-|', COST_VALUES), {
        connectTimeoutMs: 10,
        replyTimeoutMs: 10,
        scheduler: ts,
      }).pipe(map((r) => (r.ok ? r.cost : r.error)));
      expectObservable(result).toBe('--(x|)', { x: 'closed without answering' });
    });
  });
});

/** What `story` prints, by marble letter. */
const V = {
  S: 'actionset-started',
  X: 'actionset-done',
  o: 'output',
};

describe('run (marbles)', () => {
  it('picks the cheapest host; a tie goes to the host that answered first', () => {
    const ts = scheduler();
    ts.run(({ expectObservable }) => {
      const t = scripted(
        ts,
        { 'a:1': 'c--2', 'b:1': 'c-2', 'c:1': 'c---3' },
        { 'b:1': 'c 9ms u 9ms s 9ms |' },
      );
      const rakefile = model({ hosts: ['a:1', 'b:1', 'c:1'], sets: { build: ['remote-true'] } });
      expectObservable(run(rakefile, opts(ts, t)).pipe(map(story))).toBe('S-ba(ch) 26ms (okXD|)', {
        ...V,
        b: 'poll b:1=2',
        a: 'poll a:1=2',
        c: 'poll c:1=3',
        h: 'chose b:1 (tie-first-answer)',
        k: 'ok build#0 on b:1',
        D: 'done 0',
      });
    });
  });
});

describe('run (marbles): selection', () => {
  it('takes a host whose effective cost is 0 without waiting for slower hosts', () => {
    const ts = scheduler();
    ts.run(({ expectObservable, expectSubscriptions }) => {
      const slow = ts.createColdObservable('c-----5', COST_VALUES);
      const t = scripted(ts, { 'a:1': 'c0' }, { 'a:1': 'c 9ms s|' });
      const transport: Transport = {
        ...t,
        queryCost: (e) => (e.host === 'b' ? slow : t.queryCost(e)),
      };
      const rakefile = model({ hosts: ['a:1', 'b:1'], sets: { build: ['remote-true'] } });
      expectObservable(run(rakefile, opts(ts, transport)).pipe(map(story))).toBe(
        'S(ah) 7ms (okXD|)',
        {
          ...V,
          a: 'poll a:1=0',
          h: 'chose a:1 (first-idle)',
          k: 'ok build#0 on a:1',
          D: 'done 0',
        },
      );
      expectSubscriptions(slow.subscriptions).toBe('^!');
    });
  });

  it('spreads parallel actions over equally idle hosts: 8 over 4 is 2 each', () => {
    for (const [actions, each] of [
      [8, 2],
      [64, 16],
    ] as const) {
      const ts = scheduler();
      const costs = { 'a:1': 'c0', 'b:1': 'c0', 'c:1': 'c-0', 'd:1': 'c--0' };
      const job = 'c 99ms s|';
      const t = scripted(ts, costs, { 'a:1': job, 'b:1': job, 'c:1': job, 'd:1': job });
      ts.run(({ expectObservable }) => {
        const rakefile = model({
          hosts: ['a:1', 'b:1', 'c:1', 'd:1'],
          sets: { build: Array.from({ length: actions }, () => 'remote-true') },
        });
        const perHost = run(rakefile, opts(ts, t)).pipe(
          filter((e) => e.type === 'done'),
          map((e) => e.summary.perHost),
        );
        // Polls answer at frames 1-3; the last job ends 101 frames after it starts.
        expectObservable(perHost).toBe('104ms (y|)', {
          y: { 'a:1': each, 'b:1': each, 'c:1': each, 'd:1': each },
        });
      });
      // All the actions joined one poll round: 4 cost connections, not 4 per action.
      assert.equal(t.costCalls.length, 4);
    }
  });
});

describe('run (marbles): retries and fallback', () => {
  const two = model({ hosts: ['a:1', 'b:1'], sets: { build: ['remote-true'] } });

  it('moves an action to the next-cheapest host when its host drops the connection', () => {
    const ts = scheduler();
    ts.run(({ expectObservable }) => {
      const t = scripted(
        ts,
        { 'a:1': 'c1', 'b:1': 'c-2' },
        { 'a:1': 'c 9ms #', 'b:1': 'c 9ms s|' },
      );
      expectObservable(run(two, opts(ts, t)).pipe(map(story))).toBe('Sa(bh) 6ms (rH) 7ms (okXD|)', {
        ...V,
        a: 'poll a:1=1',
        b: 'poll b:1=2',
        h: 'chose a:1 (cheapest)',
        r: 'retry after a:1',
        H: 'chose b:1 (retry)',
        k: 'ok build#0 on b:1',
        D: 'done 0',
      });
    });
  });

  it('fails with host-lost (exit 3) once the retries are used up', () => {
    const ts = scheduler();
    ts.run(({ expectObservable }) => {
      const t = scripted(ts, { 'a:1': 'c1', 'b:1': 'c-2' }, { 'a:1': 'c 9ms #', 'b:1': 'c 9ms #' });
      expectObservable(run(two, opts(ts, t)).pipe(map(story))).toBe('Sa(bh) 6ms (rH) 6ms (fXD|)', {
        ...V,
        a: 'poll a:1=1',
        b: 'poll b:1=2',
        h: 'chose a:1 (cheapest)',
        r: 'retry after a:1',
        H: 'chose b:1 (retry)',
        f: 'failed build#0: host-lost on b:1',
        D: 'done 3',
      });
    });
  });

  it('runs on the local server when no host answers the poll in time', () => {
    const ts = scheduler();
    ts.run(({ expectObservable }) => {
      const t = scripted(
        ts,
        { 'a:1': '-', 'localhost:6238': 'c----0|' },
        { 'localhost:6238': 'c 9ms s|' },
      );
      const one = model({ hosts: ['a:1'], sets: { build: ['remote-true'] } });
      expectObservable(run(one, opts(ts, t)).pipe(map(story))).toBe(
        'S 9ms (pF) 2ms H 10ms (okXD|)',
        {
          ...V,
          p: 'poll a:1=no connection within 10 ms',
          F: 'fallback to localhost:6238',
          H: 'chose localhost:6238 (local)',
          k: 'ok build#0 on localhost:6238',
          D: 'done 0',
        },
      );
    });
  });

  it('with fallback off, fails with no-host (exit 3)', () => {
    const ts = scheduler();
    ts.run(({ expectObservable }) => {
      const t = scripted(ts, { 'a:1': '-' }, {});
      const one = model({ hosts: ['a:1'], sets: { build: ['remote-true'] } });
      const events = run(one, { ...opts(ts, t), fallback: false }).pipe(map(story));
      expectObservable(events).toBe('S 9ms (pfXD|)', {
        ...V,
        p: 'poll a:1=no connection within 10 ms',
        f: 'failed build#0: no-host',
        D: 'done 3',
      });
    });
  });
});

describe('run (marbles): failure and cancellation', () => {
  const rakefile = model({
    hosts: ['a:1', 'b:1'],
    sets: { build: ['remote-false', 'remote-sleep 1'], next: ['remote-true'] },
  });
  const polls = {
    a: 'poll a:1=0',
    A: 'chose a:1 (first-idle)',
    b: 'poll b:1=0',
    B: 'chose b:1 (first-idle)',
  };

  it('lets the other actions finish, then stops before the next actionset (exit 1)', () => {
    const ts = scheduler();
    ts.run(({ expectObservable }) => {
      const t = scripted(
        ts,
        { 'a:1': 'c0', 'b:1': 'c0' },
        { 'a:1': 'c 9ms (f|)', 'b:1': 'c 99ms s|' },
      );
      expectObservable(run(rakefile, opts(ts, t)).pipe(map(story))).toBe(
        'S(aAabB) 3ms f 90ms (okXD|)',
        {
          ...V,
          ...polls,
          f: 'failed build#0: exit-non-zero on a:1',
          k: 'ok build#1 on b:1',
          D: 'done 1',
        },
      );
    });
  });

  it('--fail-fast cancels the other actions at once, closing their connections', () => {
    const ts = scheduler();
    const t = scripted(
      ts,
      { 'a:1': 'c0', 'b:1': 'c0' },
      { 'a:1': 'c 9ms (f|)', 'b:1': 'c 99ms s|' },
    );
    ts.run(({ expectObservable }) => {
      const events = run(rakefile, { ...opts(ts, t), failFast: true }).pipe(map(story));
      expectObservable(events).toBe('S(aAabB) 3ms (fcXD|)', {
        ...V,
        ...polls,
        f: 'failed build#0: exit-non-zero on a:1',
        c: 'cancelled build#1',
        D: 'done 1',
      });
    });
    const [job] = t.jobs.get('b:1') ?? [];
    assert.deepEqual(
      (job as unknown as { subscriptions: object[] }).subscriptions.map((s) => ({ ...s })),
      [{ subscribedFrame: 1, unsubscribedFrame: 11 }],
    );
  });

  it('unsubscribing closes every connection in flight', () => {
    const ts = scheduler();
    const t = scripted(ts, { 'a:1': 'c0' }, { 'a:1': 'c 99ms s|' });
    ts.run(({ expectObservable, expectSubscriptions }) => {
      const slowCost = ts.createColdObservable('c 99ms 5', COST_VALUES);
      const transport: Transport = {
        ...t,
        queryCost: (e) => (e.host === 'b' ? slowCost : t.queryCost(e)),
      };
      const events = run(rakefile, { ...opts(ts, transport), costTimeoutMs: 1000 }).pipe(
        map(story),
      );
      expectObservable(events, '^ 19ms !').toBe('S(aAa)', { ...V, ...polls });
      // Action 1 still waits for b's answer; action 0 runs on a. Both end at frame 20.
      expectSubscriptions(slowCost.subscriptions).toBe('^ 19ms !');
    });
    const [job] = t.jobs.get('a:1') ?? [];
    assert.deepEqual(
      (job as unknown as { subscriptions: object[] }).subscriptions.map((s) => ({ ...s })),
      [{ subscribedFrame: 1, unsubscribedFrame: 20 }],
    );
  });
});

describe('run (marbles): unreachable hosts', () => {
  it('skips a host that failed to answer in the next polls (backoff)', () => {
    const ts = scheduler();
    const t = scripted(ts, { 'a:1': '-', 'b:1': 'c-3' }, { 'b:1': 'c 9ms s|' });
    ts.run(({ expectObservable }) => {
      const rakefile = model({
        hosts: ['a:1', 'b:1'],
        sets: { first: ['remote-true'], second: ['remote-true'] },
      });
      const polls = run(rakefile, opts(ts, t)).pipe(
        filter((e) => e.type === 'cost-polled'),
        map(story),
      );
      expectObservable(polls).toBe('--b 7ms a 10ms s-B 10ms |', {
        b: 'poll b:1=3',
        a: 'poll a:1=no connection within 10 ms',
        s: 'poll a:1=skipped: no connection within 10 ms less than 5 s ago',
        B: 'poll b:1=3',
      });
    });
    assert.deepEqual(t.costCalls, ['a:1', 'b:1', 'b:1']);
  });
});

describe('run (marbles): slow hosts', () => {
  it('sends the job to a host that connected but answered too late, if none answered', () => {
    const ts = scheduler();
    const t = scripted(ts, { 'a:1': 'c', 'b:1': '-' }, { 'a:1': 'c 9ms s|' });
    ts.run(({ expectObservable }) => {
      const rakefile = model({
        hosts: ['a:1', 'b:1'],
        sets: { first: ['remote-true'], again: ['remote-true'] },
      });
      const events = run(rakefile, { ...opts(ts, t), fallback: false }).pipe(
        filter((e) => e.type === 'cost-polled' || e.type === 'host-chosen'),
        map(story),
      );
      // The slow host is asked again in the second actionset; the unreachable one is not.
      expectObservable(events).toBe('10ms (bah) 6ms s 9ms (Ah) 7ms |', {
        a: 'poll a:1=no answer within 10 ms',
        b: 'poll b:1=no connection within 10 ms',
        h: 'chose a:1 (slow-host)',
        s: 'poll b:1=skipped: no connection within 10 ms less than 5 s ago',
        A: 'poll a:1=no answer within 10 ms',
      });
    });
    assert.deepEqual(t.costCalls, ['a:1', 'b:1', 'a:1']);
  });
});
