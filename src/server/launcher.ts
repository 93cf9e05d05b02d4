import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { constants as osc, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { SPAWN_HELPER_SOURCE } from './spawn-helper.js';
import { OWNER_TAG } from './stale.js';

/**
 * A started job: `/bin/sh -c command` in a process group of its own. When {@link exited}
 * resolves, whatever was left of the group has been killed. Read stdout and stderr from the
 * moment `launch` resolves: Node's child_process discards output nobody reads once the
 * child has exited. A stream the job closed at once, before `launch` resolved, may already
 * have ended and closed (a socket emits 'end' at EOF once its buffer is empty): check
 * `closed` before waiting for 'close' (a spec that did not hung, issue 17 defect 11).
 */
export interface JobProcess {
  readonly stdout: Readable;
  readonly stderr: Readable;
  /**
   * The shell's exit status (128 + n when signal n ended it), or {@link JOB_LOST} when the
   * spawner died under the job: its status is unknown, and the fault is the server's, not
   * the command's (the connection drops the job so that the client retries it elsewhere).
   */
  readonly exited: Promise<number | typeof JOB_LOST>;
  /** Sends SIGKILL to the whole process group, unless the job has ended. Idempotent. */
  kill(): void;
}

/** What {@link JobProcess.exited} resolves to when the spawn helper died under the job. */
export const JOB_LOST = 'lost';

/**
 * Why `launch` rejected when the spawn helper died while starting the job: as with
 * {@link JOB_LOST}, the server failed, not the command.
 */
export class SpawnerLost extends Error {}

/** Starts jobs. `launch` rejects when the shell could not be started. */
export interface Launcher {
  /** `python3` (the spawn helper) or `node` (`child_process.spawn`). */
  readonly kind: 'python3' | 'node';
  launch(command: string, cwd: string): Promise<JobProcess>;
  /** Kills every job still running and stops the helper, if any. Idempotent. */
  close(): Promise<void>;
}

/** `--spawner`: `auto` uses the Python helper when `python3` starts, else Node. */
export type SpawnerChoice = 'auto' | 'python3' | 'node';

/** Starts the launcher `choice` asks for; `auto` falls back to Node with a warning. */
export async function createLauncher(
  choice: SpawnerChoice,
  log: Logger,
  python = process.env.RAKE_PYTHON ?? 'python3',
): Promise<Launcher> {
  if (choice === 'node') return new NodeLauncher();
  try {
    return await HelperLauncher.start(python, log);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    if (choice === 'python3') {
      throw new Error(
        `cannot start the spawn helper with ${python}: ${reason}. Install python3, set RAKE_PYTHON to a Python 3.8 or later, or use --spawner node`,
      );
    }
    log.warn(
      { python, reason },
      'spawn helper unavailable: starting jobs with Node (slower: about 8 ms of server CPU per job)',
    );
    return new NodeLauncher();
  }
}

/** `child_process.spawn`: needs nothing else, but forks the whole server for every job. */
export class NodeLauncher implements Launcher {
  readonly kind = 'node';
  readonly #running = new Set<ChildProcess>();

  launch(command: string, cwd: string): Promise<JobProcess> {
    return new Promise((resolve, reject) => {
      let child: ChildProcess;
      try {
        child = spawn('/bin/sh', ['-c', command], {
          cwd,
          detached: true,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
      } catch (err) {
        return reject(err);
      }
      const killGroup = () => {
        if (child.pid === undefined) return;
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // ESRCH: the group is already gone.
        }
      };
      let ended = false;
      const exited = new Promise<number>((done) => {
        child.once('exit', (code, signal) => {
          ended = true;
          this.#running.delete(child);
          killGroup();
          done(code ?? 128 + (signal ? (osc.signals[signal] ?? 0) : 0));
        });
      });
      child.once('error', (err) => {
        // Only a failure to start leaves no pid; later errors are followed by 'exit'.
        if (child.pid === undefined) reject(err);
      });
      child.once('spawn', () => {
        this.#running.add(child);
        resolve({
          stdout: child.stdout as Readable,
          stderr: child.stderr as Readable,
          exited,
          kill: () => {
            if (!ended) killGroup();
          },
        });
      });
    });
  }

  async close(): Promise<void> {
    for (const child of this.#running) {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
  }
}

/** Length of the line the helper sends first on each output connection: `o` + 15 digits + LF. */
const TAG_BYTES = 17;
/** How long the helper may take to say `ready`. */
const HELPER_START_MS = 10_000;

/** A job the helper was asked to start, until it has ended. */
interface HelperJob {
  /** Set by the helper's `s` line: the job has started. */
  pid?: number;
  stdout?: Socket;
  stderr?: Socket;
  ended: boolean;
  resolveLaunch(p: JobProcess): void;
  rejectLaunch(err: Error): void;
  resolveExit(status: number | typeof JOB_LOST): void;
  exited: Promise<number | typeof JOB_LOST>;
}

/**
 * Starts jobs through the spawn helper (src/server/spawn-helper.ts). If the helper dies
 * anyway (nothing a job sends can end it), its running jobs' groups are killed, they end
 * {@link JOB_LOST}, and a new helper is started.
 */
export class HelperLauncher implements Launcher {
  readonly kind = 'python3';
  readonly #python: string;
  readonly #log: Logger;
  readonly #dir: string;
  readonly #socketPath: string;
  readonly #server: Server;
  readonly #jobs = new Map<number, HelperJob>();
  #helper: Promise<ChildProcess> | undefined;
  #nextId = 1;
  #closed = false;

  private constructor(python: string, log: Logger, dir: string, server: Server) {
    this.#python = python;
    this.#log = log;
    this.#dir = dir;
    this.#socketPath = join(dir, 'out.sock');
    this.#server = server;
    server.on('connection', (socket) => this.#accept(socket));
  }

  /** Starts the helper and waits for its `ready`; rejects if it cannot run. */
  static async start(python: string, log: Logger): Promise<HelperLauncher> {
    // mkdtemp makes the directory 0700: no other user can connect and pose as a job's output.
    const dir = await mkdtemp(join(tmpdir(), `rakeserver-spawn-${OWNER_TAG}-`));
    const server = createServer({ allowHalfOpen: false });
    try {
      await new Promise<void>((ok, fail) => {
        server.once('error', fail);
        server.listen(join(dir, 'out.sock'), () => {
          server.off('error', fail);
          ok();
        });
      });
      const launcher = new HelperLauncher(python, log, dir, server);
      await launcher.#ensureHelper();
      return launcher;
    } catch (err) {
      server.close();
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  async launch(command: string, cwd: string): Promise<JobProcess> {
    if (this.#closed) throw new Error('the server is shutting down');
    const helper = await this.#ensureHelper();
    const id = this.#nextId++;
    let resolveExit!: (status: number | typeof JOB_LOST) => void;
    const exited = new Promise<number | typeof JOB_LOST>((ok) => {
      resolveExit = ok;
    });
    return new Promise<JobProcess>((resolveLaunch, rejectLaunch) => {
      this.#jobs.set(id, {
        ended: false,
        resolveLaunch,
        rejectLaunch,
        resolveExit,
        exited,
      });
      helper.stdin?.write(`${JSON.stringify({ op: 'run', id, cwd, cmd: command })}\n`);
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const helper = await this.#helper?.catch(() => undefined);
    if (helper && helper.exitCode === null && helper.signalCode === null) {
      const gone = new Promise<void>((ok) => helper.once('exit', () => ok()));
      // End of stdin: the helper kills every job's group and exits.
      helper.stdin?.end();
      const timer = setTimeout(() => helper.kill('SIGKILL'), 2000);
      await gone;
      clearTimeout(timer);
    }
    await new Promise<void>((ok) => this.#server.close(() => ok()));
    await rm(this.#dir, { recursive: true, force: true });
  }

  /** The running helper, started (again) when there is none or the last start failed. */
  #ensureHelper(): Promise<ChildProcess> {
    if (this.#helper === undefined) {
      const starting = this.#startHelper();
      this.#helper = starting;
      starting.catch(() => {
        if (this.#helper === starting) this.#helper = undefined;
      });
    }
    return this.#helper;
  }

  #startHelper(): Promise<ChildProcess> {
    return new Promise((resolve, reject) => {
      const child = spawn(this.#python, ['-c', SPAWN_HELPER_SOURCE, this.#socketPath], {
        stdio: ['pipe', 'pipe', 'pipe'],
        // Its own process group: a Ctrl-C at the server's terminal must not reach it.
        detached: true,
      });
      let ready = false;
      let errText = '';
      child.stderr?.on('data', (chunk: Buffer) => {
        if (errText.length < 4096) errText += chunk.toString('utf8');
      });
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`no answer within ${HELPER_START_MS / 1000} s`));
      }, HELPER_START_MS);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      child.stdin?.on('error', () => {});
      createInterface({ input: child.stdout as Readable }).on('line', (line) => {
        if (ready) return this.#event(line);
        if (line !== 'ready') return;
        ready = true;
        clearTimeout(timer);
        this.#log.debug({ python: this.#python, helperPid: child.pid }, 'spawn helper started');
        resolve(child);
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        if (!ready) {
          const detail = errText.trim().split('\n').slice(-1)[0] ?? '';
          return reject(
            new Error(`it exited (${signal ?? `status ${code}`})${detail ? `: ${detail}` : ''}`),
          );
        }
        this.#helper = undefined;
        const lost = this.#helperDied();
        if (!this.#closed) {
          this.#log.error(
            { code, signal, stderr: errText.trim() || undefined, jobsLost: lost },
            'spawn helper died: its running jobs were killed and are reported lost (their clients retry them elsewhere); starting a new helper',
          );
          this.#ensureHelper().catch((err: unknown) =>
            this.#log.error(
              { err: err instanceof Error ? err.message : String(err) },
              'cannot restart the spawn helper: the next job tries again',
            ),
          );
        }
      });
    });
  }

  /** One line from the helper: `s ID PID`, `f ID "message"` or `x ID STATUS`. */
  #event(line: string): void {
    const first = line.indexOf(' ');
    const second = line.indexOf(' ', first + 1);
    const kind = line.slice(0, first);
    const id = Number(line.slice(first + 1, second));
    const rest = line.slice(second + 1);
    const job = this.#jobs.get(id);
    if (job === undefined) return;
    switch (kind) {
      case 's':
        job.pid = Number(rest);
        this.#maybeReady(id, job);
        break;
      case 'f':
        this.#drop(id, job);
        job.rejectLaunch(new Error(JSON.parse(rest) as string));
        break;
      case 'x':
        job.ended = true;
        job.resolveExit(Number(rest));
        if (job.stdout && job.stderr) this.#jobs.delete(id);
        break;
      default:
        this.#log.warn({ line }, 'unexpected line from the spawn helper');
    }
  }

  /** An output connection from the helper: its first line names the job and the stream. */
  #accept(socket: Socket): void {
    socket.on('error', () => {});
    const onReadable = () => {
      const head = socket.read(TAG_BYTES) as Buffer | null;
      if (head === null) return;
      socket.off('readable', onReadable);
      const id = Number(head.subarray(1, TAG_BYTES - 1).toString('latin1'));
      const job = this.#jobs.get(id);
      if (job === undefined) return socket.destroy();
      if (head[0] === 0x6f) job.stdout = socket;
      else job.stderr = socket;
      this.#maybeReady(id, job);
    };
    socket.on('readable', onReadable);
  }

  #maybeReady(id: number, job: HelperJob): void {
    if (job.pid === undefined || !job.stdout || !job.stderr) return;
    const { stdout, stderr } = job;
    if (job.ended) this.#jobs.delete(id);
    job.resolveLaunch({
      stdout,
      stderr,
      exited: job.exited,
      kill: () => {
        if (job.ended) return;
        const helper = this.#helper;
        void helper?.then((h) => h.stdin?.write(`${JSON.stringify({ op: 'kill', id })}\n`));
      },
    });
  }

  #drop(id: number, job: HelperJob): void {
    this.#jobs.delete(id);
    job.stdout?.destroy();
    job.stderr?.destroy();
  }

  /** The helper is gone: kill what it started, end or refuse every job it had; returns how many. */
  #helperDied(): number {
    const count = this.#jobs.size;
    for (const [id, job] of this.#jobs) {
      if (job.pid !== undefined && !job.ended) {
        try {
          process.kill(-job.pid, 'SIGKILL');
        } catch {
          // Gone already.
        }
      }
      if (job.pid !== undefined && job.stdout && job.stderr) {
        job.ended = true;
        job.resolveExit(JOB_LOST);
        this.#jobs.delete(id);
      } else {
        this.#drop(id, job);
        job.rejectLaunch(new SpawnerLost('the spawn helper died while starting the job'));
      }
    }
    return count;
  }
}
