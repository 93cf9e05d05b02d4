import type { Readable } from 'node:stream';
import {
  JOB_LOST,
  type JobProcess,
  type Launcher,
  type PreparedLaunch,
  SpawnerLost,
} from './launcher.js';
import type { StdoutSpool } from './outputs.js';

/** What {@link runJob} needs: the command, where to run it, and its bounds. */
export interface JobSpec {
  readonly command: string;
  readonly cwd: string;
  /** Aborting kills the job's whole process group (the client vanished, or shutdown). */
  readonly signal: AbortSignal;
  /** 0 = no limit. */
  readonly timeoutMs: number;
  /** Cap on captured stdout and on captured stderr, each. */
  readonly maxOutputBytes: number;
  /**
   * Where stdout goes (large output to a file, not the heap: see `StdoutSpool`); without
   * one it is kept in memory, in the outcome's `stdout`.
   */
  readonly stdoutSpool?: StdoutSpool;
  /**
   * The job made ready ahead of its slot ({@link prepareJob}): started with its `start`
   * (which returns it if the launcher started it already) rather than by `launch`.
   */
  readonly prepared?: PreparedLaunch | undefined;
  /** Told the started job, before anything else (the slot chains its successor to it). */
  readonly started?: (job: JobProcess) => void;
}

/**
 * `command` made ready to start in `cwd` ahead of its slot (a queued command), where the
 * launcher can ({@link Launcher.prepare}); undefined otherwise, and for a command that
 * cannot run at all (a NUL byte: {@link runJob} refuses it) or whose cgroup cannot be made
 * now (its `launch` then says why).
 */
export function prepareJob(
  launcher: Launcher,
  command: string,
  cwd: string,
): PreparedLaunch | undefined {
  if (launcher.prepare === undefined || command.includes('\0')) return undefined;
  try {
    return launcher.prepare(command, cwd);
  } catch {
    return undefined;
  }
}

/**
 * How a job ended, as data: the connection turns each case into a reply. `exited` covers
 * every normal end, including a non-zero status and death by a signal (status 128 + n).
 */
export type JobOutcome =
  | {
      readonly reason: 'exited';
      readonly exitCode: number;
      readonly stdout: readonly Buffer[];
      readonly stdoutBytes: number;
      readonly stderr: Buffer;
      readonly durationMs: number;
    }
  | { readonly reason: 'spawn-error'; readonly error: Error; readonly durationMs: number }
  /** The command cannot be run at all (it holds a NUL byte); `message` says why. */
  | { readonly reason: 'refused'; readonly message: string; readonly durationMs: number }
  /** The spawner died under the job: the server's fault, so the job is dropped for a retry. */
  | { readonly reason: 'lost'; readonly message: string; readonly durationMs: number }
  | {
      readonly reason: 'output-limit';
      readonly stream: 'stdout' | 'stderr';
      readonly durationMs: number;
    }
  | { readonly reason: 'timeout'; readonly stderr: Buffer; readonly durationMs: number }
  | { readonly reason: 'aborted'; readonly durationMs: number };

/** How long to wait for stdio to close once the process group is dead. */
const STDIO_GRACE_MS = 2000;

/**
 * Runs `/bin/sh -c command` in its own process group through `launcher`, capturing stdout
 * and stderr up to the cap. When the shell exits, whatever is left of its process group is
 * killed: nothing a job starts outlives it. Never rejects.
 */
export async function runJob(spec: JobSpec, launcher: Launcher): Promise<JobOutcome> {
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  if (spec.signal.aborted) {
    spec.prepared?.drop();
    return { reason: 'aborted', durationMs: 0 };
  }
  const nul = spec.command.indexOf('\0');
  if (nul >= 0) {
    return {
      reason: 'refused',
      message: `the command holds a NUL byte (at character ${nul}), which no shell command can carry; remove it from the action's command`,
      durationMs: 0,
    };
  }
  let child: JobProcess;
  try {
    child =
      spec.prepared === undefined
        ? await launcher.launch(spec.command, spec.cwd)
        : await spec.prepared.start();
  } catch (err) {
    if (err instanceof SpawnerLost) {
      return { reason: 'lost', message: err.message, durationMs: elapsed() };
    }
    return { reason: 'spawn-error', error: asError(err), durationMs: elapsed() };
  }
  spec.started?.(child);
  return new Promise<JobOutcome>((resolve) => {
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let stdoutBytes = 0;
    let stderrBytes = 0;
    let stop: JobOutcome['reason'] | undefined;
    let stopStream: 'stdout' | 'stderr' = 'stdout';
    let settled = false;
    let spoolFailed: Error | undefined;

    const stopWith = (reason: JobOutcome['reason']) => {
      stop ??= reason;
      child.kill();
    };
    const onAbort = () => stopWith('aborted');
    spec.signal.addEventListener('abort', onAbort, { once: true });
    if (spec.signal.aborted) onAbort();
    const timer =
      spec.timeoutMs > 0 ? setTimeout(() => stopWith('timeout'), spec.timeoutMs) : undefined;

    child.stdout.on('data', (chunk: Buffer) => {
      stdoutBytes += chunk.length;
      if (stdoutBytes > spec.maxOutputBytes) {
        stopStream = 'stdout';
        return stopWith('output-limit');
      }
      if (spec.stdoutSpool === undefined) return stdout.push(chunk);
      try {
        spec.stdoutSpool.write(chunk);
      } catch (err) {
        // This server cannot hold the output (disk full): its fault, so the job is lost.
        spoolFailed ??= asError(err);
        stopWith('lost');
      }
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderrBytes += chunk.length;
      if (stderrBytes > spec.maxOutputBytes) {
        stopStream = 'stderr';
        return stopWith('output-limit');
      }
      stderr.push(chunk);
    });

    const finish = (outcome: JobOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      spec.signal.removeEventListener('abort', onAbort);
      resolve(outcome);
    };

    void child.exited.then((exitCode) => {
      const done = () => {
        const durationMs = elapsed();
        if (spoolFailed !== undefined) {
          return finish({
            reason: 'lost',
            message: `cannot keep the job's stdout: ${(spoolFailed as NodeJS.ErrnoException).code ?? spoolFailed.message}`,
            durationMs,
          });
        }
        if (exitCode === JOB_LOST) {
          return finish({
            reason: 'lost',
            message: 'the spawn helper died while the job ran',
            durationMs,
          });
        }
        switch (stop) {
          case 'aborted':
            return finish({ reason: 'aborted', durationMs });
          case 'timeout':
            return finish({ reason: 'timeout', stderr: Buffer.concat(stderr), durationMs });
          case 'output-limit':
            return finish({ reason: 'output-limit', stream: stopStream, durationMs });
          default:
            return finish({
              reason: 'exited',
              exitCode,
              stdout,
              stdoutBytes,
              stderr: Buffer.concat(stderr),
              durationMs,
            });
        }
      };
      // Wait for stdio to drain; a process that escaped the group may hold it open, so bound it.
      const grace = setTimeout(() => {
        child.stdout.destroy();
        child.stderr.destroy();
        done();
      }, STDIO_GRACE_MS);
      void Promise.all([closed(child.stdout), closed(child.stderr)]).then(() => {
        clearTimeout(grace);
        done();
      });
    });
  });
}

/** Resolves once `stream` has closed (at once if it already has). */
function closed(stream: Readable): Promise<void> {
  if (stream.closed || stream.destroyed) return Promise.resolve();
  return new Promise((ok) => stream.once('close', () => ok()));
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
