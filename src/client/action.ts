import {
  catchError,
  concat,
  defer,
  dematerialize,
  materialize,
  merge,
  mergeMap,
  Observable,
  of,
  type SchedulerLike,
  takeWhile,
  throwError,
  timeout,
  timer,
} from 'rxjs';
import type { LocalCache } from '../cache/store.js';
import type { OutgoingFile } from '../protocol/filestream.js';
import type { LoadDispatcher, Placement } from './dispatch.js';
import { type Endpoint, hostKey } from './endpoint.js';
import { isConnectionRefused, JobError } from './errors.js';
import { type ActionRef, type FailureReason, NO_PHASES, type RakeEvent } from './events.js';
import { runHere } from './here.js';
import type { OutputClaims } from './landing.js';
import {
  type Ballot,
  type ChoiceView,
  chooseHost,
  EMPTY_BALLOT,
  pickHost,
} from './ops/choose-host.js';
import { eachThen } from './ops/each-then.js';
import {
  AttemptFailure,
  type AttemptInfo,
  asAttemptFailure,
  JobDeadline,
  jobEvents,
} from './ops/job-events.js';
import { retryOnLostHost } from './ops/retry-on-lost-host.js';
import type { CostPoller, PollRound } from './poll.js';
import type { Assignment, Assignments } from './select.js';
import type { Transport } from './transport.js';
/** An action ready to run: its identity and its requirements, checked and named. */
export interface PlannedAction {
  readonly ref: ActionRef;
  readonly files: readonly OutgoingFile[];
  /** The outputs its actionset's actions wrote so far: a second writer of one is refused. */
  readonly claims?: OutputClaims;
}

/** What every action of a run shares: the wire, the ledger, the policies. */
export interface ActionContext {
  readonly transport: Transport;
  readonly poller: CostPoller;
  /**
   * Slot-filling dispatch from the hosts' pushed loads (extension `load`): when set, a remote
   * action takes a host from it, with no cost poll; it polls only when told to (no host
   * streams its load, or the streaming ones are full beside a host that is polled).
   */
  readonly dispatcher?: LoadDispatcher;
  readonly ledger: Assignments;
  readonly scheduler: SchedulerLike;
  /** The Rakefile's directory: outputs land here. */
  readonly outputDir: string;
  /** The Rakefile itself, which no output may replace (absent for a Rakefile from a string). */
  readonly rakefilePath?: string;
  /** `localhost:PORT`: local actions and the fallback go here. */
  readonly localEndpoint: Endpoint;
  /**
   * Makes sure a server listens at `localEndpoint`, starting an embedded one if allowed;
   * emits the `embedded-server-started` event if it did. Completes at once when already
   * known.
   */
  readonly ensureLocal: (reason: 'local-actions' | 'fallback') => Observable<RakeEvent>;
  /**
   * Whether a host is known to listen without answering (the embedded-server probe
   * connected but got no cost, and no poll has had one since): never taken as a
   * `slow-host`, since a job sent there would wait for a reply that never comes.
   */
  readonly silent?: (host: string) => boolean;
  /** How many times an action moves to another host after losing one. */
  readonly retries: number;
  /** Run a remote action on the local server when no remote host answers. */
  readonly fallback: boolean;
  readonly connectTimeoutMs: number;
  readonly jobTimeoutMs: number | undefined;
  /**
   * Run local actions in the Rakefile's directory, by this process, as make runs recipes
   * (`--local-here`), instead of as jobs of the local server.
   */
  readonly localHere?: boolean;
  /** `--cache`: the local action cache remote actions are looked up in and stored to. */
  readonly cache?: LocalCache;
}

/**
 * One action as an Observable of its events: for a remote action the cost poll, the
 * choice, the job on the chosen host (moving to the next-cheapest host if that one drops
 * the connection before replying, or to the local server if no remote host answers); for a
 * local action the job on the local server. Never errors: a failure is an `action-failed`
 * event. Unsubscribing closes the connections, which makes the server kill the command.
 */
export function runAction(ctx: ActionContext, action: PlannedAction): Observable<RakeEvent> {
  return action.ref.remote ? remoteAction(ctx, action) : localAction(ctx, action);
}

function localAction(ctx: ActionContext, action: PlannedAction): Observable<RakeEvent> {
  return defer(() => {
    const started = ctx.scheduler.now();
    if (ctx.localHere === true) {
      return runHere(
        { scheduler: ctx.scheduler, directory: ctx.outputDir, jobTimeoutMs: ctx.jobTimeoutMs },
        action.ref,
        started,
      );
    }
    return concat(
      ctx.ensureLocal('local-actions'),
      attemptLocal(ctx, action, { attempt: 1, reason: 'local', costs: [], pollMs: 0, started }),
    );
  });
}

/** Where a remote action stands between attempts. */
interface Tries {
  /** The attempt about to be made (1 for the first). */
  readonly attempt: number;
  /** Hosts that dropped this action's job (or refused our token): never chosen again for it. */
  readonly tried: ReadonlySet<string>;
  /** Jobs lost by a host that dropped them: at most `ctx.retries` are tried again. */
  readonly drops: number;
  /** The host the last attempt lost, if any. */
  readonly lost: string | undefined;
}

/**
 * A remote action: the pipeline `pollCosts → chooseHost → (job on the host: jobEvents) →
 * retryOnLostHost`, polling again when a retry finds no answered host left.
 */
function remoteAction(ctx: ActionContext, action: PlannedAction): Observable<RakeEvent> {
  return defer(() => {
    const started = ctx.scheduler.now();
    const tries: Tries = { attempt: 1, tried: new Set(), drops: 0, lost: undefined };
    return ctx.dispatcher === undefined
      ? pollAndRun(ctx, action, started, tries)
      : placeAndRun(ctx, ctx.dispatcher, action, started, tries);
  });
}

/**
 * The host the load streams name as soon as one has room (`LoadDispatcher`), the job there,
 * and on a lost host the next placement without it; a cost poll instead when the dispatcher
 * says so (docs/client.md, "Load streams").
 */
function placeAndRun(
  ctx: ActionContext,
  dispatcher: LoadDispatcher,
  action: PlannedAction,
  started: number,
  tries: Tries,
): Observable<RakeEvent> {
  return afterPlacement(dispatcher.place(tries.tried), (placement) => {
    if (placement.kind === 'poll') {
      return pollAndRun(ctx, action, started, tries, placement.round);
    }
    const { host } = placement;
    const info: AttemptInfo = {
      attempt: tries.attempt,
      reason: tries.attempt > 1 ? 'retry' : placement.reason,
      costs: [],
      pollMs: ctx.scheduler.now() - started,
      started,
    };
    return attemptOn(
      ctx,
      action,
      placement.endpoint,
      info,
      placement.assignment,
      placement.note,
    ).pipe(
      retryOnLostHost({
        retries: ctx.retries,
        drops: tries.drops,
        fail: (failure) => of(failedEvent(ctx, action, failure, host, info)),
        moveOn: ({ failure, refusedUs, drops }) => {
          if (refusedUs) ctx.poller.ban(host, failure.error.message);
          const next: Tries = {
            attempt: tries.attempt + 1,
            tried: new Set([...tries.tried, host]),
            drops,
            lost: host,
          };
          const retried: RakeEvent = {
            type: 'action-retried',
            time: ctx.scheduler.now(),
            action: action.ref,
            fromHost: host,
            reason: failure.error.message,
            attempt: next.attempt,
          };
          return concat(of(retried), placeAndRun(ctx, dispatcher, action, started, next));
        },
      }),
    );
  });
}

/**
 * The events of `run` on the placement `place$` gives (it gives one): a `mergeMap` over a
 * single value, in one subscriber. The run's events go straight to the action's subscriber,
 * with no inner subscriber of a merge to pass (every event of every placed action did).
 */
function afterPlacement(
  place$: Observable<Placement>,
  run: (placement: Placement) => Observable<RakeEvent>,
): Observable<RakeEvent> {
  return new Observable<RakeEvent>((sub) => {
    let placed = false;
    sub.add(
      place$.subscribe({
        next: (placement) => {
          placed = true;
          let events: Observable<RakeEvent>;
          try {
            events = run(placement);
          } catch (err) {
            sub.error(err);
            return;
          }
          // Subscribed with the action's own subscriber: its end ends the action.
          events.subscribe(sub);
        },
        error: (err: unknown) => sub.error(err),
        // The placement ends there; the action ends with its events.
        complete: () => {
          if (!placed) sub.complete();
        },
      }),
    );
  });
}

/**
 * One cost poll (a fresh round, or one shared with actions polling at the same instant, or
 * `given`: the load streams' opening round), reported answer by answer (`cost-polled`), then
 * the choice and the attempts.
 */
function pollAndRun(
  ctx: ActionContext,
  action: PlannedAction,
  started: number,
  tries: Tries,
  given?: PollRound,
): Observable<RakeEvent> {
  return defer(() => {
    const round = given ?? ctx.poller.join();
    const view: ChoiceView = {
      load: (host) => ctx.ledger.load(host, round.seq),
      exclude: tries.tried,
    };
    return round.results.pipe(
      chooseHost(view),
      // Nothing beats an effective cost of 0, and ties go to the first answer: stop there.
      takeWhile((ballot) => !ballot.idle, true),
      // Each answer reported, then the choice from the last ballot (one subscriber per
      // answer: with 64 hosts this runs 64 times per action).
      eachThen(
        (ballot): RakeEvent => ({
          type: 'cost-polled',
          time: ctx.scheduler.now(),
          action: action.ref,
          pollId: round.id,
          cost: ballot.last as NonNullable<Ballot['last']>,
        }),
        (ballot) => choose(ctx, action, started, ballot, view, tries, true),
        EMPTY_BALLOT,
      ),
    );
  });
}

/**
 * The attempt on the host `ballot` names (retrying on the next one if it drops the job),
 * or, with no host left, a new poll (`fresh` false: this ballot was used up), the local
 * server (`fallback`), or the failure.
 */
function choose(
  ctx: ActionContext,
  action: PlannedAction,
  started: number,
  ballot: Ballot,
  view: ChoiceView,
  tries: Tries,
  fresh: boolean,
): Observable<RakeEvent> {
  return defer(() => {
    const pollMs = ctx.scheduler.now() - started;
    const picked = pickHost(ballot, view, {
      fresh,
      attempt: tries.attempt,
      inFlight: (host) => ctx.ledger.inFlight(host),
      silent: ctx.silent,
    });
    const info: AttemptInfo = {
      attempt: tries.attempt,
      reason: picked?.reason ?? 'local',
      costs: [...ballot.seen],
      pollMs,
      started,
    };
    if (picked !== undefined) {
      return attemptOn(ctx, action, picked.endpoint, info).pipe(
        retryOnLostHost({
          retries: ctx.retries,
          drops: tries.drops,
          fail: (failure) => of(failedEvent(ctx, action, failure, picked.host, info)),
          moveOn: ({ failure, refusedUs, drops }) => {
            // A host that refused our token gets no more work in this run; the action moves
            // on without using a retry (nothing ran, and no other host is at fault).
            if (refusedUs) ctx.poller.ban(picked.host, failure.error.message);
            const next: Tries = {
              attempt: tries.attempt + 1,
              tried: new Set([...tries.tried, picked.host]),
              drops,
              lost: picked.host,
            };
            const retried: RakeEvent = {
              type: 'action-retried',
              time: ctx.scheduler.now(),
              action: action.ref,
              fromHost: picked.host,
              reason: failure.error.message,
              attempt: next.attempt,
            };
            return concat(
              of(retried),
              choose(ctx, action, started, ballot, { ...view, exclude: next.tried }, next, false),
            );
          },
        }),
      );
    }
    // The answers this choice had are used up: ask again before giving up.
    if (!fresh) return pollAndRun(ctx, action, started, tries);
    const { lost } = tries;
    const seen = ballot.seen;
    const why =
      lost !== undefined
        ? `no other host answered after ${lost} ${ctx.poller.isBanned(lost) ? 'refused our token' : 'dropped the job'}`
        : seen.length === 0
          ? 'no hosts are configured'
          : `no host answered the cost poll (${seen.map((c) => `${c.host}: ${c.error ?? 'dropped the job'}`).join(', ')})`;
    if (ctx.fallback) return fallbackLocal(ctx, action, why, info);
    const failure = new AttemptFailure(new JobError('host-lost', why, true), {
      ...NO_PHASES,
      poll: pollMs,
    });
    return of(
      failedEvent(ctx, action, failure, lost, info, lost === undefined ? 'no-host' : 'host-lost'),
    );
  });
}

function fallbackLocal(
  ctx: ActionContext,
  action: PlannedAction,
  why: string,
  info: AttemptInfo,
): Observable<RakeEvent> {
  return defer(() =>
    concat(
      of<RakeEvent>({
        type: 'fallback-local',
        time: ctx.scheduler.now(),
        action: action.ref,
        host: hostKey(ctx.localEndpoint),
        reason: why,
      }),
      ctx.ensureLocal('fallback'),
      attemptLocal(ctx, action, { ...info, reason: 'local' }),
    ),
  );
}

/** A job on the local server; losing it is final (there is nowhere else to go). */
function attemptLocal(
  ctx: ActionContext,
  action: PlannedAction,
  info: AttemptInfo,
): Observable<RakeEvent> {
  const host = hostKey(ctx.localEndpoint);
  return attemptOn(ctx, action, ctx.localEndpoint, info).pipe(
    catchError((err: unknown) => {
      const failure = asAttemptFailure(err);
      const refused = isConnectionRefused(failure.error.cause);
      if (refused) {
        const why = `no server listens at ${host} for local actions (start one, or allow the embedded server)`;
        const f = new AttemptFailure(
          new JobError('host-lost', why, true, failure.error),
          failure.phases,
        );
        return of(failedEvent(ctx, action, f, host, info, 'no-host'));
      }
      return of(failedEvent(ctx, action, failure, host, info));
    }),
  );
}

/**
 * One attempt on one host: `host-chosen`, then the job's events (`jobEvents`). The host is
 * entered in the ledger while the job's connection is open. Errors with an
 * {@link AttemptFailure}.
 */
function attemptOn(
  ctx: ActionContext,
  action: PlannedAction,
  endpoint: Endpoint,
  info: AttemptInfo,
  placed?: Assignment,
  /** Told how a job that ran (not a stored result) went: the dispatcher's adaptive queue. */
  ran?: (job: { readonly queuedMs: number; readonly runMs: number }) => void,
): Observable<RakeEvent> {
  // `host-chosen`, then the job's events, the host's room released at the end: what
  // `defer`, `concat(of(chosen), …)` and `finalize` did, in one subscriber per attempt.
  return new Observable<RakeEvent>((sub) => {
    const { scheduler } = ctx;
    const host = hostKey(endpoint);
    // A placement of the dispatcher is already in the ledger; releasing it frees its room.
    const assignment = placed ?? ctx.ledger.assign(host);
    sub.add(() => assignment.release());
    const t0 = scheduler.now();
    const job$ = withDeadline(
      ctx,
      ctx.transport
        .sendJob(endpoint, {
          command: action.ref.command,
          files: action.files,
          outputDir: ctx.outputDir,
          ...(ctx.rakefilePath === undefined ? {} : { refusedFiles: [ctx.rakefilePath] }),
          ...(action.claims === undefined
            ? {}
            : { claim: (names: readonly string[]) => action.claims?.claim(names, action.ref) }),
          ...(ctx.cache !== undefined && action.ref.remote && action.ref.noCache !== true
            ? { cache: ctx.cache, connectTimeoutMs: ctx.connectTimeoutMs }
            : {}),
        })
        .pipe(
          timeout({
            first: ctx.connectTimeoutMs,
            scheduler,
            with: () =>
              throwError(
                () =>
                  new JobError(
                    'host-lost',
                    `no connection within ${ctx.connectTimeoutMs} ms`,
                    true,
                  ),
              ),
          }),
        ),
    );
    const chosen: RakeEvent = {
      type: 'host-chosen',
      time: t0,
      action: action.ref,
      host,
      reason: info.reason,
      costs: info.costs,
      attempt: info.attempt,
    };
    sub.next(chosen);
    if (sub.closed) return;
    sub.add(
      job$.pipe(jobEvents({ action: action.ref, host, info }, scheduler, t0)).subscribe({
        next:
          ran === undefined
            ? (e) => sub.next(e)
            : (e) => {
                // Only a host that says when a job starts (`queue`) tells whether it waited.
                if (
                  e.type === 'action-succeeded' &&
                  e.cached === undefined &&
                  e.phases.queued !== undefined
                ) {
                  ran({ queuedMs: e.phases.queued, runMs: e.phases.run });
                }
                sub.next(e);
              },
        error: (err: unknown) => sub.error(err),
        complete: () => sub.complete(),
      }),
    );
  });
}

/**
 * A deadline for the whole job (`jobTimeoutMs`). (`raceWith` would not do: the job wins the
 * race with its first progress event, `connected`, and the timer is dropped.) The job's own
 * completion, carried through materialize, ends the merge and so the timer.
 */
function withDeadline<T>(ctx: ActionContext, job$: Observable<T>): Observable<T> {
  const ms = ctx.jobTimeoutMs;
  if (ms === undefined) return job$;
  const expired$ = timer(ms, ctx.scheduler).pipe(
    mergeMap(() => throwError(() => new JobDeadline(`the job took longer than ${ms} ms`))),
  );
  return merge(job$.pipe(materialize()), expired$).pipe(dematerialize());
}

const FAILURE_REASON: Record<JobError['kind'], FailureReason> = {
  'host-lost': 'host-lost',
  'protocol-error': 'protocol-error',
  'bad-output': 'bad-output',
  timeout: 'timeout',
  'requirement-collision': 'requirement-collision',
};

function failedEvent(
  ctx: ActionContext,
  action: PlannedAction,
  failure: AttemptFailure,
  host: string | undefined,
  info: AttemptInfo,
  reason: FailureReason = FAILURE_REASON[failure.error.kind],
): RakeEvent {
  const time = ctx.scheduler.now();
  return {
    type: 'action-failed',
    time,
    action: action.ref,
    reason,
    ...(host === undefined ? {} : { host }),
    position: action.ref.position,
    message: failure.error.message,
    stderr: '',
    phases: failure.phases,
    attempts: info.attempt,
    ms: time - info.started,
  };
}
