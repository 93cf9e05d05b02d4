import {
  catchError,
  concat,
  defer,
  dematerialize,
  finalize,
  map,
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
import { type Endpoint, hostKey } from './endpoint.js';
import {
  describeError,
  isConnectionError,
  isConnectionRefused,
  JobError,
  TokenRefused,
} from './errors.js';
import {
  type ActionRef,
  type ChoiceReason,
  type CostSeen,
  type FailureReason,
  NO_PHASES,
  type PhaseTimings,
  type RakeEvent,
} from './events.js';
import { runHere } from './here.js';
import type { OutputClaims } from './landing.js';
import type { ActionOutput } from './output.js';
import type { CostPoller } from './poll.js';
import {
  type Assignments,
  type CostAnswer,
  effectiveCost,
  type HostChoice,
  pickCheapestHost,
} from './select.js';
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

/** A failed attempt, with the phases it got through. */
class AttemptFailure extends Error {
  constructor(
    readonly error: JobError,
    readonly phases: PhaseTimings,
  ) {
    super(error.message);
  }
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

function remoteAction(ctx: ActionContext, action: PlannedAction): Observable<RakeEvent> {
  return defer(() => {
    const { scheduler, ledger } = ctx;
    const started = scheduler.now();
    /** Hosts that dropped this action's job: never chosen again for it. */
    const tried = new Set<string>();
    /** Jobs lost by a host that dropped them: at most `ctx.retries` are tried again. */
    let drops = 0;

    // One cost poll (a fresh round, or one shared with actions polling at the same instant),
    // then the choice and the attempts; a retry that finds no answered host left polls again.
    const pollAndRun = (attempt: number, lost: string | undefined): Observable<RakeEvent> =>
      defer(() => {
        const round = ctx.poller.join();
        const answers: CostAnswer[] = [];
        const slow: string[] = [];
        const endpoints = new Map<string, Endpoint>();
        const seen: CostSeen[] = [];
        const load = (host: string) => ledger.load(host, round.seq);
        let idle = false;

        const polled$ = round.results.pipe(
          map((r): RakeEvent => {
            let cost: CostSeen;
            if (r.ok) {
              answers.push({ host: r.host, cost: r.cost });
              endpoints.set(r.host, r.endpoint);
              const eff = tried.has(r.host) ? undefined : effectiveCost(r.cost, load(r.host));
              cost = {
                host: r.host,
                cost: r.cost,
                ...(eff === undefined ? {} : { effectiveCost: eff }),
                rttMs: r.rttMs,
              };
            } else {
              cost = { host: r.host, error: r.error, rttMs: r.rttMs };
              if (r.failure === 'slow') {
                slow.push(r.host);
                endpoints.set(r.host, r.endpoint);
              }
            }
            seen.push(cost);
            return {
              type: 'cost-polled',
              time: scheduler.now(),
              action: action.ref,
              pollId: round.id,
              cost,
            };
          }),
          // Nothing beats an effective cost of 0, and ties go to the first answer: stop here.
          takeWhile((e) => {
            idle = e.type === 'cost-polled' && e.cost.effectiveCost === 0;
            return !idle;
          }, true),
        );

        // No host answered in time, but some were up and slow to answer (busy, or on a loaded
        // machine): rather than give up on them, take the one running fewest of our jobs.
        const leastAssigned = (): HostChoice | undefined => {
          let best: HostChoice | undefined;
          for (const host of slow) {
            if (tried.has(host) || ctx.silent?.(host) === true) continue;
            const mine = ledger.inFlight(host);
            if (best === undefined || mine < best.effectiveCost) {
              best = { host, effectiveCost: mine, reason: 'slow-host' };
            }
          }
          return best;
        };

        const choose = (
          n: number,
          fresh: boolean,
          lostHost: string | undefined,
        ): Observable<RakeEvent> => {
          const pollMs = scheduler.now() - started;
          const choice =
            pickCheapestHost(answers, load, tried) ?? (fresh ? leastAssigned() : undefined);
          if (choice !== undefined) {
            const reason = n > 1 ? 'retry' : idle && fresh ? 'first-idle' : choice.reason;
            const endpoint = endpoints.get(choice.host) as Endpoint;
            const info = { attempt: n, reason, costs: [...seen], pollMs, started };
            return attemptOn(ctx, action, endpoint, info).pipe(
              catchError((err: unknown) => {
                const failure = asAttemptFailure(err);
                // A host that dropped the job, or went silent past the job timeout (frozen,
                // partitioned), before replying: the action moves to the next host.
                const kind = failure.error.kind;
                const dropped =
                  (kind === 'host-lost' || kind === 'timeout') && failure.error.beforeReply;
                // A host that refused our token: no more work for it in this run; the action
                // moves on without using a retry (nothing ran, and no other host is at fault).
                const refusedUs = failure.error instanceof TokenRefused;
                if (refusedUs) ctx.poller.ban(choice.host, failure.error.message);
                if (!refusedUs && (!dropped || drops >= ctx.retries)) {
                  return of(failedEvent(ctx, action, failure, choice.host, info));
                }
                if (!refusedUs) drops++;
                tried.add(choice.host);
                const retried: RakeEvent = {
                  type: 'action-retried',
                  time: scheduler.now(),
                  action: action.ref,
                  fromHost: choice.host,
                  reason: failure.error.message,
                  attempt: n + 1,
                };
                return concat(of(retried), choose(n + 1, false, choice.host));
              }),
            );
          }
          // The answers this choice had are used up: ask again before giving up.
          if (!fresh) return pollAndRun(n, lostHost);
          const info = { attempt: n, reason: 'local' as const, costs: [...seen], pollMs, started };
          const why =
            lostHost !== undefined
              ? `no other host answered after ${lostHost} ${ctx.poller.isBanned(lostHost) ? 'refused our token' : 'dropped the job'}`
              : seen.length === 0
                ? 'no hosts are configured'
                : `no host answered the cost poll (${seen.map((c) => `${c.host}: ${c.error ?? 'dropped the job'}`).join(', ')})`;
          if (ctx.fallback) return fallbackLocal(ctx, action, why, info);
          const failure = new AttemptFailure(new JobError('host-lost', why, true), {
            ...NO_PHASES,
            poll: pollMs,
          });
          return of(
            failedEvent(
              ctx,
              action,
              failure,
              lostHost,
              info,
              lostHost === undefined ? 'no-host' : 'host-lost',
            ),
          );
        };

        return concat(
          polled$,
          defer(() => choose(attempt, true, lost)),
        );
      });

    return pollAndRun(1, undefined);
  });
}

interface AttemptInfo {
  readonly attempt: number;
  readonly reason: ChoiceReason;
  readonly costs: readonly CostSeen[];
  readonly pollMs: number;
  /** When the action started, for its total `ms`. */
  readonly started: number;
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
 * One attempt on one host: `host-chosen`, then the job's events. The host is entered in
 * the ledger while the job's connection is open. Errors with an {@link AttemptFailure}.
 */
function attemptOn(
  ctx: ActionContext,
  action: PlannedAction,
  endpoint: Endpoint,
  info: AttemptInfo,
): Observable<RakeEvent> {
  return defer(() => {
    const { scheduler } = ctx;
    const host = hostKey(endpoint);
    const assignment = ctx.ledger.assign(host);
    const t0 = scheduler.now();
    let tConnected = t0;
    let tUploaded = t0;
    let tReplied = t0;
    /**
     * When the job started on the host (extension `queue`: at `!C` unless it said `queued`,
     * then at its `started`); `undefined` while queued, or on a host that cannot say.
     */
    let tStarted: number | undefined;
    /** The host says when a queued job starts: `queued` is a phase of its own. */
    let startReported = false;
    let stage: 'connect' | 'upload' | 'run' | 'download' = 'connect';
    let stdout: ActionOutput | undefined;
    /** A successful command's stderr, from a host that carries it (extension `stderr`). */
    let warnings: string | undefined;
    let files: readonly string[] = [];
    let downloadBytes = 0;
    let failed = false;
    /** The action cache's key, when it answered for the job. */
    let cachedKey: string | undefined;
    let cachedByServer = false;
    const phases = (): PhaseTimings => {
      const t = scheduler.now();
      const ran = stage === 'run' || stage === 'download';
      // Until the reply (or now): queued from `!C` to the start, running from the start on.
      const upTo = stage === 'download' ? tReplied : t;
      const start = startReported ? (tStarted ?? upTo) : tUploaded;
      return {
        poll: info.pollMs,
        connect: (stage === 'connect' ? t : tConnected) - t0,
        upload: stage === 'connect' ? 0 : (stage === 'upload' ? t : tUploaded) - tConnected,
        ...(startReported ? { queued: ran ? start - tUploaded : 0 } : {}),
        run: ran ? upTo - start : 0,
        download: stage === 'download' ? t - tReplied : 0,
      };
    };

    let job$ = ctx.transport
      .runJob(endpoint, {
        command: action.ref.command,
        files: action.files,
        outputDir: ctx.outputDir,
        ...(ctx.rakefilePath === undefined ? {} : { refusedFiles: [ctx.rakefilePath] }),
        ...(action.claims === undefined
          ? {}
          : { claim: (names: readonly string[]) => action.claims?.claim(names, action.ref) }),
        ...(ctx.cache !== undefined && action.ref.remote && action.ref.noCache !== true
          ? { cache: ctx.cache }
          : {}),
      })
      .pipe(
        timeout({
          first: ctx.connectTimeoutMs,
          scheduler,
          with: () =>
            throwError(
              () =>
                new JobError('host-lost', `no connection within ${ctx.connectTimeoutMs} ms`, true),
            ),
        }),
      );
    const jobTimeoutMs = ctx.jobTimeoutMs;
    if (jobTimeoutMs !== undefined) {
      // A deadline for the whole job. (`raceWith` would not do: the job wins the race with
      // its first progress event, `connected`, and the timer is dropped.) The job's own
      // completion, carried through materialize, ends the merge and so the timer.
      const expired$ = timer(jobTimeoutMs, scheduler).pipe(
        mergeMap(() =>
          throwError(
            () =>
              new JobError(
                'timeout',
                `the job took longer than ${jobTimeoutMs} ms`,
                stage !== 'download',
              ),
          ),
        ),
      );
      job$ = merge(job$.pipe(materialize()), expired$).pipe(dematerialize());
    }

    const chosen: RakeEvent = {
      type: 'host-chosen',
      time: t0,
      action: action.ref,
      host,
      reason: info.reason,
      costs: info.costs,
      attempt: info.attempt,
    };

    const events$ = new Observable<RakeEvent>((sub) =>
      job$.subscribe({
        next: (p) => {
          const t = scheduler.now();
          switch (p.type) {
            case 'connected':
              tConnected = t;
              stage = 'upload';
              break;
            case 'uploaded':
              tUploaded = t;
              stage = 'run';
              startReported = p.startReported === true;
              // Unless the host says `queued`, the job starts as its command arrives.
              tStarted = startReported ? t : undefined;
              if (p.files > 0) {
                sub.next({
                  type: 'upload-done',
                  time: t,
                  action: action.ref,
                  host,
                  files: p.files,
                  bytes: p.bytes,
                  ms: t - tConnected,
                });
              }
              break;
            case 'queued':
              tStarted = undefined;
              sub.next({ type: 'action-queued', time: t, action: action.ref, host });
              break;
            case 'started':
              tStarted = t;
              sub.next({
                type: 'action-started',
                time: t,
                action: action.ref,
                host,
                queuedMs: t - tUploaded,
              });
              break;
            case 'replied':
              tReplied = t;
              stage = 'download';
              if (p.ok) {
                stdout = p.stdout;
                warnings = p.stderr;
                // Extension `results`: the host's stored result of its own key, not a run.
                if (p.serverHit !== undefined) {
                  cachedKey = p.serverHit;
                  cachedByServer = true;
                }
              } else {
                failed = true;
                sub.next({
                  type: 'action-failed',
                  time: t,
                  action: action.ref,
                  reason: 'exit-non-zero',
                  host,
                  position: action.ref.position,
                  message: `exited with status ${p.exitStatus ?? 'unknown'} on ${host}`,
                  stderr: p.stderr,
                  ...(p.exitStatus === undefined ? {} : { exitStatus: p.exitStatus }),
                  phases: phases(),
                  attempts: info.attempt,
                  ms: t - info.started,
                });
              }
              break;
            case 'downloaded':
              files = p.files;
              downloadBytes = p.bytes;
              break;
            case 'cached':
              // Nothing was sent: the restore is the action's only phase (as a download).
              tConnected = t0;
              tUploaded = t0;
              tReplied = t0;
              stage = 'download';
              cachedKey = p.key;
              stdout = p.stdout;
              warnings = p.stderr;
              files = p.files;
              break;
          }
        },
        error: (err: unknown) => {
          // Its stdout is never shown: the action failed (or moves to another host).
          stdout?.release();
          // The failure reply is already reported: losing the connection after it (while
          // sending `!D`) must not report the action a second time.
          if (failed) return sub.complete();
          sub.error(new AttemptFailure(asJobError(err, stage === 'download'), phases()));
        },
        complete: () => {
          if (!failed) {
            const t = scheduler.now();
            if (stdout !== undefined && stdout.size > 0)
              sub.next({ type: 'output', time: t, action: action.ref, host, stdout });
            sub.next({
              type: 'action-succeeded',
              time: t,
              action: action.ref,
              host,
              exitStatus: 0,
              files,
              downloadBytes,
              ...(warnings ? { stderr: warnings } : {}),
              ...(cachedKey === undefined
                ? {}
                : {
                    cached: cachedByServer ? { key: cachedKey, server: true } : { key: cachedKey },
                  }),
              phases: phases(),
              attempts: info.attempt,
              ms: t - info.started,
            });
          }
          sub.complete();
        },
      }),
    );

    return concat(of(chosen), events$).pipe(finalize(() => assignment.release()));
  });
}

function asJobError(err: unknown, replied = false): JobError {
  if (err instanceof JobError) return err;
  const kind = isConnectionError(err) ? 'host-lost' : 'protocol-error';
  return new JobError(kind, describeError(err), !replied, err);
}

function asAttemptFailure(err: unknown): AttemptFailure {
  return err instanceof AttemptFailure ? err : new AttemptFailure(asJobError(err), NO_PHASES);
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
