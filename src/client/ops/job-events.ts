/**
 * Operator `jobEvents`: one job's progress on one host (`JobProgress`, from the transport's
 * upload, execute and download) becomes the action's events. A pure reducer (`jobStep`)
 * folds the job's notifications (its end and its error are notifications too, as
 * `materialize` would give them) into its state, keeping the phase timings; the job's end
 * says success, its error an {@link AttemptFailure}. The fold runs in one subscriber (no
 * `materialize`/`scan` pair: two subscriptions fewer per job).
 *
 *     job       -c--u--r(ok)--d--|
 *     jobEvents ----U------------(OS|)   U upload-done (if files), O output, S action-succeeded
 *
 *     job       -c--u--#                  connection lost before the reply
 *     jobEvents -------#                  AttemptFailure(host-lost, phases up to the upload)
 *
 *     job       -c--u--r(fail)--#         a failure reply, then `!D` fails: reported once
 *     jobEvents -------F--------|         F action-failed (exit-non-zero)
 */
import {
  Observable,
  type ObservableNotification,
  type OperatorFunction,
  type SchedulerLike,
} from 'rxjs';
import { describeError, isConnectionError, JobError } from '../errors.js';
import {
  type ActionRef,
  type ChoiceReason,
  type CostSeen,
  NO_PHASES,
  type PhaseTimings,
  type RakeEvent,
} from '../events.js';
import type { ActionOutput } from '../output.js';
import type { JobProgress } from '../transport.js';

/** A failed attempt, with the phases it got through. */
export class AttemptFailure extends Error {
  constructor(
    readonly error: JobError,
    readonly phases: PhaseTimings,
  ) {
    super(error.message);
  }
}

/**
 * The whole-job deadline passed (`--job-timeout`); it becomes a `timeout` {@link JobError},
 * before the reply or not depending on how far the job got.
 */
export class JobDeadline extends Error {}

/** What an attempt's events say about it. */
export interface AttemptInfo {
  readonly attempt: number;
  readonly reason: ChoiceReason;
  readonly costs: readonly CostSeen[];
  readonly pollMs: number;
  /** When the action started, for its total `ms`. */
  readonly started: number;
}

/** The job's place in time and what it brought back so far. */
export interface JobState {
  readonly stage: 'connect' | 'upload' | 'run' | 'download';
  readonly t0: number;
  readonly tConnected: number;
  readonly tUploaded: number;
  readonly tReplied: number;
  /**
   * When the job started on the host (extension `queue`: at `!C` unless it said `queued`,
   * then at its `started`); `undefined` while queued, or on a host that cannot say.
   */
  readonly tStarted: number | undefined;
  /** The host says when a queued job starts: `queued` is a phase of its own. */
  readonly startReported: boolean;
  readonly stdout: ActionOutput | undefined;
  /** A successful command's stderr, from a host that carries it (extension `stderr`). */
  readonly warnings: string | undefined;
  readonly files: readonly string[];
  readonly downloadBytes: number;
  /** The host replied with a failure (already reported). */
  readonly failed: boolean;
  /** The action cache's key, when it answered for the job, and whether the host's did. */
  readonly cached: { readonly key: string; readonly server?: true } | undefined;
  /** What to emit for this step. */
  readonly emit: readonly RakeEvent[];
  /** The attempt ends with this error. */
  readonly error: AttemptFailure | undefined;
  /** Output no event will carry, to give back (the job failed). */
  readonly release: ActionOutput | undefined;
}

/** Who the job is for: the action, its host, how it was chosen. */
export interface JobFor {
  readonly action: ActionRef;
  readonly host: string;
  readonly info: AttemptInfo;
}

/** A step that emits nothing (shared: states are never changed). */
const NO_EVENTS: readonly RakeEvent[] = [];

export function startState(t0: number): JobState {
  return {
    stage: 'connect',
    t0,
    tConnected: t0,
    tUploaded: t0,
    tReplied: t0,
    tStarted: undefined,
    startReported: false,
    stdout: undefined,
    warnings: undefined,
    files: [],
    downloadBytes: 0,
    failed: false,
    cached: undefined,
    emit: NO_EVENTS,
    error: undefined,
    release: undefined,
  };
}

/** The phase timings of a job in state `s` at time `t`. */
export function phasesAt(s: JobState, t: number, pollMs: number): PhaseTimings {
  const ran = s.stage === 'run' || s.stage === 'download';
  // Until the reply (or now): queued from `!C` to the start, running from the start on.
  const upTo = s.stage === 'download' ? s.tReplied : t;
  const start = s.startReported ? (s.tStarted ?? upTo) : s.tUploaded;
  return {
    poll: pollMs,
    connect: (s.stage === 'connect' ? t : s.tConnected) - s.t0,
    upload: s.stage === 'connect' ? 0 : (s.stage === 'upload' ? t : s.tUploaded) - s.tConnected,
    ...(s.startReported ? { queued: ran ? start - s.tUploaded : 0 } : {}),
    run: ran ? upTo - start : 0,
    download: s.stage === 'download' ? t - s.tReplied : 0,
  };
}

/** Folds one notification of the job, at time `t`, into its state (pure). */
export function jobStep(
  prev: JobState,
  n: ObservableNotification<JobProgress>,
  t: number,
  job: JobFor,
): JobState {
  // One copy of the state per step, not two: a state with nothing to emit or give back is
  // its own start (it is never changed, so sharing it is safe).
  const s: JobState =
    prev.emit.length === 0 && prev.release === undefined
      ? prev
      : { ...prev, emit: NO_EVENTS, release: undefined };
  const { action, host, info } = job;
  if (n.kind === 'E') {
    // Its stdout is never shown: the action failed (or moves to another host). The failure
    // reply is already reported: losing the connection after it (while sending `!D`) must
    // not report the action a second time.
    if (s.failed) return { ...s, release: s.stdout };
    const err: unknown = n.error;
    const error =
      err instanceof JobDeadline
        ? new JobError('timeout', err.message, s.stage !== 'download')
        : asJobError(err, s.stage === 'download');
    return {
      ...s,
      release: s.stdout,
      error: new AttemptFailure(error, phasesAt(s, t, info.pollMs)),
    };
  }
  if (n.kind === 'C') {
    if (s.failed) return s;
    const out: RakeEvent[] = [];
    if (s.stdout !== undefined && s.stdout.size > 0) {
      out.push({ type: 'output', time: t, action, host, stdout: s.stdout });
    }
    out.push({
      type: 'action-succeeded',
      time: t,
      action,
      host,
      exitStatus: 0,
      files: s.files,
      downloadBytes: s.downloadBytes,
      ...(s.warnings ? { stderr: s.warnings } : {}),
      ...(s.cached === undefined ? {} : { cached: s.cached }),
      phases: phasesAt(s, t, info.pollMs),
      attempts: info.attempt,
      ms: t - info.started,
    });
    return { ...s, emit: out };
  }
  const p = n.value;
  switch (p.type) {
    case 'peeking':
      // Other hosts are asked for a stored result first: still connecting, as far as the
      // phases go.
      return s;
    case 'connected':
      return { ...s, tConnected: t, stage: 'upload' };
    case 'uploaded': {
      const startReported = p.startReported === true;
      return {
        ...s,
        tUploaded: t,
        stage: 'run',
        startReported,
        // Unless the host says `queued`, the job starts as its command arrives.
        tStarted: startReported ? t : undefined,
        emit:
          p.files > 0
            ? [
                {
                  type: 'upload-done',
                  time: t,
                  action,
                  host,
                  files: p.files,
                  bytes: p.bytes,
                  ms: t - s.tConnected,
                },
              ]
            : [],
      };
    }
    case 'queued':
      return {
        ...s,
        tStarted: undefined,
        emit: [{ type: 'action-queued', time: t, action, host }],
      };
    case 'started':
      return {
        ...s,
        tStarted: t,
        emit: [{ type: 'action-started', time: t, action, host, queuedMs: t - s.tUploaded }],
      };
    case 'replied': {
      const replied: JobState = { ...s, tReplied: t, stage: 'download' };
      if (p.ok) {
        return {
          ...replied,
          stdout: p.stdout,
          warnings: p.stderr,
          // Extension `results`: the host's stored result of its own key, not a run.
          cached:
            p.serverHit === undefined
              ? s.cached
              : {
                  key: p.serverHit,
                  server: true,
                  ...(p.hitFrom === undefined ? {} : { from: p.hitFrom }),
                },
        };
      }
      return {
        ...replied,
        failed: true,
        emit: [
          {
            type: 'action-failed',
            time: t,
            action,
            reason: 'exit-non-zero',
            host,
            position: action.position,
            message: `exited with status ${p.exitStatus ?? 'unknown'} on ${host}`,
            stderr: p.stderr,
            ...(p.exitStatus === undefined ? {} : { exitStatus: p.exitStatus }),
            phases: phasesAt(replied, t, info.pollMs),
            attempts: info.attempt,
            ms: t - info.started,
          },
        ],
      };
    }
    case 'downloaded':
      return { ...s, files: p.files, downloadBytes: p.bytes };
    case 'cached':
      // Nothing was sent: the restore is the action's only phase (as a download).
      return {
        ...s,
        tConnected: s.t0,
        tUploaded: s.t0,
        tReplied: s.t0,
        stage: 'download',
        cached: { key: p.key },
        stdout: p.stdout,
        warnings: p.stderr,
        files: p.files,
      };
  }
}

/**
 * The action's events from one job's progress; errors with an {@link AttemptFailure} when
 * the job fails without a failure reply.
 */
export function jobEvents(
  job: JobFor,
  scheduler: SchedulerLike,
  t0: number,
): OperatorFunction<JobProgress, RakeEvent> {
  return (progress) =>
    new Observable<RakeEvent>((sub) => {
      let s = startState(t0);
      // One subscriber folds the job's values, its end and its error as they come (what
      // `materialize` + `scan` did, in one subscription instead of three): each state's
      // events, then its error. False once the output has ended.
      const fold = (n: ObservableNotification<JobProgress>): boolean => {
        try {
          s = jobStep(s, n, scheduler.now(), job);
        } catch (err) {
          sub.error(err);
          return false;
        }
        s.release?.release();
        for (const e of s.emit) sub.next(e);
        if (s.error === undefined) return true;
        sub.error(s.error);
        return false;
      };
      return progress.subscribe({
        next: (value) => {
          fold({ kind: 'N', value });
        },
        error: (error: unknown) => {
          if (fold({ kind: 'E', error })) sub.complete();
        },
        complete: () => {
          if (fold({ kind: 'C' })) sub.complete();
        },
      });
    });
}

export function asJobError(err: unknown, replied = false): JobError {
  if (err instanceof JobError) return err;
  const kind = isConnectionError(err) ? 'host-lost' : 'protocol-error';
  return new JobError(kind, describeError(err), !replied, err);
}

export function asAttemptFailure(err: unknown): AttemptFailure {
  return err instanceof AttemptFailure ? err : new AttemptFailure(asJobError(err), NO_PHASES);
}
