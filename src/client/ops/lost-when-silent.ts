/**
 * Operator `lostWhenSilent`: a host's states pass through; once one of them has a silence
 * (`silenceOf`), a `lost` state follows if nothing else comes within it. The same as
 * `switchMap(s => concat(of(s), timer(silence).pipe(map(lost))))`, without an inner
 * subscription and a timer per state: a load stream says a load for every job that starts
 * or ends, and that switchMap cost six subscriptions and a timer set and cleared per load
 * message. Here one timer stands for the latest deadline: a state that pushes the deadline
 * later only moves it, and the timer, when it fires early, sleeps the rest (a state with a
 * shorter silence, which brings the deadline closer, sets the timer again).
 *
 *     states          a-a-a---------b-----u|       silence 5 (u: none)
 *     lostWhenSilent  a-a-a----l----b----lu|       l at 4 + 5; u cancels nothing left
 *
 * As with the switchMap, the output ends when the states end and no `lost` is still due
 * (one that is due comes first); an error ends it at once.
 */
import {
  type MonoTypeOperatorFunction,
  Observable,
  type SchedulerLike,
  type Subscription,
} from 'rxjs';

export interface SilenceOptions<S> {
  /** How long after `state` the host counts as lost without a word (`undefined`: never). */
  readonly silenceOf: (state: S) => number | undefined;
  /** The state said when the silence of the latest one has passed. */
  readonly lost: (silenceMs: number) => S;
  readonly scheduler: SchedulerLike;
}

export function lostWhenSilent<S>(options: SilenceOptions<S>): MonoTypeOperatorFunction<S> {
  const { silenceOf, lost, scheduler } = options;
  return (source) =>
    new Observable<S>((sub) => {
      let timer: Subscription | undefined;
      /** When the timer set fires, when the latest state's silence ends, and that silence. */
      let due = 0;
      let deadline = 0;
      let silence = 0;
      let ended = false;
      const cancel = () => {
        timer?.unsubscribe();
        timer = undefined;
      };
      const arm = (ms: number) => {
        due = scheduler.now() + ms;
        timer = scheduler.schedule(fire, ms);
      };
      const fire = () => {
        timer = undefined;
        const left = deadline - scheduler.now();
        if (left > 0) {
          arm(left);
          return;
        }
        sub.next(lost(silence));
        if (ended) sub.complete();
      };
      const states = source.subscribe({
        next: (s) => {
          const ms = silenceOf(s);
          if (ms === undefined) cancel();
          else {
            silence = ms;
            deadline = scheduler.now() + ms;
            if (timer === undefined || due > deadline) {
              cancel();
              arm(ms);
            }
          }
          sub.next(s);
        },
        error: (err: unknown) => {
          cancel();
          sub.error(err);
        },
        complete: () => {
          ended = true;
          if (timer === undefined) sub.complete();
        },
      });
      return () => {
        cancel();
        states.unsubscribe();
      };
    });
}
