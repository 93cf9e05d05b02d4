/**
 * Operator `eachThen`: each value of the source as `each(value)`, then, once the source
 * completes, the values of `then(last)` (`last` is the last value, `seed` if none came).
 *
 *     source    -a--b--c|
 *     eachThen  -A--B--C(xy|)      A = each(a) ...; x, y from then(c)
 *
 * It is `connect((s) => merge(s.pipe(map(each)), s.pipe(last(undefined, seed), mergeMap(then))))`
 * in one subscriber: a cost poll's every answer goes through it once per action (64 per
 * action on 64 hosts), and the multicast, the merge and the `last` of that shape were a
 * good part of the client's CPU per answer. An error of the source or of `each` is passed
 * on; unsubscribing ends the source or `then`'s Observable, whichever is running.
 */
import { from, Observable, type ObservableInput, type OperatorFunction } from 'rxjs';

export function eachThen<T, R>(
  each: (value: T) => R,
  then: (last: T) => ObservableInput<R>,
  seed: T,
): OperatorFunction<T, R> {
  return (source) =>
    new Observable<R>((sub) => {
      let latest = seed;
      const running = source.subscribe({
        next: (value) => {
          latest = value;
          let out: R;
          try {
            out = each(value);
          } catch (err) {
            sub.error(err);
            return;
          }
          sub.next(out);
        },
        error: (err: unknown) => sub.error(err),
        complete: () => {
          let next: Observable<R>;
          try {
            next = from(then(latest));
          } catch (err) {
            sub.error(err);
            return;
          }
          sub.add(
            next.subscribe({
              next: (v) => sub.next(v),
              error: (err: unknown) => sub.error(err),
              complete: () => sub.complete(),
            }),
          );
        },
      });
      return running;
    });
}
