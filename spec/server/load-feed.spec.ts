// The server's load feed (extension `load`): what one watching connection is sent, in mocked
// time (node:test's timers), and the coalescing of changes made in one turn of the event loop.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { describe, it, mock } from 'node:test';
import { encodeExtension } from '../../src/protocol/index.js';
import { EveryBeat, type LoadCounts, LoadFeed, watchLoad } from '../../src/server/load.js';

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
      const beat = new EveryBeat(() => sent.push(`${value}@${now}`) > 0, 5);
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
      const beat = new EveryBeat(() => sent.push(value) > 0, 5);
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
      const beat = new EveryBeat(() => ++n > 0, 5);
      at(16);
      assert.equal(n, 4);
      beat.stop();
      beat.poke();
      at(100);
      assert.equal(n, 4);
    });
  });

  it('a call at once that has nothing new to say leaves the beat where it was', () => {
    inMockedTime((at) => {
      const calls: string[] = [];
      let now = 0;
      let news = true;
      const beat = new EveryBeat((onBeat) => {
        calls.push(`${onBeat ? 'beat' : 'change'}@${now}${onBeat || news ? '' : ' (nothing new)'}`);
        return onBeat || news;
      }, 5);
      const step = (ms: number) => {
        now = ms;
        at(ms);
      };
      step(1);
      news = false;
      beat.poke();
      for (const ms of [3, 6]) step(ms);
      news = true;
      beat.poke();
      for (const ms of [7, 11, 12]) step(ms);
      beat.stop();
      assert.deepEqual(calls, [
        'change@1',
        'change@3 (nothing new)',
        'beat@6',
        'change@7',
        'beat@12',
      ]);
    });
  });
});

/** Both ends of a loopback TCP connection. */
async function socketPair(): Promise<[Socket, Socket]> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  const accepted = once(server, 'connection');
  const client = connect(port, '127.0.0.1');
  const [ours] = (await accepted) as [Socket];
  server.close();
  return [ours, client];
}

describe('watchLoad', () => {
  it('does not tell a watcher again the load it was last told (changes that undid each other)', async () => {
    const [ours, theirs] = await socketPair();
    const received: Buffer[] = [];
    theirs.on('data', (b: Buffer) => received.push(b));
    const ended = once(theirs, 'end');
    const turn = () => new Promise((ok) => setImmediate(ok));
    let counts = L(0);
    const feed = new LoadFeed(() => counts);
    mock.timers.enable({ apis: ['setTimeout'] });
    try {
      const watch = watchLoad(ours, feed, 5000);
      mock.timers.tick(1);
      // One job arrives and leaves within the same "at once": nothing to tell.
      counts = L(1);
      feed.changed();
      await turn();
      counts = L(0);
      feed.changed();
      await turn();
      mock.timers.tick(1);
      counts = L(2);
      feed.changed();
      await turn();
      mock.timers.tick(1);
      watch.unsubscribe();
    } finally {
      mock.timers.reset();
    }
    ours.end();
    await ended;
    const message = (l: LoadCounts) => encodeExtension({ verb: 'load', ...l, beatMs: 5000 });
    assert.deepEqual(Buffer.concat(received), Buffer.concat([message(L(0)), message(L(2))]));
    theirs.destroy();
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
