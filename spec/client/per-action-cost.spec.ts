// The client's work per remote action (issue 20), counted rather than timed: rxjs
// subscriptions and rxjs timers per action, with two real rakeserver programs (child
// processes, so only the client's own subscriptions count) and the client's real engine, with
// load streams and without (a cost poll per action). Per action = (count for N actions − count
// for 1 action) / (N − 1). Budgets sit a little above what the engine does now; they caught
// the load stream's per-message switchMap (6 subscriptions and a timer per load message,
// about 1.6 messages per action), download's concat and the pooled job's outer operators.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { lastValueFrom, Observable, type Subscription, toArray } from 'rxjs';
import { run } from '../../src/client/run.js';
import { type RakeserverProgram, rakeserverProgram } from '../helpers/rakeserver-program.js';
import { only, parse, summary } from './support.js';

interface Counts {
  subscriptions: number;
  timers: number;
  /** Node timers set (`setTimeout`): the heartbeat bound on a job's reply, for one. */
  timeouts: number;
}

/** Runs `actions` × `remote-true` and counts the subscriptions and rxjs timers it took. */
async function counted(
  dir: string,
  ports: readonly number[],
  actions: number,
  loadStreams: boolean,
): Promise<Counts> {
  const text = [
    `PORT = ${ports[0]}`,
    `HOSTS = ${ports.map((p) => `127.0.0.1:${p}`).join(' ')}`,
    '',
    'all:',
    ...Array.from({ length: actions }, () => '\tremote-true'),
    '',
  ].join('\n');
  const counts: Counts = { subscriptions: 0, timers: 0, timeouts: 0 };
  const subscribe = Observable.prototype.subscribe;
  const setInterval = globalThis.setInterval;
  const setTimeout = globalThis.setTimeout;
  Observable.prototype.subscribe = function (this: Observable<unknown>, ...args: unknown[]) {
    counts.subscriptions++;
    return (subscribe as (...a: unknown[]) => Subscription).apply(this, args);
  } as typeof subscribe;
  // rxjs's asyncScheduler sets every timer it schedules with setInterval.
  globalThis.setInterval = ((...args: Parameters<typeof setInterval>) => {
    counts.timers++;
    return setInterval(...args);
  }) as typeof setInterval;
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
    counts.timeouts++;
    return setTimeout(...args);
  }) as typeof setTimeout;
  try {
    const events = await lastValueFrom(
      run(parse(text, join(dir, 'Rakefile')), {
        directory: dir,
        embedded: false,
        fallback: false,
        loadStreams,
      }).pipe(toArray()),
    );
    assert.equal(summary(events).succeeded, actions, JSON.stringify(only(events, 'action-failed')));
  } finally {
    Observable.prototype.subscribe = subscribe;
    globalThis.setInterval = setInterval;
    globalThis.setTimeout = setTimeout;
  }
  return counts;
}

/**
 * Per action, the least of 3 measurements: timing adds work (a load message that a busy
 * machine did not coalesce, a kept connection the server closed meanwhile), never takes it
 * away, so the least is what the engine itself costs (CI at load 25 once counted 14.3 where
 * a quiet machine counts 12.5).
 */
async function perAction(dir: string, ports: readonly number[], loadStreams: boolean) {
  const N = 41;
  let best: Counts | undefined;
  for (let i = 0; i < 3; i++) {
    const one = await counted(dir, ports, 1, loadStreams);
    const many = await counted(dir, ports, N, loadStreams);
    const cost = {
      subscriptions: (many.subscriptions - one.subscriptions) / (N - 1),
      timers: (many.timers - one.timers) / (N - 1),
      timeouts: (many.timeouts - one.timeouts) / (N - 1),
    };
    if (best === undefined || cost.subscriptions < best.subscriptions) best = cost;
  }
  return best as Counts;
}

describe('per remote action, the client', { timeout: 180_000 }, () => {
  let scratch = '';
  let dir = '';
  let servers: RakeserverProgram[] = [];
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'rake-cost-'));
    dir = join(scratch, 'project');
    await mkdir(dir);
    await writeFile(join(dir, 'Rakefile'), '');
    servers = await Promise.all(
      [1, 2].map((i) => rakeserverProgram(join(scratch, `work${i}`), ['--max-jobs', '1'])),
    );
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    await rm(scratch, { recursive: true, force: true });
  });

  it('with load streams: at most 14 subscriptions, no rxjs timer and 1 Node timer per action', async () => {
    const cost = await perAction(
      dir,
      servers.map((s) => s.port),
      true,
    );
    // About 26 subscriptions and 1 timer (set and cleared per load message) before the load
    // stream's lostWhenSilent and the one-step download; 15.4 and under 0.1 after (a timer per
    // silence period per host, not per message); 13.5 once the pooled job filtered its own
    // progress and moved a gone connection's job itself (no progressOnly, no catchError);
    // 12.5 with its upload and reply in one step; 11.6 with its plan in that step too and the
    // placement's events passed on without a merge (13.4 once at load 12).
    assert.ok(cost.subscriptions <= 14, `${cost.subscriptions} subscriptions per action`);
    assert.ok(cost.timers < 0.5, `${cost.timers} rxjs timers per action`);
    // 2.9 Node timers while the reply's heartbeat bound was set anew for each of its messages
    // (`queued`, `started`, the reply); 1.4 with one per reply; 0.5 with one per connection.
    assert.ok(cost.timeouts <= 1, `${cost.timeouts} Node timers per action`);
  });

  it('with a cost poll per action: at most 28 subscriptions', async () => {
    const cost = await perAction(
      dir,
      servers.map((s) => s.port),
      false,
    );
    assert.ok(cost.subscriptions <= 28, `${cost.subscriptions} subscriptions per action`);
  });
});
