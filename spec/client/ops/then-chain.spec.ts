// Steps chained by `then` (src/client/conversation.ts): each step an Observable of progress
// then its result, the next step started on that result, run as one chain: progress passes
// through, the output ends when the last step does, unsubscribing ends the step running, and
// a chain of N steps costs N + 1 subscriptions (not one more per `then`).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Observable, of, type Subscription } from 'rxjs';
import { progressOnly, type Told, then } from '../../../src/client/conversation.js';
import { scheduler } from './support.js';

type T = Told<string, number>;
const values: Record<string, T> = {
  p: { progress: 'p' },
  q: { progress: 'q' },
  r: { progress: 'r' },
  a: { result: 1 },
  b: { result: 2 },
  c: { result: 3 },
};

describe('then: steps as one chain (marbles)', () => {
  it('passes progress, starts each step on the last one’s result, ends with the last step', () => {
    const seen: number[] = [];
    scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const one = cold<T>('-p-a|', values);
      const two = cold<T>('--q-b|', values);
      const three = cold<T>('-r--c|', values);
      const out = one.pipe(
        then((n: number) => {
          seen.push(n);
          return two;
        }),
        then((n: number) => {
          seen.push(n);
          return three;
        }),
      );
      expectObservable(out).toBe('-p---q--r--c|', values);
      expectSubscriptions(one.subscriptions).toBe('^---!');
      expectSubscriptions(two.subscriptions).toBe('---^----!');
      expectSubscriptions(three.subscriptions).toBe('-------^----!');
    });
    assert.deepEqual(seen, [1, 2]);
  });

  it('progressOnly drops the results', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const out = cold<T>('-p-a|', values).pipe(
        then(() => cold<T>('-q-b|', values)),
        progressOnly(),
      );
      expectObservable(out).toBe('-p--q--|');
    });
  });

  it('unsubscribing ends the step running; later steps never start', () => {
    let started = false;
    scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const one = cold<T>('-a|', values);
      const two = cold<T>('----q--b|', values);
      const out = one.pipe(
        then(() => two),
        then(() => {
          started = true;
          return of<T>({ result: 9 });
        }),
      );
      expectObservable(out, '^-----!').toBe('-----q', values);
      expectSubscriptions(two.subscriptions).toBe('-^----!');
    });
    assert.equal(started, false);
  });

  it("a step's error ends the chain; so does a next step that cannot be made", () => {
    scheduler().run(({ cold, expectObservable }) => {
      const failing = cold<T>('-p-a|', values).pipe(then(() => cold<T>('--#')));
      expectObservable(failing).toBe('-p---#', values);
      const unmade = cold<T>('-a|', values).pipe(
        then((): Observable<T> => {
          throw new Error('no plan');
        }),
      );
      expectObservable(unmade).toBe('-#', undefined, new Error('no plan'));
    });
  });

  it('a chain of 4 steps is 5 subscriptions: the steps and one chain', () => {
    const step = (n: number) =>
      new Observable<T>((sub) => {
        sub.next({ progress: `step ${n}` });
        sub.next({ result: n });
        sub.complete();
      });
    const chain = step(1).pipe(
      then(() => step(2)),
      then(() => step(3)),
      then(() => step(4)),
    );
    const subscribe = Observable.prototype.subscribe;
    let count = 0;
    const counted = function (this: Observable<unknown>, ...args: unknown[]) {
      count++;
      return (subscribe as (...a: unknown[]) => Subscription).apply(this, args);
    };
    Observable.prototype.subscribe = counted as typeof subscribe;
    const out: T[] = [];
    try {
      chain.subscribe((t) => out.push(t));
    } finally {
      Observable.prototype.subscribe = subscribe;
    }
    assert.deepEqual(out, [
      { progress: 'step 1' },
      { progress: 'step 2' },
      { progress: 'step 3' },
      { progress: 'step 4' },
      { result: 4 },
    ]);
    assert.equal(count, 5);
  });
});
