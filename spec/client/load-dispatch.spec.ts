// Choosing hosts from pushed loads (issue 20), in virtual time: each host's load stream is a
// scripted Observable; hostLoad turns it into live / lost states, chooseByLoad (pure) picks,
// and LoadDispatcher keeps each host's slots full plus a small queue. Marbles for ties, a host
// going quiet, a host coming back and two clients sharing servers. The TCP side of the
// stream is in spec/client/load-stream.spec.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EMPTY, type Observable, type SchedulerLike } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { chooseByLoad, type LoadView } from '../../src/client/choose.js';
import {
  LoadDispatcher,
  OPENING_GRACE_MIN_MS,
  type OpeningRound,
  type Placement,
} from '../../src/client/dispatch.js';
import type { Endpoint } from '../../src/client/endpoint.js';
import { type HostLoad, hostLoad, type LoadProbe } from '../../src/client/load-stream.js';
import type { CostProbe, QueryCost } from '../../src/client/poll.js';
import { Assignments } from '../../src/client/select.js';
import type { ServerLoad } from '../../src/protocol/index.js';

const scheduler = () =>
  new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

const A: Endpoint = { host: 'a', port: 1 };
const B: Endpoint = { host: 'b', port: 1 };

/** A load of `jobs` on `slots` slots, beating every 10 ms. */
const load = (jobs: number, slots = 1, beatMs = 10): ServerLoad => ({
  jobs,
  running: Math.min(jobs, slots),
  queued: Math.max(0, jobs - slots),
  slots,
  beatMs,
});
const probe = (jobs: number, slots = 1, beatMs = 10): LoadProbe => ({
  type: 'load',
  load: load(jobs, slots, beatMs),
});

const live = (host: string, jobs: number, slots = 1): HostLoad => ({
  host,
  state: 'live',
  load: load(jobs, slots),
});
const idle = { inFlight: 0, sincePoll: 0 };

describe('chooseByLoad (pure)', () => {
  it('the most free slots; a tie goes to the less loaded for its size, then the first listed', () => {
    const views: LoadView[] = [
      { load: live('a:1', 1, 2), own: idle },
      { load: live('b:1', 0, 1), own: idle },
      { load: live('c:1', 0, 1), own: idle },
    ];
    // a: 1 free of 2 (half loaded); b and c: 1 free of 1, idle: b is listed first.
    assert.deepEqual(chooseByLoad(views, { queue: 0 }), {
      kind: 'host',
      host: 'b:1',
      free: 1,
      reason: 'tie-first-listed',
    });
    assert.deepEqual(chooseByLoad(views, { queue: 0, exclude: new Set(['b:1', 'c:1']) }), {
      kind: 'host',
      host: 'a:1',
      free: 1,
      reason: 'only-host',
    });
  });

  it('ranks a host with a --cost-offset as holding that many more jobs: used last, but used', () => {
    const dear = (jobs: number): HostLoad => ({
      host: 'a:1',
      state: 'live',
      load: { ...load(jobs, 2), offset: 3 },
    });
    // a (listed first, idle, 2 free) is dearer by 3: b, with 1 of 2 slots taken, goes first.
    const views: LoadView[] = [
      { load: dear(0), own: idle },
      { load: live('b:1', 1, 2), own: idle },
    ];
    assert.deepEqual(chooseByLoad(views, { queue: 0 }), {
      kind: 'host',
      host: 'b:1',
      free: 1,
      reason: 'most-free',
    });
    // b full (no queue): a still takes the action; the offset ranks, it does not exclude.
    const full: LoadView[] = [
      { load: dear(0), own: idle },
      { load: live('b:1', 2, 2), own: idle },
    ];
    assert.deepEqual(chooseByLoad(full, { queue: 0 }), {
      kind: 'host',
      host: 'a:1',
      free: 2,
      reason: 'most-free',
    });
  });

  it('counts this client’s jobs the latest load cannot have seen, and never fewer than its own', () => {
    const views: LoadView[] = [
      // a said 0 jobs, but this client placed 2 there since: it holds 2.
      { load: live('a:1', 0, 2), own: { inFlight: 2, sincePoll: 2 } },
      // b said 1 (another client's), this client has none there.
      { load: live('b:1', 1, 2), own: idle },
    ];
    assert.deepEqual(chooseByLoad(views, { queue: 0 }), {
      kind: 'host',
      host: 'b:1',
      free: 1,
      reason: 'most-free',
    });
    // Full hosts: wait, unless the queue allows one more each.
    const full: LoadView[] = [{ load: live('a:1', 2, 2), own: idle }];
    assert.deepEqual(chooseByLoad(full, { queue: 0 }), { kind: 'wait' });
    assert.equal(chooseByLoad(full, { queue: 1 }).kind, 'host');
  });

  it('no live host: poll (none); a host not heard from yet: wait; full ones beside a polled host: poll', () => {
    const lost: HostLoad = { host: 'a:1', state: 'lost', why: 'silent' };
    assert.deepEqual(chooseByLoad([{ load: lost, own: idle }], { queue: 1 }), { kind: 'none' });
    const waiting: HostLoad = { host: 'a:1', state: 'waiting' };
    assert.deepEqual(chooseByLoad([{ load: waiting, own: idle }], { queue: 1 }), { kind: 'wait' });
    const base: HostLoad = { host: 'b:1', state: 'unsupported', why: 'base' };
    assert.deepEqual(
      chooseByLoad(
        [
          { load: live('a:1', 2, 1), own: idle },
          { load: base, own: idle },
        ],
        { queue: 1 },
      ),
      { kind: 'none' },
    );
  });
});

describe('hostLoad: a host’s load stream as states', () => {
  it('live on each load; lost after 3 silent beats; live again when it speaks', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const stream = cold<LoadProbe>('a 9ms a 49ms b', { a: probe(0), b: probe(1) });
      const states = hostLoad(A, () => stream, { reconnectMs: 100 });
      // a at 0 and 10; silent from 10: lost at 40 (3 × 10 ms); b at 60: live again; lost at 90.
      expectObservable(states, '^ 95ms !').toBe('(wa) 6ms a 29ms l 19ms b 29ms l', {
        w: { host: 'a:1', state: 'waiting' },
        a: { host: 'a:1', state: 'live', load: load(0) },
        b: { host: 'a:1', state: 'live', load: load(1) },
        l: {
          host: 'a:1',
          state: 'lost',
          why: 'went silent: no load for 0.03 s (3 beats)',
        },
      });
    });
  });

  it('sets no timer per load: a load for every job that starts or ends, one silence timer', () => {
    const ts = scheduler();
    let timers = 0;
    const counted = {
      now: () => ts.now(),
      schedule: (...args: Parameters<TestScheduler['schedule']>) => {
        timers++;
        return ts.schedule(...args);
      },
    } as SchedulerLike;
    const seen: string[] = [];
    ts.run(({ cold }) => {
      // Twenty loads a frame apart (beat 10 ms: lost 30 ms after the last, at 19).
      const stream = cold<LoadProbe>('a'.repeat(20), { a: probe(0) });
      const states = hostLoad(A, () => stream, { reconnectMs: 100, scheduler: counted });
      const sub = states.subscribe((s) => seen.push(`${ts.now()} ${s.state}`));
      ts.schedule(() => sub.unsubscribe(), 60);
    });
    assert.deepEqual(seen, [
      '0 waiting',
      ...Array.from({ length: 20 }, (_, i) => `${i} live`),
      '49 lost',
    ]);
    // One per load was 21 (switchMap to a timer per state); now the timer is moved, not reset.
    assert.ok(timers <= 3, `${timers} timers for 20 loads`);
  });

  it('a broken stream is lost and opened again; an unsupported host is never asked again', () => {
    let opened = 0;
    scheduler().run(({ cold, expectObservable }) => {
      const broken = () => {
        opened++;
        return cold<LoadProbe>('a 4ms #', { a: probe(0) }, new Error('ECONNRESET'));
      };
      expectObservable(hostLoad(A, broken, { reconnectMs: 20 }), '^ 31ms !').toBe(
        '(wa) 1ms l 19ms a 4ms l',
        {
          w: { host: 'a:1', state: 'waiting' },
          a: { host: 'a:1', state: 'live', load: load(0) },
          l: { host: 'a:1', state: 'lost', why: 'its load stream broke: ECONNRESET' },
        },
      );
      const base = cold<LoadProbe>('u|', { u: { type: 'unsupported', why: 'base' } });
      expectObservable(hostLoad(B, () => base, { reconnectMs: 20 })).toBe('(wu|)', {
        w: { host: 'b:1', state: 'waiting' },
        u: { host: 'b:1', state: 'unsupported', why: 'base' },
      });
    });
    // Opened at the start and once more after the break: the second 'live' is a new stream.
    assert.equal(opened, 2);
  });
});

/** Runs a dispatcher over scripted streams; requests at given frames; returns placements. */
function dispatch(
  ts: TestScheduler,
  streams: Record<string, Observable<LoadProbe>>,
  requests: Array<{ at: number; hold?: number; tag: string }>,
  options: { queue: number; ledger?: Assignments; endpoints?: Endpoint[] } = { queue: 0 },
): Array<[number, string, string]> {
  const placed: Array<[number, string, string]> = [];
  const endpoints = options.endpoints ?? Object.keys(streams).map((h) => ({ host: h, port: 1 }));
  const d = new LoadDispatcher(
    endpoints,
    (e) => streams[e.host] as Observable<LoadProbe>,
    options.ledger ?? new Assignments(),
    { queue: options.queue, reconnectMs: 1000, scheduler: ts },
  );
  ts.schedule(() => d.start(), 0);
  for (const r of requests) {
    ts.schedule(() => {
      d.place().subscribe((p: Placement) => {
        placed.push([ts.now(), r.tag, p.kind === 'placed' ? p.host : 'poll']);
        if (p.kind === 'placed' && r.hold !== undefined) {
          ts.schedule(() => p.assignment.release(), r.hold);
        }
      });
    }, r.at);
  }
  ts.schedule(() => d.stop(), 500);
  ts.flush();
  return placed;
}

describe('LoadDispatcher: slots kept full, plus a small queue', () => {
  it('ties go to the first listed; each host gets its slots, then its queue, then actions wait', () => {
    const ts = scheduler();
    ts.run(({ cold }) => {
      const beating = cold<LoadProbe>('a 9ms a 9ms a 9ms a 9ms a 9ms a', { a: probe(0) });
      const placed = dispatch(
        ts,
        { a: beating, b: beating },
        [
          { at: 1, tag: '1', hold: 20 },
          { at: 1, tag: '2', hold: 20 },
          { at: 1, tag: '3', hold: 20 },
          { at: 1, tag: '4', hold: 20 },
          { at: 1, tag: '5', hold: 20 },
        ],
        { queue: 1 },
      );
      // 1, 2: a slot each (a first: listed first); 3, 4: one queued on each; 5 waits until
      // the first job of ours ends (at 21), and goes where it ended.
      assert.deepEqual(placed, [
        [1, '1', 'a:1'],
        [1, '2', 'b:1'],
        [1, '3', 'a:1'],
        [1, '4', 'b:1'],
        [21, '5', 'a:1'],
      ]);
    });
  });

  it('a host going quiet is left: its actions go elsewhere; when it speaks again it gets work', () => {
    const ts = scheduler();
    ts.run(({ cold }) => {
      // a: beats at 0 and 10, then nothing until 100; b beats every 10 ms throughout.
      const a = cold<LoadProbe>('a 9ms a 89ms a 9ms a 9ms a', { a: probe(0, 4) });
      const b = cold<LoadProbe>(`${'a 9ms '.repeat(14)}a`, { a: probe(0, 1) });
      const placed = dispatch(
        ts,
        { a, b },
        [
          { at: 5, tag: 'early' },
          { at: 50, tag: 'quiet', hold: 10 },
          { at: 70, tag: 'quiet2', hold: 10 },
          { at: 105, tag: 'back' },
        ],
        { queue: 0 },
      );
      assert.deepEqual(placed, [
        [5, 'early', 'a:1'], // a has 4 free slots
        [50, 'quiet', 'b:1'], // a lost at 40 (3 × 10 ms of silence)
        [70, 'quiet2', 'b:1'], // b's slot was freed at 60
        [105, 'back', 'a:1'], // a spoke again at 100
      ]);
    });
  });

  it('two clients sharing servers: each sees the other’s jobs in the pushed loads', () => {
    const ts = scheduler();
    ts.run(({ cold }) => {
      // Another client's two jobs hold both slots of a from 10 to 40; b and c are idle.
      const a = cold<LoadProbe>('a 9ms b 9ms b 9ms b 9ms a 9ms a', {
        a: probe(0, 2),
        b: probe(2, 2),
      });
      const idleHost = cold<LoadProbe>('a 9ms a 9ms a 9ms a 9ms a 9ms a', { a: probe(0, 2) });
      const placed = dispatch(
        ts,
        { a, b: idleHost, c: idleHost },
        [
          { at: 15, tag: '1' },
          { at: 15, tag: '2' },
          { at: 15, tag: '3' },
          { at: 15, tag: '4' },
          { at: 45, tag: '5' },
        ],
        { queue: 0 },
      );
      assert.deepEqual(placed, [
        [15, '1', 'b:1'],
        [15, '2', 'c:1'],
        [15, '3', 'b:1'],
        [15, '4', 'c:1'],
        [45, '5', 'a:1'], // the other client's jobs are over: a is the idle one
      ]);
    });
  });

  it('the first actions wait for every host’s first load: they are not piled on the first to speak', () => {
    const ts = scheduler();
    ts.run(({ cold }) => {
      const a = cold<LoadProbe>('a 9ms a 9ms a', { a: probe(0, 4) });
      const b = cold<LoadProbe>('----a 9ms a 9ms a', { a: probe(0, 4) });
      const placed = dispatch(
        ts,
        { a, b },
        [
          { at: 1, tag: '1' },
          { at: 1, tag: '2' },
        ],
        { queue: 0 },
      );
      assert.deepEqual(placed, [
        [4, '1', 'a:1'],
        [4, '2', 'b:1'],
      ]);
    });
  });

  it('the opening grace: a host silent past it is passed over, and gets work once it speaks', () => {
    const ts = scheduler();
    ts.run(({ cold }) => {
      // a speaks at 10 (4 slots); b says nothing until 200 (a frozen host, a lost SYN).
      const a = cold<LoadProbe>('10ms a', { a: probe(0, 4, 1000) });
      const b = cold<LoadProbe>('200ms a', { a: probe(0, 4, 1000) });
      const placed = dispatch(
        ts,
        { a, b },
        [
          { at: 1, tag: '1' },
          { at: 1, tag: '2' },
          { at: 210, tag: '3' },
        ],
        { queue: 0 },
      );
      // The grace ends at max(OPENING_GRACE_MIN_MS, 2 × 10) = 50: the first two go to a, which
      // has room (not everything: its slots); at 210 b, which spoke at 200, is the idler.
      assert.equal(OPENING_GRACE_MIN_MS, 50);
      assert.deepEqual(placed, [
        [50, '1', 'a:1'],
        [50, '2', 'a:1'],
        [210, '3', 'b:1'],
      ]);
    });
  });

  it('the opening grace: a host that speaks within it is waited for; it is twice the first’s time', () => {
    const run = (aAt: number, bAt: number) => {
      const ts = scheduler();
      let placed: Array<[number, string, string]> = [];
      ts.run(({ cold }) => {
        const a = cold<LoadProbe>(`${aAt}ms a`, { a: probe(0, 4, 1000) });
        const b = cold<LoadProbe>(`${bAt}ms a`, { a: probe(0, 4, 1000) });
        placed = dispatch(
          ts,
          { a, b },
          [
            { at: 1, tag: '1' },
            { at: 1, tag: '2' },
          ],
          { queue: 0 },
        );
      });
      return placed;
    };
    // Within the 50 ms floor: both hosts get one.
    assert.deepEqual(run(10, 30), [
      [30, '1', 'a:1'],
      [30, '2', 'b:1'],
    ]);
    // a took 40 ms, so b gets until 80.
    assert.deepEqual(run(40, 70), [
      [70, '1', 'a:1'],
      [70, '2', 'b:1'],
    ]);
    assert.deepEqual(run(40, 90), [
      [80, '1', 'a:1'],
      [80, '2', 'a:1'],
    ]);
  });

  it('a load with hundreds waiting looks at the first of them, not at every one', () => {
    // Each waiting action's `exclude`, its size read counted: a pass over the queue reads it.
    let reads = 0;
    class Counted extends Set<string> {
      override get size() {
        reads++;
        return super.size;
      }
    }
    const ts = scheduler();
    const placed: string[] = [];
    ts.run(({ cold }) => {
      // Idle at first, then full (this client's first action) for 20 loads in a row.
      const stream = cold<LoadProbe>(`a${'b'.repeat(20)}`, { a: probe(0), b: probe(1) });
      const d = new LoadDispatcher([A], () => stream, new Assignments(), {
        queue: 0,
        reconnectMs: 1000,
        scheduler: ts,
      });
      ts.schedule(() => {
        d.start();
        for (let i = 0; i < 200; i++) {
          d.place(new Counted()).subscribe((p) => placed.push(p.kind));
        }
      }, 0);
      ts.schedule(() => d.stop(), 50);
    });
    assert.equal(placed.filter((k) => k === 'placed').length, 1);
    assert.equal(placed.length, 200);
    // About 200 on entering the queue and one or two per pass; a pass over all 200 per load
    // was over 4,000.
    assert.ok(reads < 600, `${reads} reads for 21 loads with 199 actions waiting`);
  });

  it('no host streams its load: every action is told to poll', () => {
    const ts = scheduler();
    ts.run(({ cold }) => {
      const base = cold<LoadProbe>('u|', { u: { type: 'unsupported', why: 'base' } });
      const placed = dispatch(ts, { a: base }, [{ at: 1, tag: '1' }], { queue: 1 });
      assert.deepEqual(placed, [[1, '1', 'poll']]);
    });
  });
});

describe('LoadDispatcher: the opening poll round (base hosts see no extra connection)', () => {
  it('a stream’s opening cost answer is its host’s answer in the first round; later actions poll afresh', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const connected: LoadProbe = { type: 'connected' };
      const cost = (n: number): LoadProbe => ({ type: 'cost', cost: n, peer: { kind: 'base' } });
      const unsupported: LoadProbe = { type: 'unsupported', why: 'a base-protocol server' };
      // Two base hosts: connected, the cost answer, then "cannot stream" (the query's end).
      const streams: Record<string, Observable<LoadProbe>> = {
        a: cold('c-k-u|', { c: connected, k: cost(1), u: unsupported }),
        b: cold('c---k-u|', { c: connected, k: cost(2), u: unsupported }),
      };
      const queried: string[] = [];
      let opened: (OpeningRound & { query: QueryCost }) | undefined;
      const d = new LoadDispatcher(
        [A, B],
        (e) => streams[e.host] as Observable<LoadProbe>,
        new Assignments(),
        {
          queue: 1,
          reconnectMs: 1000,
          scheduler: ts,
          openRound: (query) => {
            opened = { id: 7, seq: 0, results: EMPTY, close: () => {}, query };
            return opened;
          },
          queryCost: (e) => {
            queried.push(e.host);
            return EMPTY;
          },
        },
      );
      const placed: Array<[number, string, string]> = [];
      const place = (tag: string) =>
        d
          .place()
          .subscribe((p) =>
            placed.push([
              ts.now(),
              tag,
              p.kind === 'poll' ? `poll ${p.round?.id ?? 'fresh'}` : p.host,
            ]),
          );
      // Nothing opens before the first action; two actions wait for every host to speak.
      ts.schedule(() => assert.equal(opened, undefined), 0);
      ts.schedule(() => place('1'), 1);
      ts.schedule(() => place('2'), 1);
      ts.schedule(() => place('3'), 20);
      ts.schedule(() => d.stop(), 50);
      ts.schedule(() => {
        const query = (opened as { query: QueryCost }).query;
        // The round's answers are the streams' own: connected, then the cost.
        expectObservable(query(A)).toBe('30ms (ck|)', { c: connected, k: cost(1) });
        expectObservable(query(B)).toBe('30ms (ck|)', { c: connected, k: cost(2) });
      }, 30);
      ts.flush();
      // Both base hosts said they cannot stream at 7: the two waiting actions take the
      // opening round (id 7 here); the action at 20 polls afresh. No fresh query of the
      // stream's answers was needed.
      assert.deepEqual(placed, [
        [7, '1', 'poll 7'],
        [7, '2', 'poll 7'],
        [20, '3', 'poll fresh'],
      ]);
      assert.deepEqual(queried, []);
    });
  });

  it('a strict base host refused the offer: the round asks it afresh (without), once', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const refused: LoadProbe = {
        type: 'unsupported',
        why: 'refused the offer',
        offerRefused: true,
      };
      const answer: CostProbe = { type: 'cost', cost: 4, peer: { kind: 'base' } };
      let query: QueryCost | undefined;
      const d = new LoadDispatcher(
        [A],
        () => cold<LoadProbe>('c-r|', { c: { type: 'connected' }, r: refused }),
        new Assignments(),
        {
          queue: 1,
          reconnectMs: 1000,
          scheduler: ts,
          openRound: (q) => {
            query = q;
            return { id: 1, seq: 0, results: EMPTY, close: () => {} };
          },
          queryCost: () => cold<CostProbe>('--k|', { k: answer }),
        },
      );
      ts.schedule(() => d.place().subscribe(), 1);
      ts.schedule(() => {
        expectObservable((query as QueryCost)(A)).toBe('10ms c-k|', {
          c: { type: 'connected' },
          k: answer,
        });
      }, 10);
      ts.schedule(() => d.stop(), 50);
    });
  });
});
