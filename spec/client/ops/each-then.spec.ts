// Operator eachThen (src/client/ops/each-then.ts): each value mapped as it comes, then the
// Observable made from the last one: connect/merge/map/last/mergeMap in one subscriber.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { of, Subject, throwError } from 'rxjs';
import { eachThen } from '../../../src/client/ops/each-then.js';
import { scheduler } from './support.js';

describe('eachThen (marbles)', () => {
  it('maps each value, then emits what the last value leads to', () => {
    scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const source = cold('-a--b--c|');
      const after = cold('--x-y|');
      const out = source.pipe(
        eachThen(
          (v) => v.toUpperCase(),
          (last) => (last === 'c' ? after : of('wrong')),
          '',
        ),
      );
      expectObservable(out).toBe('-A--B--C--x-y|');
      expectSubscriptions(after.subscriptions).toBe('--------^----!');
    });
  });

  it('an empty source leads with the seed', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const out = cold('---|').pipe(
        eachThen<string, string>(
          (v) => v,
          (last) => of(`seed=${last}`),
          'none',
        ),
      );
      expectObservable(out).toBe('---(s|)', { s: 'seed=none' });
    });
  });

  it("passes on the source's error and never calls then", () => {
    let called = false;
    scheduler().run(({ cold, expectObservable }) => {
      const out = cold('-a-#').pipe(
        eachThen(
          (v) => v,
          () => {
            called = true;
            return of('x');
          },
          '',
        ),
      );
      expectObservable(out).toBe('-a-#');
    });
    assert.equal(called, false);
  });

  it('unsubscribing ends the source, or the Observable then made', () => {
    scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const source = cold('-a|');
      const after = cold('----x|');
      expectObservable(
        source.pipe(
          eachThen(
            (v) => v,
            () => after,
            '',
          ),
        ),
        '^---!',
      ).toBe('-a--');
      expectSubscriptions(source.subscriptions).toBe('^-!');
      expectSubscriptions(after.subscriptions).toBe('--^-!');
    });
  });

  it('an error thrown by each or then is the output error', () => {
    const errors: unknown[] = [];
    const boom = new Error('boom');
    of(1)
      .pipe(
        eachThen(
          () => {
            throw boom;
          },
          () => of(0),
          0,
        ),
      )
      .subscribe({ error: (e: unknown) => errors.push(e) });
    of(1)
      .pipe(
        eachThen(
          (v) => v,
          () => throwError(() => boom),
          0,
        ),
      )
      .subscribe({ next: () => {}, error: (e: unknown) => errors.push(e) });
    const s = new Subject<number>();
    s.pipe(
      eachThen(
        (v) => v,
        () => {
          throw boom;
        },
        0,
      ),
    ).subscribe({ error: (e: unknown) => errors.push(e) });
    s.complete();
    assert.deepEqual(errors, [boom, boom, boom]);
  });
});
