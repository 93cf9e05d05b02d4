// The server's load feed (extension `load`): what one watching connection is sent, in virtual
// time (marbles), and the coalescing of changes made in one turn of the event loop.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Observable } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { type LoadCounts, LoadFeed, loadMessages } from '../../src/server/load.js';

const scheduler = () =>
  new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

const L = (jobs: number, running = jobs, queued = 0): LoadCounts => ({
  jobs,
  running,
  queued,
  slots: 2,
});
const M = (jobs: number, running = jobs, queued = 0) => ({
  ...L(jobs, running, queued),
  beatMs: 5,
});

describe('loadMessages: each load at once, the same again every beat while it holds', () => {
  it('a change is sent at once and restarts the beat', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const loads: Observable<LoadCounts> = cold('a 6ms b 11ms c', {
        a: L(0),
        b: L(1),
        c: L(3, 2, 1),
      });
      // a at 0, beats at 5; b at 7 (a change: at once), beats 12, 17; c at 19.
      expectObservable(loadMessages(loads, 5), '^ 22ms !').toBe('a 4ms a 1ms b 4ms b 4ms b 1ms c', {
        a: M(0),
        b: M(1),
        c: M(3, 2, 1),
      });
    });
  });

  it('an idle server beats for ever at its interval (silence means lost)', () => {
    scheduler().run(({ cold, expectObservable }) => {
      expectObservable(loadMessages(cold('a', { a: L(0) }), 5), '^ 16ms !').toBe(
        'a 4ms a 4ms a 4ms a',
        { a: M(0) },
      );
    });
  });
});

describe('LoadFeed', () => {
  it('reads the changes of one turn of the loop once, and drops a load equal to the last', async () => {
    let counts = L(0);
    let reads = 0;
    const feed = new LoadFeed(() => {
      reads++;
      return counts;
    });
    const seen: LoadCounts[] = [];
    const sub = feed.loads$.subscribe((l) => seen.push(l));
    reads = 0;
    counts = L(1);
    feed.changed();
    counts = L(2);
    feed.changed();
    feed.changed();
    await new Promise((ok) => setImmediate(ok));
    assert.equal(reads, 1);
    feed.changed(); // nothing changed
    await new Promise((ok) => setImmediate(ok));
    assert.deepEqual(seen, [L(0), L(2)]);
    sub.unsubscribe();
  });

  it('encodes each load once, however many connections watch', async () => {
    let counts = L(0);
    const feed = new LoadFeed(() => counts);
    const a: Buffer[] = [];
    const b: Buffer[] = [];
    const subs = [feed.encoded$(5).subscribe((m) => a.push(m))];
    subs.push(feed.encoded$(5).subscribe((m) => b.push(m)));
    counts = L(1);
    feed.changed();
    await new Promise((ok) => setImmediate(ok));
    assert.deepEqual(
      a.map((m) => m.subarray(64).toString('latin1')),
      [
        'load jobs=0 running=0 queued=0 slots=2 beat=5',
        'load jobs=1 running=1 queued=0 slots=2 beat=5',
      ],
    );
    assert.equal(a.length, b.length);
    for (const [i, m] of a.entries()) assert.equal(m, b[i], 'the same bytes, not an equal copy');
    for (const s of subs) s.unsubscribe();
  });

  it('costs nothing while nobody watches', async () => {
    let reads = 0;
    const feed = new LoadFeed(() => {
      reads++;
      return L(0);
    });
    reads = 0;
    for (let i = 0; i < 100; i++) feed.changed();
    await new Promise((ok) => setImmediate(ok));
    assert.equal(reads, 0);
  });
});
