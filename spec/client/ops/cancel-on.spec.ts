// Operator cancelOn (src/client/ops/cancel-on.ts): --fail-fast for one action.
import { describe, it } from 'node:test';
import { map, ReplaySubject } from 'rxjs';
import type { RakeEvent } from '../../../src/client/events.js';
import { cancelOn } from '../../../src/client/ops/cancel-on.js';
import { chosen, REF, scheduler, story, succeeded } from './support.js';

const cancelled = (host: string | undefined): RakeEvent => ({
  type: 'action-cancelled',
  time: 0,
  action: REF,
  ...(host === undefined ? {} : { host }),
});
const E = {
  h: chosen('a:1'),
  q: { type: 'action-queued', time: 0, action: REF, host: 'a:1' } as RakeEvent,
  S: succeeded('a:1'),
};
const tell = map(story);

describe('cancelOn (marbles)', () => {
  it('a sibling fails while the action runs: it is unsubscribed and ends cancelled on its host', () => {
    const ts = scheduler();
    ts.run(({ cold, hot, expectObservable, expectSubscriptions }) => {
      const action = cold<RakeEvent>('-h-q------S|', E);
      const failures = hot('------x');
      expectObservable(action.pipe(cancelOn(failures, cancelled), tell)).toBe('-h-q--(c|)', {
        h: 'chose a:1',
        q: 'action-queued',
        c: 'cancelled on a:1',
      });
      expectSubscriptions(action.subscriptions).toBe('^-----!');
    });
  });

  it('an action that already ended is left alone, and ends when its events do', () => {
    const ts = scheduler();
    ts.run(({ cold, hot, expectObservable }) => {
      const action = cold<RakeEvent>('-h-S---|', E);
      expectObservable(action.pipe(cancelOn(hot('-----x'), cancelled), tell)).toBe('-h-S---|', {
        h: 'chose a:1',
        S: story(E.S),
      });
      // No failure at all: the action's end is the end.
      expectObservable(action.pipe(cancelOn(hot('-'), cancelled), tell)).toBe('-h-S---|', {
        h: 'chose a:1',
        S: story(E.S),
      });
    });
  });

  it('a failure before the action starts: cancelled at once, the action never subscribed', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      const failures = new ReplaySubject<void>(1);
      failures.next();
      const action = cold<RakeEvent>('-h-S|', E);
      expectObservable(action.pipe(cancelOn(failures, cancelled), tell)).toBe('(c|)', {
        c: 'cancelled',
      });
      expectSubscriptions(action.subscriptions).toBe([]);
    });
  });
});
