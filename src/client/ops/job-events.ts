/**
 * Operator `jobEvents`: one job's progress on one host (`JobProgress`, from the transport's
 * upload, execute and download) becomes the action's events. `jobStep` folds the job's
 * notifications (its end and its error are notifications too, as `materialize` would give
 * them) into its state, keeping the phase timings; the job's end says success, its error an
 * {@link AttemptFailure}. The fold runs in one subscriber (no `materialize`/`scan` pair: two
 * subscriptions fewer per job), over one state per job that each step brings up to date (a
 * copy of the state per step was a third of the job's allocations in the client).
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

/** The job's place in time and what it brought back so far (brought up to date in place). */
export interface JobState {
  stage: 'connect' | 'upload' | 'run' | 'download';
  readonly t0: number;
  tConnected: number;
  tUploaded: number;
  tReplied: number;
  /**
   * When the job started on the host (extension `queue`: at `!C` unless it said `queued`,
   * then at its `started`); `undefined` while queued, or on a host that cannot say.
   */
  tStarted: number | undefined;
  /** The host says when a queued job starts: `queued` is a phase of its own. */
  startReported: boolean;
  stdout: ActionOutput | undefined;
  /** A successful command's stderr, from a host that carries it (extension `stderr`). */
  warnings: string | undefined;
  files: readonly string[];
  downloadBytes: number;
  /** The host replied with a failure (already reported). */
  failed: boolean;
  /** The action cache's key, when it answered for the job, and whether the host's did. */
  cached: { readonly key: string; readonly server?: true } | undefined;
}

/** Who the job is for: the action, its host, how it was chosen. */
export interface JobFor {
  readonly action: ActionRef;
  readonly host: string;
  readonly info: AttemptInfo;
}

/** What a step of the job says: its events, and the error that ends the attempt. */
export interface JobSay {
  /** An event of the action, in order. */
  readonly emit: (e: RakeEvent) => void;
  /** The attempt ends with this error (told once, last). */
  readonly fail: (error: AttemptFailure) => void;
}

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

/**
 * Folds one notification of the job, at time `t`, into its state `s`, and says the events
 * it brings and the error that ends the attempt (`say`). Output no event will carry (the
 * job failed) is given back here.
 */
export function jobStep(
  s: JobState,
  n: ObservableNotification<JobProgress>,
  t: number,
  job: JobFor,
  say: JobSay,
): void {
  const { action, host, info } = job;
  if (n.kind === 'E') {
    // Its stdout is never shown: the action failed (or moves to another host).
    s.stdout?.release();
    // The failure reply is already reported: losing the connection after it (while sending
    // `!D`) must not report the action a second time.
    if (s.failed) return;
    const err: unknown = n.error;
    const error =
      err instanceof JobDeadline
        ? new JobError('timeout', err.message, s.stage !== 'download')
        : asJobError(err, s.stage === 'download');
    say.fail(new AttemptFailure(error, phasesAt(s, t, info.pollMs)));
    return;
  }
  if (n.kind === 'C') {
    if (s.failed) return;
    if (s.stdout !== undefined && s.stdout.size > 0) {
      say.emit({ type: 'output', time: t, action, host, stdout: s.stdout });
    }
    say.emit({
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
    return;
  }
  const p = n.value;
  switch (p.type) {
    case 'peeking':
      // Other hosts are asked for a stored result first: still connecting, as far as the
      // phases go.
      return;
    case 'connected':
      s.tConnected = t;
      s.stage = 'upload';
      return;
    case 'uploaded': {
      const startReported = p.startReported === true;
      s.tUploaded = t;
      s.stage = 'run';
      s.startReported = startReported;
      // Unless the host says `queued`, the job starts as its command arrives.
      s.tStarted = startReported ? t : undefined;
      if (p.files > 0) {
        say.emit({
          type: 'upload-done',
          time: t,
          action,
          host,
          files: p.files,
          bytes: p.bytes,
          ms: t - s.tConnected,
        });
      }
      return;
    }
    case 'queued':
      s.tStarted = undefined;
      say.emit({ type: 'action-queued', time: t, action, host });
      return;
    case 'started':
      s.tStarted = t;
      say.emit({ type: 'action-started', time: t, action, host, queuedMs: t - s.tUploaded });
      return;
    case 'replied': {
      s.tReplied = t;
      s.stage = 'download';
      if (p.ok) {
        s.stdout = p.stdout;
        s.warnings = p.stderr;
        // Extension `results`: the host's stored result of its own key, not a run.
        if (p.serverHit !== undefined) {
          s.cached = {
            key: p.serverHit,
            server: true,
            ...(p.hitFrom === undefined ? {} : { from: p.hitFrom }),
          };
        }
        return;
      }
      s.failed = true;
      say.emit({
        type: 'action-failed',
        time: t,
        action,
        reason: 'exit-non-zero',
        host,
        position: action.position,
        message: `exited with status ${p.exitStatus ?? 'unknown'} on ${host}`,
        stderr: p.stderr,
        ...(p.exitStatus === undefined ? {} : { exitStatus: p.exitStatus }),
        phases: phasesAt(s, t, info.pollMs),
        attempts: info.attempt,
        ms: t - info.started,
      });
      return;
    }
    case 'downloaded':
      s.files = p.files;
      s.downloadBytes = p.bytes;
      return;
    case 'cached':
      // Nothing was sent: the restore is the action's only phase (as a download).
      s.tConnected = s.t0;
      s.tUploaded = s.t0;
      s.tReplied = s.t0;
      s.stage = 'download';
      s.cached = { key: p.key };
      s.stdout = p.stdout;
      s.warnings = p.stderr;
      s.files = p.files;
      return;
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
      const s = startState(t0);
      /** The attempt's error, once a step said it. */
      let failure: AttemptFailure | undefined;
      const say: JobSay = {
        emit: (e) => sub.next(e),
        fail: (error) => {
          failure = error;
        },
      };
      // One subscriber folds the job's values, its end and its error as they come (what
      // `materialize` + `scan` did, in one subscription instead of three): each step's
      // events, then its error. False once the output has ended.
      const fold = (n: ObservableNotification<JobProgress>): boolean => {
        try {
          jobStep(s, n, scheduler.now(), job, say);
        } catch (err) {
          sub.error(err);
          return false;
        }
        if (failure === undefined) return true;
        sub.error(failure);
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
