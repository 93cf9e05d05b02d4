// Operator retryOnLostHost (src/client/ops/retry-on-lost-host.ts): a host that dropped the job
// before replying makes the action move on, at most `retries` times; anything else fails it.
import { describe, it } from 'node:test';
import { map, type Observable } from 'rxjs';
import { JobError, TokenRefused } from '../../../src/client/errors.js';
import type { RakeEvent } from '../../../src/client/events.js';
import { AttemptFailure } from '../../../src/client/ops/job-events.js';
import { retryOnLostHost } from '../../../src/client/ops/retry-on-lost-host.js';
import { chosen, scheduler, story } from './support.js';

const PH = { poll: 0, connect: 0, upload: 0, run: 0, download: 0 };
const lost = new AttemptFailure(
  new JobError('host-lost', 'connection lost before the reply', true),
  PH,
);
const lostAfter = new AttemptFailure(
  new JobError('host-lost', 'connection lost after the reply', false),
  PH,
);
const broken = new AttemptFailure(new JobError('protocol-error', 'expected !SS', true), PH);

describe('retryOnLostHost (marbles)', () => {
  const policy = (
    cold: (m: string, v?: Record<string, string>) => Observable<string>,
    drops: number,
  ) => ({
    retries: 1,
    drops,
    moveOn: ({ drops: d }: { drops: number }) =>
      cold('-m|', { m: `moved on, drops ${d}` }) as unknown as Observable<RakeEvent>,
    fail: (f: AttemptFailure) =>
      cold('(f|)', { f: `failed: ${f.error.message}` }) as unknown as Observable<RakeEvent>,
  });
  const show = map((e: RakeEvent | string) => (typeof e === 'string' ? e : story(e)));

  it('moves on when the host drops the job before replying, counting the drop', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const attempt = cold<RakeEvent>('-h--#', { h: chosen('a:1') }, lost);
      expectObservable(attempt.pipe(retryOnLostHost(policy(cold, 0)), show)).toBe('-h---m|', {
        h: 'chose a:1',
        m: 'moved on, drops 1',
      });
    });
  });

  it('fails once the retries are used up, and for a loss after the reply or another error', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      for (const [failure, drops] of [
        [lost, 1],
        [lostAfter, 0],
        [broken, 0],
      ] as const) {
        const attempt = cold<RakeEvent>('-h--#', { h: chosen('a:1') }, failure);
        expectObservable(attempt.pipe(retryOnLostHost(policy(cold, drops)), show)).toBe(
          '-h--(f|)',
          {
            h: 'chose a:1',
            f: `failed: ${failure.error.message}`,
          },
        );
      }
    });
  });

  it('a host that refused our token: moves on without using a retry', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      const refused = new AttemptFailure(new TokenRefused('a:1 refused the token'), PH);
      const attempt = cold<RakeEvent>('-h--#', { h: chosen('a:1') }, refused);
      expectObservable(attempt.pipe(retryOnLostHost(policy(cold, 1)), show)).toBe('-h---m|', {
        h: 'chose a:1',
        m: 'moved on, drops 1',
      });
    });
  });
});
