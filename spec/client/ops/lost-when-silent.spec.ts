// Operator lostWhenSilent (src/client/ops/lost-when-silent.ts): states pass; `lost` follows a
// state's silence unless another state comes first; one timer for the latest deadline rather
// than one per state (a load stream says a load for every job that starts or ends).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
// Inside `run()` the asyncScheduler runs in virtual time.
import { asyncScheduler, type SchedulerLike, type Subscription } from 'rxjs';
import type { TestScheduler } from 'rxjs/testing';
import { lostWhenSilent } from '../../../src/client/ops/lost-when-silent.js';
import { scheduler } from './support.js';

/** `ts` with its `schedule` calls counted. */
function counting(ts: TestScheduler): { scheduler: SchedulerLike; scheduled: () => number } {
  let n = 0;
  return {
    scheduler: {
      now: () => ts.now(),
      schedule: (work, delay, state) => {
        n++;
        return ts.schedule(work as never, delay, state);
      },
    } as SchedulerLike,
    scheduled: () => n,
  };
}

// a, b: silence 5; s: silence 2; u: none.
const silenceOf = (s: string) => (s === 'u' ? undefined : s === 's' ? 2 : 5);

describe('lostWhenSilent (marbles)', () => {
  it('lost once a state’s silence passes with no word; a state in time puts it off', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const states = cold('a-a-a---------b-------');
      const out = states.pipe(
        lostWhenSilent({ silenceOf, lost: () => 'l', scheduler: asyncScheduler }),
      );
      // The last a at 4: lost at 9; b at 14: lost at 19.
      expectObservable(out, '^ 21ms !').toBe('a-a-a----l----b----l--');
    });
  });

  it('a shorter silence brings the deadline closer; a state without one cancels it', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const out = cold('a-s------a-u------').pipe(
        lostWhenSilent({ silenceOf, lost: (ms) => `l${ms}`, scheduler: asyncScheduler }),
      );
      expectObservable(out, '^ 17ms !').toBe('a-s-x----a-u------', {
        a: 'a',
        s: 's',
        u: 'u',
        x: 'l2',
      });
    });
  });

  it('ends when the states end and no lost is due; one that is due comes first; errors at once', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const op = () => lostWhenSilent({ silenceOf, lost: () => 'l', scheduler: asyncScheduler });
      expectObservable(cold('a-|').pipe(op())).toBe('a----(l|)');
      expectObservable(cold('u-|').pipe(op())).toBe('u-|');
      expectObservable(cold('a-#').pipe(op())).toBe('a-#');
    });
  });

  it('one timer for many states: not one set and cleared per state', () => {
    const ts = scheduler();
    const { scheduler: counted, scheduled } = counting(ts);
    ts.run(({ cold, expectObservable }) => {
      // Twenty states a frame apart, then silence: lost 5 after the last one.
      const out = cold('aaaaaaaaaaaaaaaaaaaa').pipe(
        lostWhenSilent({ silenceOf, lost: () => 'l', scheduler: counted }),
      );
      expectObservable(out, '^ 30ms !').toBe(`${'a'.repeat(20)}----l`);
    });
    // Set at the first state, then set again for the rest each time it fires early.
    assert.ok(scheduled() <= 6, `${scheduled()} timers for 20 states`);
  });

  it('unsubscribing clears the timer', () => {
    const ts = scheduler();
    let timer: Subscription | undefined;
    const tracking: SchedulerLike = {
      now: () => ts.now(),
      schedule: (work, delay, state) => {
        timer = ts.schedule(work as never, delay, state);
        return timer;
      },
    } as SchedulerLike;
    ts.run(({ cold }) => {
      const sub = cold('a')
        .pipe(lostWhenSilent({ silenceOf, lost: () => 'l', scheduler: tracking }))
        .subscribe();
      ts.schedule(() => sub.unsubscribe(), 2);
    });
    assert.equal(timer?.closed, true);
  });
});
