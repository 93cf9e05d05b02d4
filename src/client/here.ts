import { spawn } from 'node:child_process';
import { Observable, type SchedulerLike } from 'rxjs';
import { trackCleanup } from './cleanup.js';
import type { ActionRef, RakeEvent } from './events.js';
import { ActionOutput } from './output.js';

/**
 * The name events and the summary give the Rakefile's own directory as a place to run
 * (`--local-here`): not a `host:port`, since no server is involved.
 */
export const HERE = 'here';

/** What {@link runHere} needs from the run. */
export interface HereContext {
  readonly scheduler: SchedulerLike;
  /** The Rakefile's directory: the command's working directory. */
  readonly directory: string;
  readonly jobTimeoutMs: number | undefined;
}

/**
 * A local action run as make runs a recipe (`--local-here`): `/bin/sh -c` in the Rakefile's
 * directory, by this process, with no server, no upload and no download: it sees every file
 * there and writes where it likes. Emits `host-chosen` (host {@link HERE}), then `output`
 * and `action-succeeded`, or `action-failed` (`exit-non-zero` with its stderr, or `timeout`).
 * Unsubscribing kills the command's process group; the CLI waits for it to be gone.
 */
export function runHere(
  ctx: HereContext,
  action: ActionRef,
  started: number,
): Observable<RakeEvent> {
  return new Observable<RakeEvent>((sub) => {
    const { scheduler } = ctx;
    const t0 = scheduler.now();
    sub.next({
      type: 'host-chosen',
      time: t0,
      action,
      host: HERE,
      reason: 'local',
      costs: [],
      attempt: 1,
    });
    const child = spawn('/bin/sh', ['-c', action.command], {
      cwd: ctx.directory,
      // Its own process group, so that cancelling kills what it started too.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => stdout.push(b));
    child.stderr.on('data', (b: Buffer) => stderr.push(b));
    let finished = false;
    let timedOut = false;
    const kill = () => {
      if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    };
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const timer =
      ctx.jobTimeoutMs === undefined
        ? undefined
        : scheduler.schedule(() => {
            timedOut = true;
            kill();
          }, ctx.jobTimeoutMs);
    // Run here, it starts at once: nothing queued.
    const phases = (t: number) => ({
      poll: 0,
      connect: 0,
      upload: 0,
      queued: 0,
      run: t - t0,
      download: 0,
    });
    child.once('error', (err) => {
      if (finished) return;
      finished = true;
      timer?.unsubscribe();
      const t = scheduler.now();
      sub.next({
        type: 'action-failed',
        time: t,
        action,
        reason: 'exit-non-zero',
        host: HERE,
        position: action.position,
        message: `cannot start /bin/sh in ${ctx.directory}: ${err.message}`,
        stderr: '',
        phases: phases(t),
        attempts: 1,
        ms: t - started,
      });
      sub.complete();
    });
    child.once('close', (code, signal) => {
      if (finished) return;
      finished = true;
      timer?.unsubscribe();
      const t = scheduler.now();
      const err = Buffer.concat(stderr).toString('utf8');
      if (code === 0) {
        const out = Buffer.concat(stdout);
        if (out.length > 0) {
          sub.next({ type: 'output', time: t, action, host: HERE, stdout: ActionOutput.of(out) });
        }
        sub.next({
          type: 'action-succeeded',
          time: t,
          action,
          host: HERE,
          exitStatus: 0,
          files: [],
          downloadBytes: 0,
          ...(err === '' ? {} : { stderr: err }),
          phases: phases(t),
          attempts: 1,
          ms: t - started,
        });
      } else {
        const status = code ?? 128 + signalNumber(signal);
        sub.next({
          type: 'action-failed',
          time: t,
          action,
          reason: timedOut ? 'timeout' : 'exit-non-zero',
          host: HERE,
          position: action.position,
          message: timedOut
            ? `the command took longer than ${ctx.jobTimeoutMs} ms here; it was killed`
            : `exited with status ${status} here`,
          stderr: err,
          ...(timedOut ? {} : { exitStatus: status }),
          phases: phases(t),
          attempts: 1,
          ms: t - started,
        });
      }
      sub.complete();
    });
    return () => {
      timer?.unsubscribe();
      if (finished) return;
      finished = true;
      kill();
      trackCleanup(exited);
    };
  });
}

const SIGNALS: Readonly<Record<string, number>> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

/** The shell's convention for a command killed by a signal: 128 + its number. */
function signalNumber(signal: NodeJS.Signals | null): number {
  return signal === null ? 0 : (SIGNALS[signal] ?? 0);
}
