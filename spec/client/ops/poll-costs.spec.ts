// Operator pollCosts (src/client/ops/poll-costs.ts): one result per host as it arrives, each
// host under its own time limits; a failure is a result, never an error.
import { describe, it } from 'node:test';
import { map } from 'rxjs';
import type { Endpoint } from '../../../src/client/endpoint.js';
import { pollCosts } from '../../../src/client/ops/poll-costs.js';
import type { CostProbe } from '../../../src/client/poll.js';
import { scheduler } from './support.js';

const PROBE: Record<string, CostProbe> = {
  c: { type: 'connected' },
  ...Object.fromEntries([...'0123456789'].map((d) => [d, { type: 'cost', cost: Number(d) }])),
};

describe('pollCosts (marbles)', () => {
  it('gives every host one result as it comes: answer, slow, unreachable, closed, garbage', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const script = {
        a: cold('-c-3|', PROBE), // answers 3 at 3 ms
        b: cold('-c---', PROBE), // connects, then silent: slow once the reply limit passes
        c: cold('-----', PROBE), // never connects
        d: cold('-c|', PROBE), // closes without answering
        e: cold('-c--#', PROBE, new Error('bad cost "x"')), // answers something not a cost
      };
      const hosts: Endpoint[] = Object.keys(script).map((host) => ({ host, port: 1 }));
      const result = pollCosts(hosts, (e) => script[e.host as keyof typeof script], {
        connectTimeoutMs: 7,
        replyTimeoutMs: 4,
        scheduler: ts,
      }).pipe(
        map((r) =>
          r.ok
            ? `${r.host} ${r.cost} ${r.rttMs}ms`
            : `${r.host} ${r.failure}/${r.trouble}: ${r.error} ${r.rttMs}ms`,
        ),
      );
      expectObservable(result).toBe('--daeb-(c|)', {
        d: 'd:1 unreachable/closed: closed without answering 2ms',
        a: 'a:1 3 3ms',
        e: 'e:1 bad-answer/bad-answer: bad cost "x" 4ms',
        b: 'b:1 slow/timed-out: no answer within 4 ms 5ms',
        c: 'c:1 unreachable/timed-out: no connection within 7 ms 7ms',
      });
      // Each query ends with its result: the answer's, the timeouts' and the errors'.
      expectSubscriptions(script.a.subscriptions).toBe('^--!');
      expectSubscriptions(script.b.subscriptions).toBe('^----!');
      expectSubscriptions(script.c.subscriptions).toBe('^------!');
    });
  });

  it('asks nobody and completes at once with no hosts', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const result = pollCosts([], () => cold('-c-1|', PROBE), {
        connectTimeoutMs: 5,
        replyTimeoutMs: 5,
        scheduler: ts,
      });
      expectObservable(result).toBe('|');
    });
  });
});
