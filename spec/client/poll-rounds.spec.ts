// Shared cost-poll rounds in virtual time: every action that joins a round sees every host's
// result, the skipped (backing-off) hosts included (issue 18, item 15; docs/client.md,
// "Shared poll rounds and backoff").
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { filter } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { type Endpoint, hostKey } from '../../src/client/endpoint.js';
import type { RakeEvent } from '../../src/client/events.js';
import { ActionOutput } from '../../src/client/output.js';
import { CostPoller, type CostProbe, type CostResult } from '../../src/client/poll.js';
import { run } from '../../src/client/run.js';
import type { JobProgress, Transport } from '../../src/client/transport.js';
import { model } from './helpers.js';

const scheduler = () =>
  new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

const COST: Record<string, CostProbe> = {
  c: { type: 'connected' },
  ...Object.fromEntries([...'0123456789'].map((d) => [d, { type: 'cost', cost: Number(d) }])),
};
const JOB: Record<string, JobProgress> = {
  c: { type: 'connected' },
  u: { type: 'uploaded', files: 0, bytes: 0 },
  s: { type: 'replied', ok: true, stdout: ActionOutput.of(''), files: false },
};

const SKIPPED = 'skipped: no connection within 10 ms less than 1 s ago';

describe('CostPoller: shared rounds (marbles)', { timeout: 20_000 }, () => {
  it('gives a skipped host to every action that joins the round, not only the first', () => {
    const ts = scheduler();
    const seen: string[] = [];
    ts.run(({ cold, flush }) => {
      const hosts: Endpoint[] = [
        { host: 'a', port: 1 },
        { host: 'b', port: 1 },
      ];
      // a never connects; b answers 3 two frames after it is asked.
      const script: Record<string, string> = { a: '-', b: 'c-3' };
      let mark = 0;
      const poller = new CostPoller(
        hosts,
        (e) => cold(script[e.host] as string, COST),
        { connectTimeoutMs: 10, replyTimeoutMs: 10, scheduler: ts, backoffMs: 1000 },
        () => ++mark,
      );
      const record = (who: string) => (r: CostResult) =>
        seen.push(`${ts.now()} ${who} ${r.host} ${r.ok ? r.cost : r.error}`);
      // Round 1 finds a down (no connection in 10 ms).
      poller.join().results.subscribe(record('first'));
      // At 20 ms two actions ask at the same instant: they share round 2, where a is skipped.
      ts.schedule(() => {
        const r1 = poller.join();
        const r2 = poller.join();
        assert.equal(r1, r2, 'the second action joins the first one’s round');
        r1.results.subscribe(record('A'));
        r2.results.subscribe(record('B'));
      }, 20);
      flush();
    });
    assert.deepEqual(seen, [
      '2 first b:1 3',
      '10 first a:1 no connection within 10 ms',
      `20 A a:1 ${SKIPPED}`,
      `20 B a:1 ${SKIPPED}`,
      '22 A b:1 3',
      '22 B b:1 3',
    ]);
  });

  it('in a run, each action of the next actionset reports the skipped host', () => {
    const ts = scheduler();
    const transport: Transport = {
      queryCost: (e) =>
        ts.createColdObservable(
          ({ 'a:1': '-', 'b:1': 'c-3' } as Record<string, string>)[hostKey(e)] ?? '-',
          COST,
        ),
      sendJob: () => ts.createColdObservable('c u 3ms s|', JOB),
    };
    const events: RakeEvent[] = [];
    ts.run(({ flush }) => {
      const rakefile = model({
        hosts: ['a:1', 'b:1'],
        sets: { first: ['remote-true'], second: ['remote-true', 'remote-true', 'remote-true'] },
      });
      run(rakefile, {
        scheduler: ts,
        transport,
        connectTimeoutMs: 10,
        costTimeoutMs: 10,
        hostBackoffMs: 1000,
        startServer: () => Promise.reject(new Error('no embedded server in marble tests')),
      })
        .pipe(filter((e) => e.type === 'cost-polled'))
        .subscribe((e) => events.push(e));
      flush();
    });
    const second = events.filter(
      (e) => e.type === 'cost-polled' && e.action.actionset === 'second',
    );
    const skippedBy = second.flatMap((e) =>
      e.type === 'cost-polled' && e.cost.host === 'a:1' ? [e.action.actionId] : [],
    );
    assert.deepEqual(skippedBy, ['second#0', 'second#1', 'second#2']);
    // One shared round: one id for all three actions.
    assert.equal(new Set(second.map((e) => (e.type === 'cost-polled' ? e.pollId : 0))).size, 1);
  });
});
