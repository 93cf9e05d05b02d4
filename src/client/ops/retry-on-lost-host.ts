/**
 * Operator `retryOnLostHost`: an attempt that errors because its host dropped the job (or
 * went silent past the job timeout) before replying moves on, as `moveOn` says, at most
 * `retries` times; a host that refused our token moves on without using a retry. Any other
 * failure, or one retry too many, is the action's `action-failed` (`fail`).
 *
 *     attempt on a  -h--#                      # host-lost before the reply
 *     retryOnLost   -h--(moveOn(a) ...)        moveOn: action-retried, then the next host
 *
 *     attempt on a  -h--#                      # a protocol error, or no retry left
 *     retryOnLost   -h--(F|)                   F: fail(failure)
 */
import { catchError, type MonoTypeOperatorFunction, type Observable } from 'rxjs';
import { TokenRefused } from '../errors.js';
import type { RakeEvent } from '../events.js';
import { type AttemptFailure, asAttemptFailure } from './job-events.js';

/** Why an attempt's host is left behind. */
export interface LostHost {
  readonly failure: AttemptFailure;
  /** The host refused our token: nothing ran, no retry is used. */
  readonly refusedUs: boolean;
  /** Hosts that dropped this action's job so far, this one included. */
  readonly drops: number;
}

export interface RetryPolicy {
  /** How many dropped jobs may be tried again. */
  readonly retries: number;
  /** Drops before this attempt. */
  readonly drops: number;
  /** The rest of the action after losing the host. */
  readonly moveOn: (lost: LostHost) => Observable<RakeEvent>;
  /** The action's end when it may not move on. */
  readonly fail: (failure: AttemptFailure) => Observable<RakeEvent>;
}

/** True when the host dropped the job, or froze past the job timeout, before replying. */
export function lostBeforeReply(failure: AttemptFailure): boolean {
  const kind = failure.error.kind;
  return (kind === 'host-lost' || kind === 'timeout') && failure.error.beforeReply;
}

export function retryOnLostHost(policy: RetryPolicy): MonoTypeOperatorFunction<RakeEvent> {
  return catchError((err: unknown) => {
    const failure = asAttemptFailure(err);
    const refusedUs = failure.error instanceof TokenRefused;
    if (refusedUs) return policy.moveOn({ failure, refusedUs, drops: policy.drops });
    if (!lostBeforeReply(failure) || policy.drops >= policy.retries) return policy.fail(failure);
    return policy.moveOn({ failure, refusedUs, drops: policy.drops + 1 });
  });
}
