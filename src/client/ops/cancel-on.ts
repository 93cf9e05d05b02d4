/**
 * Operator `cancelOn(failures$)`: `--fail-fast` for one action. The action's events pass
 * until `failures$` first emits (a sibling failed); then the action is unsubscribed (its
 * connection closed, which makes the server kill the command) and ends with
 * `action-cancelled`. An action that already succeeded or failed is left alone, and one
 * whose siblings failed before it started is cancelled without being subscribed at all.
 *
 *     action     -h---o---            h host-chosen
 *     failures$  -----x
 *     cancelOn   -h---(C|)            C: action-cancelled, on h's host
 *
 *     action     -h-S-|               S action-succeeded
 *     failures$  -----x
 *     cancelOn   -h-S-|               ended before the failure: left alone
 *
 * The action's events and the first failure are merged and folded (`scan`): the fold keeps
 * the host the action was last sent to and whether it ended; the stream is taken while the
 * fold says it is not over (`takeWhile`), which unsubscribes the action when cancelled.
 */
import {
  endWith,
  filter,
  type MonoTypeOperatorFunction,
  map,
  merge,
  type Observable,
  scan,
  take,
  takeWhile,
} from 'rxjs';
import type { RakeEvent } from '../events.js';

const CANCEL = Symbol('cancel');
const OVER = Symbol('over');

/** The action as `cancelOn` follows it. */
export interface Followed {
  /** The host it was last sent to. */
  readonly host: string | undefined;
  /** It succeeded or failed: a failure elsewhere no longer cancels it. */
  readonly ended: boolean;
  /** Nothing more passes: the action's events ended, or it was cancelled. */
  readonly over: boolean;
  /** What to pass on for this step: an event of the action, or its cancellation. */
  readonly out: RakeEvent | typeof CANCEL | undefined;
}

const START: Followed = { host: undefined, ended: false, over: false, out: undefined };

/** Folds one of the action's events, a failure, or the action's end (pure). */
export function follow(s: Followed, x: RakeEvent | typeof CANCEL | typeof OVER): Followed {
  if (x === OVER) return { ...s, over: true, out: undefined };
  if (x === CANCEL) return s.ended ? { ...s, out: undefined } : { ...s, over: true, out: CANCEL };
  return {
    host: x.type === 'host-chosen' ? x.host : s.host,
    ended: s.ended || x.type === 'action-succeeded' || x.type === 'action-failed',
    over: false,
    out: x,
  };
}

/**
 * `cancelled(host)` makes the `action-cancelled` event, `host` being the host the action was
 * last sent to (`undefined` before any). `failures$` must replay a past failure to a late
 * subscriber (a `ReplaySubject(1)`), so that an action started after it is cancelled at once.
 */
export function cancelOn(
  failures$: Observable<unknown>,
  cancelled: (host: string | undefined) => RakeEvent,
): MonoTypeOperatorFunction<RakeEvent> {
  return (action$) =>
    // The failure is subscribed first: one already there ends this before the action starts.
    merge(
      failures$.pipe(
        take(1),
        map((): typeof CANCEL => CANCEL),
      ),
      action$.pipe(endWith<RakeEvent | typeof OVER>(OVER)),
    ).pipe(
      scan(follow, START),
      takeWhile((s) => !s.over, true),
      filter((s) => s.out !== undefined),
      map((s) => (s.out === CANCEL ? cancelled(s.host) : (s.out as RakeEvent))),
    );
}
