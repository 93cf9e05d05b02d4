/**
 * Operator `pollCosts`: every host asked its cost at once, one {@link CostResult} per host in
 * the order the answers arrive, each host with its own time limits (connect, then reply).
 *
 *     query(a)  --c----3|            a: connected, then cost 3
 *     query(b)  --c-------------     b: connected, silent past the reply limit
 *     query(c)  -------------        c: no connection past the connect limit
 *     pollCosts ------A--C---B|      A = a:3, C = c unreachable, B = b slow
 *
 * A host that refuses, times out, answers garbage or closes without answering yields an
 * `ok: false` result, never an error: one dead host cannot spoil the poll.
 */
import {
  asyncScheduler,
  catchError,
  defer,
  filter,
  map,
  merge,
  type Observable,
  of,
  type SchedulerLike,
  take,
  tap,
  throwError,
  throwIfEmpty,
  timeout,
} from 'rxjs';
import { TlsError } from '../../tls/index.js';
import { type Endpoint, hostKey } from '../endpoint.js';
import { describeError, errorCode, isConnectionError } from '../errors.js';
import { type HostTrouble, troubleOf } from '../hosts.js';
import type { CostProbe, CostResult, PollFailure, QueryCost } from '../poll.js';

/** Per-host limits of a cost poll. */
export interface PollOptions {
  /** Time allowed for the TCP connection. */
  readonly connectTimeoutMs: number;
  /** Time allowed, once connected, for the answer. */
  readonly replyTimeoutMs: number;
  /** Clock and timers (the TestScheduler in marble tests). */
  readonly scheduler?: SchedulerLike;
}

/**
 * Asks every host its cost at once, each over its own connection, and emits one result per
 * host in the order they arrive (that order breaks ties). A host that refuses, times out
 * (connect or reply) or answers garbage yields an `ok: false` result, never an error, so
 * one dead host cannot spoil the poll.
 */
export function pollCosts(
  hosts: readonly Endpoint[],
  query: QueryCost,
  options: PollOptions,
): Observable<CostResult> {
  const scheduler = options.scheduler ?? asyncScheduler;
  return merge(...hosts.map((endpoint) => askOne(endpoint, query, options, scheduler)));
}

/** One host's cost query: exactly one result, never an error. */
function askOne(
  endpoint: Endpoint,
  query: QueryCost,
  options: PollOptions,
  scheduler: SchedulerLike,
): Observable<CostResult> {
  return defer(() => {
    const host = hostKey(endpoint);
    const started = scheduler.now();
    const rtt = () => scheduler.now() - started;
    let connected = false;
    return query(endpoint).pipe(
      tap((p) => {
        if (p.type === 'connected') connected = true;
      }),
      timeout({
        first: options.connectTimeoutMs,
        each: options.replyTimeoutMs,
        scheduler,
        with: ({ seen }) =>
          throwError(() =>
            seen === 0
              ? new PollTimeout(
                  endpoint.tls === true
                    ? `no TLS connection within ${options.connectTimeoutMs} ms (connect and handshake; a plain port that waits in silence, as the reference rakeserver's does, never answers TLS: write it without rakes://)`
                    : `no connection within ${options.connectTimeoutMs} ms`,
                  'unreachable',
                )
              : new PollTimeout(`no answer within ${options.replyTimeoutMs} ms`, 'slow'),
          ),
      }),
      filter((p): p is Extract<CostProbe, { type: 'cost' }> => p.type === 'cost'),
      take(1),
      map(
        (p): CostResult => ({
          ok: true,
          host,
          endpoint,
          cost: p.cost,
          rttMs: rtt(),
          ...(p.peer === undefined ? {} : { peer: p.peer }),
        }),
      ),
      // A query that ends without an answer is a failure too.
      throwIfEmpty(() => new NoAnswer()),
      catchError((err: unknown) => {
        const [failure, trouble] = classify(err, connected);
        return of<CostResult>({
          ok: false,
          host,
          endpoint,
          error: describeError(err),
          rttMs: rtt(),
          failure,
          trouble,
        });
      }),
    );
  });
}

/** Why a query failed, as the poll and the summary's silent hosts say it. */
function classify(err: unknown, connected: boolean): [PollFailure, HostTrouble] {
  if (err instanceof NoAnswer) return ['unreachable', 'closed'];
  if (err instanceof PollTimeout) return [err.failure, 'timed-out'];
  const failure: PollFailure = connected && !isConnectionError(err) ? 'bad-answer' : 'unreachable';
  const trouble: HostTrouble =
    err instanceof TlsError
      ? 'tls'
      : failure === 'bad-answer'
        ? 'bad-answer'
        : (troubleOf(errorCode(err)) ?? 'closed');
  return [failure, trouble];
}

/** A cost query that ran out of time, connecting (`unreachable`) or waiting (`slow`). */
class PollTimeout extends Error {
  constructor(
    message: string,
    readonly failure: 'unreachable' | 'slow',
  ) {
    super(message);
  }
}

/** A cost query that ended without an answer. */
class NoAnswer extends Error {
  constructor() {
    super('closed without answering');
  }
}
