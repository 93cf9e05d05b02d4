// The server's load feed (extension `load`): what one watching connection is sent, in mocked
// time (node:test's timers), and the coalescing of changes made in one turn of the event loop.
import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';
import { EveryBeat, type LoadCounts, LoadFeed } from '../../src/server/load.js';

const L = (jobs: number, running = jobs, queued = 0): LoadCounts => ({
  jobs,
  running,
  queued,
  slots: 2,
});

/**
 * Runs `body` with setTimeout mocked; `at(ms)` moves the mocked clock to `ms`, a millisecond
 * at a time (a timer set by a timer's callback is due no sooner than the next one).
 */
function inMockedTime(body: (at: (ms: number) => void) => void): void {
  mock.timers.enable({ apis: ['setTimeout'] });
  let now = 0;
  try {
    body((ms) => {
      for (; now < ms; now++) mock.timers.tick(1);
    });
  } finally {
    mock.timers.reset();
  }
}

describe('EveryBeat: each load at once, the same again every beat while it holds', () => {
  it('a change is sent at once and restarts the beat', () => {
    inMockedTime((at) => {
      let value = 'a';
      let now = 0;
      const sent: string[] = [];
      const beat = new EveryBeat(() => sent.push(`${value}@${now}`), 5);
      const step = (ms: number) => {
        now = ms;
        at(ms);
      };
      for (const ms of [1, 6]) step(ms);
      value = 'b';
      now = 7;
      at(7);
      beat.poke();
      for (const ms of [8, 13, 18]) step(ms);
      value = 'c';
      now = 19;
      at(19);
      beat.poke();
      for (const ms of [20, 22]) step(ms);
      beat.stop();
      // "At once" is the next timer turn: 1 ms in Node.
      assert.deepEqual(sent, ['a@1', 'a@6', 'b@8', 'b@13', 'b@18', 'c@20']);
    });
  });

  it('changes within one turn are one message, with what holds by then', () => {
    inMockedTime((at) => {
      let value = 'a';
      const sent: string[] = [];
      const beat = new EveryBeat(() => sent.push(value), 5);
      at(1);
      value = 'b';
      beat.poke();
      value = 'c';
      beat.poke();
      at(2);
      assert.deepEqual(sent, ['a', 'c']);
      at(6);
      assert.deepEqual(sent, ['a', 'c'], 'the beat restarted at the change');
      at(7);
      assert.deepEqual(sent, ['a', 'c', 'c']);
      beat.stop();
    });
  });

  it('an idle server beats for ever at its interval (silence means lost); stop ends it', () => {
    inMockedTime((at) => {
      let n = 0;
      const beat = new EveryBeat(() => n++, 5);
      at(16);
      assert.equal(n, 4);
      beat.stop();
      beat.poke();
      at(100);
      assert.equal(n, 4);
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
    const unwatch = feed.watch((l) => seen.push(l));
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
    assert.deepEqual(seen, [L(2)]);
    assert.deepEqual(feed.current, L(2));
    unwatch();
  });

  it('encodes each load once, however many connections watch', async () => {
    let counts = L(0);
    const feed = new LoadFeed(() => counts);
    const unwatch = feed.watch(() => {});
    const first = feed.message(5);
    assert.equal(
      first.subarray(64).toString('latin1'),
      'load jobs=0 running=0 queued=0 slots=2 beat=5',
    );
    assert.equal(feed.message(5), first, 'the same bytes, not an equal copy');
    counts = L(1);
    feed.changed();
    await new Promise((ok) => setImmediate(ok));
    const second = feed.message(5);
    assert.equal(
      second.subarray(64).toString('latin1'),
      'load jobs=1 running=1 queued=0 slots=2 beat=5',
    );
    assert.equal(feed.message(5), second);
    assert.equal(
      feed.message(7).subarray(64).toString('latin1'),
      'load jobs=1 running=1 queued=0 slots=2 beat=7',
    );
    unwatch();
  });

  it('costs nothing while nobody watches', async () => {
    let reads = 0;
    const feed = new LoadFeed(() => {
      reads++;
      return L(0);
    });
    const unwatch = feed.watch(() => {});
    unwatch();
    reads = 0;
    for (let i = 0; i < 100; i++) feed.changed();
    await new Promise((ok) => setImmediate(ok));
    assert.equal(reads, 0);
  });
});
