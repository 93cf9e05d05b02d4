import type { ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { Observable, type SchedulerLike, type Subscriber, type Subscription } from 'rxjs';
import { trackCleanup } from './cleanup.js';
import { HERE } from './endpoint.js';
import type { ActionRef, PhaseTimings, RakeEvent } from './events.js';
import { ActionOutput } from './output.js';

export { HERE };

/** What {@link runHere} needs from the run. */
export interface HereContext {
  readonly scheduler: SchedulerLike;
  /** The Rakefile's directory: the command's working directory. */
  readonly directory: string;
  readonly jobTimeoutMs: number | undefined;
}

type Child = ChildProcessByStdio<null, Readable, Readable>;

/**
 * A local action run as make runs a recipe (`--local-here`): `/bin/sh -c` in the Rakefile's
 * directory, by this process, with no server, no upload and no download: it sees every file
 * there and writes where it likes. Emits `host-chosen` (host {@link HERE}), then `output`
 * and `action-succeeded`, or `action-failed` (`exit-non-zero` with its stderr, or `timeout`).
 * Unsubscribing kills the command's process group; the CLI waits for it to be gone.
 * `child_process` is loaded only when such an action runs (`-n`, and runs without
 * `--local-here`, never load it: spec/cli/lazy-load.spec.ts), through
 * `process.getBuiltinModule` (Node 20.16+).
 */
export function runHere(
  ctx: HereContext,
  action: ActionRef,
  started: number,
): Observable<RakeEvent> {
  return new Observable<RakeEvent>((sub) => {
    const t0 = ctx.scheduler.now();
    sub.next({
      type: 'host-chosen',
      time: t0,
      action,
      host: HERE,
      reason: 'local',
      costs: [],
      attempt: 1,
    });
    const state = new HereRun(ctx, action, started, t0, sub);
    // Loaded here, synchronously (a dynamic import() has no loader in the built CLI's cached
    // script): only a run with `--local-here` pays for child_process.
    const { spawn } = process.getBuiltinModule('node:child_process');
    state.watch(
      spawn('/bin/sh', ['-c', action.command], {
        cwd: ctx.directory,
        // Its own process group, so that cancelling kills what it started too.
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    return () => state.cancel();
  });
}

/** One command run here: its output, its timer, its end. */
class HereRun {
  finished = false;
  #child: Child | undefined;
  #timer: Subscription | undefined;
  #timedOut = false;
  #exited: Promise<void> = Promise.resolve();
  readonly #stdout: Buffer[] = [];
  readonly #stderr: Buffer[] = [];

  constructor(
    private readonly ctx: HereContext,
    private readonly action: ActionRef,
    private readonly started: number,
    private readonly t0: number,
    private readonly sub: Subscriber<RakeEvent>,
  ) {}

  watch(child: Child): void {
    this.#child = child;
    this.#exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    child.stdout.on('data', (b: Buffer) => this.#stdout.push(b));
    child.stderr.on('data', (b: Buffer) => this.#stderr.push(b));
    const limit = this.ctx.jobTimeoutMs;
    if (limit !== undefined) {
      this.#timer = this.ctx.scheduler.schedule(() => {
        this.#timedOut = true;
        this.#kill();
      }, limit);
    }
    child.once('error', (err) => this.failed(err));
    child.once('close', (code, signal) => this.#closed(code, signal));
  }

  /** The shell could not be started. */
  failed(err: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.#timer?.unsubscribe();
    const t = this.ctx.scheduler.now();
    this.sub.next({
      type: 'action-failed',
      time: t,
      action: this.action,
      reason: 'exit-non-zero',
      host: HERE,
      position: this.action.position,
      message: `cannot start /bin/sh in ${this.ctx.directory}: ${err.message}`,
      stderr: '',
      phases: this.#phases(t),
      attempts: 1,
      ms: t - this.started,
    });
    this.sub.complete();
  }

  /** Unsubscribed: kill the process group, and let the CLI wait until it is gone. */
  cancel(): void {
    this.#timer?.unsubscribe();
    if (this.finished) return;
    this.finished = true;
    this.#kill();
    trackCleanup(this.#exited);
  }

  #closed(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.finished) return;
    this.finished = true;
    this.#timer?.unsubscribe();
    const t = this.ctx.scheduler.now();
    const stderr = Buffer.concat(this.#stderr).toString('utf8');
    const base = { time: t, action: this.action, host: HERE };
    if (code === 0) {
      const out = Buffer.concat(this.#stdout);
      if (out.length > 0) this.sub.next({ type: 'output', ...base, stdout: ActionOutput.of(out) });
      this.sub.next({
        type: 'action-succeeded',
        ...base,
        exitStatus: 0,
        files: [],
        downloadBytes: 0,
        ...(stderr === '' ? {} : { stderr }),
        phases: this.#phases(t),
        attempts: 1,
        ms: t - this.started,
      });
    } else {
      const status = code ?? 128 + signalNumber(signal);
      this.sub.next({
        type: 'action-failed',
        ...base,
        reason: this.#timedOut ? 'timeout' : 'exit-non-zero',
        position: this.action.position,
        message: this.#timedOut
          ? `the command took longer than ${this.ctx.jobTimeoutMs} ms here; it was killed`
          : `exited with status ${status} here`,
        stderr,
        ...(this.#timedOut ? {} : { exitStatus: status }),
        phases: this.#phases(t),
        attempts: 1,
        ms: t - this.started,
      });
    }
    this.sub.complete();
  }

  #kill(): void {
    const child = this.#child;
    if (child?.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }

  /** Run here, it starts at once: nothing queued, no transfer. */
  #phases(t: number): PhaseTimings {
    return { poll: 0, connect: 0, upload: 0, queued: 0, run: t - this.t0, download: 0 };
  }
}

const SIGNALS: Readonly<Record<string, number>> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

/** The shell's convention for a command killed by a signal: 128 + its number. */
function signalNumber(signal: NodeJS.Signals | null): number {
  return signal === null ? 0 : (SIGNALS[signal] ?? 0);
}
