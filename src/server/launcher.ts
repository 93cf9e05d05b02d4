import { type ChildProcess, spawn } from 'node:child_process';
import { constants as osc } from 'node:os';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import {
  type Containment,
  type ContainmentChoice,
  createContainment,
  JOB_TAG_VARIABLE,
  type JobGroup,
} from './containment.js';
import { SPAWN_HELPER_SOURCE } from './spawn-helper.js';

/**
 * A started job: `/bin/sh -c command` in a process group of its own. When {@link exited}
 * resolves, whatever was left of the group has been killed. Read stdout and stderr from the
 * moment `launch` resolves: Node's child_process discards output nobody reads once the
 * child has exited. A stream the job closed at once, before `launch` resolved, may already
 * have ended and closed (a pipe's stream, or the spawn helper's, emits 'end' at EOF once its
 * buffer is empty): check
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
  /**
   * How the job's first process got into its cgroup: created there (`clone3`, with
   * CLONE_INTO_CGROUP), moved there before it ran a thing (`moved`), or no cgroup (`none`).
   */
  readonly entry: CgroupEntry;
  /**
   * Has the launcher start `next` the moment this job's shell ends, without the server in
   * between (the spawn helper: the slot's next job starts as it reaps this one). False when
   * it cannot: this job has ended, `next` is not this launcher's or already on its way.
   * Absent where the launcher cannot chain at all (Node).
   */
  chain?(next: PreparedLaunch): boolean;
}

/**
 * A job made ready ahead of its slot ({@link Launcher.prepare}): its cgroup made, nothing sent
 * to run yet. It starts when `start` is called, or earlier, on its own, when it was
 * {@link JobProcess.chain}ed to a job that has ended: then `onEarlyStart` is called once.
 */
export interface PreparedLaunch {
  /** Starts it unless it has started (idempotent); resolves as `launch` does. */
  start(): Promise<JobProcess>;
  /** Gives it up: never started, or killed if it had started meanwhile. Idempotent. */
  drop(): void;
  /** Told when the launcher started it on its own (a chained job whose predecessor ended). */
  onEarlyStart: (() => void) | undefined;
}

/** {@link JobProcess.entry}. */
export type CgroupEntry = 'clone3' | 'moved' | 'none';

/** What {@link JobProcess.exited} resolves to when the spawn helper died under the job. */
export const JOB_LOST = 'lost';

/**
 * Why `launch` rejected when the spawn helper died while starting the job: as with
 * {@link JOB_LOST}, the server failed, not the command.
 */
export class SpawnerLost extends Error {}

/** Starts jobs. `launch` rejects when the shell could not be started. */
export interface Launcher {
  /**
   * `python3` (the spawn helper) or `node` (`child_process.spawn`); `on-demand` until an
   * {@link OnDemandLauncher} has made its launcher.
   */
  readonly kind: 'python3' | 'node' | 'on-demand';
  /** How every process of a job is found and killed (src/server/containment.ts). */
  readonly containment: Containment;
  launch(command: string, cwd: string): Promise<JobProcess>;
  /**
   * Makes a job ready to start ahead of its slot (a queued command), so that the job before
   * it can be {@link JobProcess.chain}ed to it. Absent where the launcher cannot chain;
   * undefined when it cannot now (the on-demand launcher before it is made). Throws what
   * `launch` would reject with for a cgroup that cannot be made.
   */
  prepare?(command: string, cwd: string): PreparedLaunch | undefined;
  /** Kills every job still running and stops the helper, if any. Idempotent. */
  close(): Promise<void>;
}

/** `--spawner`: `auto` uses the Python helper when `python3` starts, else Node. */
export type SpawnerChoice = 'auto' | 'python3' | 'node';

/**
 * Starts the launcher `choice` asks for; `auto` falls back to Node with a warning. Jobs are
 * contained as `containment` says (`RAKE_JOB_CONTAINMENT`, else `auto`).
 */
export async function createLauncher(
  choice: SpawnerChoice,
  log: Logger,
  python = process.env.RAKE_PYTHON ?? 'python3',
  containmentChoice: ContainmentChoice = containmentFromEnv(),
): Promise<Launcher> {
  const containment = await createContainment(containmentChoice, log);
  if (containment.kind === 'tag' && containmentChoice === 'auto') {
    log.info({ reason: containment.detail }, 'jobs contained by environment tag, not cgroups');
  }
  try {
    return await startLauncher(choice, log, python, containment);
  } catch (err) {
    await containment.close();
    throw err;
  }
}

/** What an {@link OnDemandLauncher} says of its containment before the first job. */
const UNDECIDED: Containment = {
  kind: 'on-demand',
  detail: 'chosen at the first job',
  helperProcs: undefined,
  open: () => {
    throw new Error('no containment chosen yet');
  },
  close: async () => {},
};

/**
 * A launcher made by `make` at the first job rather than at start (serve's
 * `launcherOnDemand`, which the client's embedded servers use): a run whose actions all come
 * from the action cache then starts no spawn helper and probes no cgroup, and does not wait
 * for either. The first job waits for them instead. A `make` that fails fails that job, and
 * the next job tries again.
 */
export class OnDemandLauncher implements Launcher {
  readonly #make: () => Promise<Launcher>;
  #made: Promise<Launcher> | undefined;
  #launcher: Launcher | undefined;
  #closed = false;

  constructor(make: () => Promise<Launcher>) {
    this.#make = make;
  }

  get kind(): Launcher['kind'] {
    return this.#launcher?.kind ?? 'on-demand';
  }

  get containment(): Containment {
    return this.#launcher?.containment ?? UNDECIDED;
  }

  /** Whether the launcher has been made (for tests). */
  get made(): boolean {
    return this.#launcher !== undefined;
  }

  async launch(command: string, cwd: string): Promise<JobProcess> {
    if (this.#closed) throw new Error('the server is shutting down');
    if (this.#made === undefined) {
      const making = this.#make();
      this.#made = making;
      making.then(
        (l) => {
          this.#launcher = l;
        },
        () => {
          if (this.#made === making) this.#made = undefined;
        },
      );
    }
    const launcher = await this.#made;
    this.#launcher = launcher;
    // Closed while it was being made: `close` closes it; no job starts on it now.
    if (this.#closed) throw new Error('the server is shutting down');
    return launcher.launch(command, cwd);
  }

  prepare(command: string, cwd: string): PreparedLaunch | undefined {
    if (this.#closed) return undefined;
    return this.#launcher?.prepare?.(command, cwd);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const launcher = await this.#made?.catch(() => undefined);
    await launcher?.close();
  }
}

/** `RAKE_JOB_CONTAINMENT`: `auto` (unset), `cgroup` or `tag`. */
function containmentFromEnv(): ContainmentChoice {
  const value = process.env.RAKE_JOB_CONTAINMENT ?? 'auto';
  if (value === 'auto' || value === 'cgroup' || value === 'tag') return value;
  throw new Error(`RAKE_JOB_CONTAINMENT=${value}: expected auto, cgroup or tag`);
}

/**
 * The environment every job starts with: the server's, less `RAKE_TOKEN` (the server's
 * secret is no business of the commands its clients send), plus the job's tag.
 */
export function jobEnvironment(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env = { ...base };
  delete env.RAKE_TOKEN;
  delete env[JOB_TAG_VARIABLE];
  return env;
}

async function startLauncher(
  choice: SpawnerChoice,
  log: Logger,
  python: string,
  containment: Containment,
): Promise<Launcher> {
  if (choice === 'node') return new NodeLauncher(containment);
  try {
    return await HelperLauncher.start(python, log, containment);
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
    return new NodeLauncher(containment);
  }
}

/**
 * `sh -c` in cgroup containment: the job's first process puts itself in its cgroup, then
 * becomes the job's shell (same pid, `$0` = `/bin/sh` as before), so nothing the command
 * starts runs outside it. `$0` is the `cgroup.procs` path, `$1` the command.
 */
const ENTER_CGROUP =
  'echo $$ > "$0" || { echo "rakeserver: cannot put the job in its cgroup ($0)" >&2; exit 126; }; exec /bin/sh -c "$1"';

/** `child_process.spawn`: needs nothing else, but forks the whole server for every job. */
export class NodeLauncher implements Launcher {
  readonly kind = 'node';
  readonly containment: Containment;
  readonly #running = new Set<ChildProcess>();
  readonly #groups = new Set<JobGroup>();
  readonly #env = jobEnvironment();
  #nextId = 1;

  constructor(containment: Containment) {
    this.containment = containment;
  }

  launch(command: string, cwd: string): Promise<JobProcess> {
    return new Promise((resolve, reject) => {
      let child: ChildProcess;
      let group: JobGroup;
      try {
        group = this.containment.open(this.#nextId++);
      } catch (err) {
        return reject(new Error(`cannot make the job's cgroup: ${(err as Error).message}`));
      }
      try {
        const env = { ...this.#env, [JOB_TAG_VARIABLE]: group.tag };
        const args =
          group.procs === undefined ? ['-c', command] : ['-c', ENTER_CGROUP, group.procs, command];
        child = spawn('/bin/sh', args, {
          cwd,
          env,
          detached: true,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
      } catch (err) {
        void group.release();
        return reject(err);
      }
      this.#groups.add(group);
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
          // Whatever the job left, even outside its process group, goes before it ends.
          void group.release().then(() => {
            this.#groups.delete(group);
            done(code ?? 128 + (signal ? (osc.signals[signal] ?? 0) : 0));
          });
        });
      });
      child.once('error', (err) => {
        // Only a failure to start leaves no pid; later errors are followed by 'exit'.
        if (child.pid === undefined) {
          this.#groups.delete(group);
          void group.release();
          reject(err);
        }
      });
      child.once('spawn', () => {
        this.#running.add(child);
        resolve({
          stdout: child.stdout as Readable,
          stderr: child.stderr as Readable,
          exited,
          // The job's shell moves itself into its cgroup first (ENTER_CGROUP).
          entry: group.procs === undefined ? 'none' : 'moved',
          kill: () => {
            if (ended) return;
            killGroup();
            group.kill();
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
    for (const group of this.#groups) group.kill();
    await this.containment.close();
  }
}

/** How long the helper may take to say `ready`. */
const HELPER_START_MS = 10_000;

/** A job's stdout or stderr as the helper forwards it. */
interface HelperStream {
  readonly readable: Readable;
  /** The helper's end mark came, or the reader destroyed the stream: nothing more is wanted. */
  done: boolean;
}

/**
 * A job of the helper's, from {@link HelperLauncher.prepare} until it has ended and its output
 * with it. `ready`: prepared, nothing sent; `chained`: sent to start when another job ends;
 * `sent`: sent to start now; `started`: the helper's `s` line came.
 */
interface HelperJob {
  readonly id: number;
  state: 'ready' | 'chained' | 'sent' | 'started';
  /** The `run` request, sent when the job is started or chained. */
  readonly request: Record<string, unknown>;
  /** `start` was called: the server started it, not the helper on its own. */
  asked: boolean;
  /** Given up (`drop`), or failed: its launch has rejected. */
  gone: boolean;
  /** Set by the helper's `s` line: the job has started. */
  pid?: number;
  /** Set by the same line. */
  entry?: CgroupEntry;
  readonly stdout: HelperStream;
  readonly stderr: HelperStream;
  ended: boolean;
  readonly launched: Promise<JobProcess>;
  resolveLaunch(p: JobProcess): void;
  rejectLaunch(err: Error): void;
  resolveExit(status: number | typeof JOB_LOST): void;
  exited: Promise<number | typeof JOB_LOST>;
  /** Every process the job starts: killed, all of them, when it ends. */
  group: JobGroup;
  readonly prepared: PreparedLaunch;
}

/**
 * Starts jobs through the spawn helper (src/server/spawn-helper.ts). If the helper dies
 * anyway (nothing a job sends can end it), its running jobs' groups are killed, they end
 * {@link JOB_LOST}, and a new helper is started.
 */
export class HelperLauncher implements Launcher {
  readonly kind = 'python3';
  readonly containment: Containment;
  readonly #python: string;
  readonly #log: Logger;
  readonly #jobs = new Map<number, HelperJob>();
  /** Prepared jobs by their handle (for `chain`). */
  readonly #prepared = new WeakMap<PreparedLaunch, HelperJob>();
  #helper: Promise<ChildProcess> | undefined;
  #nextId = 1;
  #closed = false;
  #cgroupMoves: 'unknown' | 'cheap' | 'costly' = 'unknown';

  /**
   * What moving into a cgroup after a pause costs here, as the helper measured it (its `m`
   * line): `cheap` (every job moved and started by posix_spawn), `costly` (a job after a
   * pause cloned into its cgroup), or `unknown` until it has measured.
   */
  get cgroupMoves(): 'unknown' | 'cheap' | 'costly' {
    return this.#cgroupMoves;
  }

  private constructor(python: string, log: Logger, containment: Containment) {
    this.containment = containment;
    this.#python = python;
    this.#log = log;
  }

  /** Starts the helper and waits for its `ready`; rejects if it cannot run. */
  static async start(
    python: string,
    log: Logger,
    containment: Containment,
  ): Promise<HelperLauncher> {
    const launcher = new HelperLauncher(python, log, containment);
    await launcher.#ensureHelper();
    return launcher;
  }

  async launch(command: string, cwd: string): Promise<JobProcess> {
    if (this.#closed) throw new Error('the server is shutting down');
    await this.#ensureHelper();
    return this.prepare(command, cwd).start();
  }

  /**
   * A job made ready (its cgroup made) but not sent: `start` sends it, or, once it is
   * {@link JobProcess.chain}ed to a running job, the helper starts it the moment that job's
   * shell ends, reaps it (docs/server.md, "A queued job starts in the helper").
   */
  prepare(command: string, cwd: string): PreparedLaunch {
    if (this.#closed) throw new Error('the server is shutting down');
    const id = this.#nextId++;
    let group: JobGroup;
    try {
      group = this.containment.open(id);
    } catch (err) {
      throw new Error(`cannot make the job's cgroup: ${(err as Error).message}`);
    }
    let resolveExit!: (status: number | typeof JOB_LOST) => void;
    const exited = new Promise<number | typeof JOB_LOST>((ok) => {
      resolveExit = ok;
    });
    let resolveLaunch!: (p: JobProcess) => void;
    let rejectLaunch!: (err: Error) => void;
    const launched = new Promise<JobProcess>((ok, fail) => {
      resolveLaunch = ok;
      rejectLaunch = fail;
    });
    // A job given up before anyone asked for it rejects with nobody waiting.
    launched.catch(() => {});
    const prepared: PreparedLaunch = {
      onEarlyStart: undefined,
      start: () => {
        this.#start(job);
        return launched;
      },
      drop: () => this.#give(job),
    };
    const job: HelperJob = {
      id,
      state: 'ready',
      request: {
        op: 'run',
        id,
        cwd,
        cmd: command,
        env: { [JOB_TAG_VARIABLE]: group.tag },
        cg: group.procs ?? null,
      },
      asked: false,
      gone: false,
      stdout: this.#stream(id, 'o'),
      stderr: this.#stream(id, 'e'),
      ended: false,
      launched,
      resolveLaunch,
      rejectLaunch,
      resolveExit,
      exited,
      group,
      prepared,
    };
    this.#jobs.set(id, job);
    this.#prepared.set(prepared, job);
    return prepared;
  }

  /** `start` of a prepared job: sends it to run now, unless it is on its way already. */
  #start(job: HelperJob): void {
    if (job.asked || job.gone) return;
    job.asked = true;
    if (job.state === 'ready') {
      job.state = 'sent';
      this.#ensureHelper().then(
        (helper) => helper.stdin?.write(`${JSON.stringify(job.request)}\n`),
        (err: unknown) => this.#fail(job, err instanceof Error ? err : new Error(String(err))),
      );
    } else if (job.state === 'chained') {
      // Still waiting for the job it was chained to: now, then (the helper ignores a `go`
      // for a job it has started meanwhile).
      this.#send({ op: 'go', id: job.id });
    }
  }

  /** `drop` of a prepared job. */
  #give(job: HelperJob): void {
    if (job.gone || job.ended) return;
    job.gone = true;
    job.rejectLaunch(new Error('given up before it started'));
    if (job.state === 'ready') {
      this.#fail(job, new Error('given up before it started'));
      return;
    }
    // On its way: the helper answers `f` for a job still waiting, or kills it (then `x`).
    job.stdout.readable.destroy();
    job.stderr.readable.destroy();
    this.#send({ op: 'kill', id: job.id });
  }

  /** `chain` of a started job: `next` is sent to start the moment `job`'s shell ends. */
  #chain(job: HelperJob, next: PreparedLaunch): boolean {
    const after = this.#prepared.get(next);
    if (after === undefined || job.ended || job.gone) return false;
    if (after.state !== 'ready' || after.asked || after.gone) return false;
    after.state = 'chained';
    this.#send({ ...after.request, after: job.id });
    return true;
  }

  /** A job that will never start: forgotten, its cgroup released, its launch rejected. */
  #fail(job: HelperJob, err: Error): void {
    job.gone = true;
    this.#drop(job.id, job);
    void job.group.release();
    job.rejectLaunch(err);
  }

  /** Writes a request to the helper (started again if it is gone). */
  #send(request: Record<string, unknown>): void {
    this.#ensureHelper().then(
      (helper) => helper.stdin?.write(`${JSON.stringify(request)}\n`),
      () => {},
    );
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
    // Whatever escaped the process groups: every job's cgroup or tag.
    await this.containment.close();
  }

  /**
   * A job's output stream, fed by the helper's frames. A reader that destroys it before its
   * end (a descendant of the job kept it open past the grace after the job's exit) makes the
   * helper close its end of the pipe.
   */
  #stream(id: number, tag: 'o' | 'e'): HelperStream {
    const stream: HelperStream = { readable: new Readable({ read() {} }), done: false };
    stream.readable.once('close', () => {
      if (stream.done) return;
      stream.done = true;
      const helper = this.#helper;
      void helper?.then((h) =>
        h.stdin?.write(`${JSON.stringify({ op: 'close', id, stream: tag })}\n`),
      );
      this.#maybeForget(id);
    });
    return stream;
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
      const args = ['-c', SPAWN_HELPER_SOURCE];
      if (this.containment.helperProcs !== undefined) args.push(this.containment.helperProcs);
      const child = spawn(this.#python, args, {
        // The jobs' environment: the helper passes its own on.
        env: jobEnvironment(),
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
      const reader = new HelperReader(
        (line) => {
          if (ready) return this.#event(line);
          if (line !== 'ready') return;
          ready = true;
          clearTimeout(timer);
          this.#log.debug({ python: this.#python, helperPid: child.pid }, 'spawn helper started');
          resolve(child);
        },
        (id, tag) => this.#frame(id, tag),
        (id, tag) => this.#endOf(id, tag),
      );
      child.stdout?.on('data', (chunk: Buffer) => reader.feed(chunk));
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

  /** One line from the helper: `s ID PID HOW`, `f ID "message"` or `x ID STATUS`. */
  #event(line: string): void {
    if (line.startsWith('m ')) {
      const [, verdict, ms] = line.split(' ');
      this.#cgroupMoves = verdict === 'cheap' ? 'cheap' : 'costly';
      this.#log.info(
        { cgroupMoves: this.#cgroupMoves, moveMs: Number(ms) },
        this.#cgroupMoves === 'cheap'
          ? 'moving into a cgroup is cheap here: jobs are moved into theirs and started with posix_spawn'
          : 'moving into a cgroup waits here: jobs after a pause are cloned into theirs (clone3)',
      );
      return;
    }
    const first = line.indexOf(' ');
    const second = line.indexOf(' ', first + 1);
    const kind = line.slice(0, first);
    const id = Number(line.slice(first + 1, second));
    const rest = line.slice(second + 1);
    const job = this.#jobs.get(id);
    if (job === undefined) return;
    switch (kind) {
      case 's': {
        const [pid, entry] = rest.split(' ');
        job.pid = Number(pid);
        job.entry = entry === 'clone3' || entry === 'moved' ? entry : 'none';
        job.state = 'started';
        // Given up while on its way: the `kill` sent then ends it (its `x` follows).
        if (job.gone) break;
        this.#started(id, job);
        // Chained, and started by the helper as the job before it ended.
        if (!job.asked) job.prepared.onEarlyStart?.();
        break;
      }
      case 'f':
        this.#fail(job, new Error(JSON.parse(rest) as string));
        break;
      case 'x': {
        job.ended = true;
        const status = Number(rest);
        // Whatever the job left, even outside its process group, goes before it ends.
        void job.group.release().then(() => job.resolveExit(status));
        this.#maybeForget(id);
        break;
      }
      default:
        this.#log.warn({ line }, 'unexpected line from the spawn helper');
    }
  }

  /** Where the bytes of an `o`/`e` frame go: the stream, unless nobody wants them. */
  #frame(id: number, tag: 'o' | 'e'): Readable | undefined {
    const job = this.#jobs.get(id);
    const stream = tag === 'o' ? job?.stdout : job?.stderr;
    return stream === undefined || stream.done ? undefined : stream.readable;
  }

  /** The helper's end mark of a job's stream: the job closed it (all its processes did). */
  #endOf(id: number, tag: 'o' | 'e'): void {
    const job = this.#jobs.get(id);
    const stream = tag === 'o' ? job?.stdout : job?.stderr;
    if (stream === undefined || stream.done) return;
    stream.done = true;
    stream.readable.push(null);
    // Ends (and closes) at once when nothing is left unread, as a socket at EOF does.
    stream.readable.read(0);
    this.#maybeForget(id);
  }

  #started(id: number, job: HelperJob): void {
    job.resolveLaunch({
      stdout: job.stdout.readable,
      stderr: job.stderr.readable,
      exited: job.exited,
      entry: job.entry ?? 'none',
      chain: (next) => this.#chain(job, next),
      kill: () => {
        if (job.ended) return;
        job.group.kill();
        const helper = this.#helper;
        void helper?.then((h) => h.stdin?.write(`${JSON.stringify({ op: 'kill', id })}\n`));
      },
    });
  }

  /** Forgets a job that has ended and whose output has ended or been given up. */
  #maybeForget(id: number): void {
    const job = this.#jobs.get(id);
    if (job?.ended && job.stdout.done && job.stderr.done) this.#jobs.delete(id);
  }

  #drop(id: number, job: HelperJob): void {
    this.#jobs.delete(id);
    job.stdout.done = true;
    job.stderr.done = true;
    job.stdout.readable.destroy();
    job.stderr.readable.destroy();
  }

  /** The helper is gone: kill what it started, end or refuse every job it had; returns how many. */
  #helperDied(): number {
    let count = 0;
    for (const [id, job] of this.#jobs) {
      // Prepared and never sent: the next helper starts it.
      if (job.state === 'ready') continue;
      count++;
      if (job.pid !== undefined && !job.ended) {
        try {
          process.kill(-job.pid, 'SIGKILL');
        } catch {
          // Gone already.
        }
      }
      const released = job.group.release();
      // Its output went through the helper: what did not come never will.
      this.#drop(id, job);
      if (job.pid !== undefined) {
        if (!job.ended) {
          job.ended = true;
          void released.then(() => job.resolveExit(JOB_LOST));
        }
      } else {
        job.gone = true;
        job.rejectLaunch(new SpawnerLost('the spawn helper died while starting the job'));
      }
    }
    return count;
  }
}

/**
 * Parses the helper's stdout: lines (`ready`, `s`, `f`, `x`), and output frames, each a line
 * `o ID LEN` or `e ID LEN` followed by LEN bytes of that job's stdout or stderr; LEN 0 is
 * the stream's end mark. A frame's bytes go to the stream as they arrive, never copied.
 */
export class HelperReader {
  readonly #line: (line: string) => void;
  readonly #target: (id: number, tag: 'o' | 'e') => Readable | undefined;
  readonly #end: (id: number, tag: 'o' | 'e') => void;
  /** The start of a line that has not ended yet. */
  #partial: Buffer | undefined;
  /** Bytes of the current frame still to come, and where they go. */
  #body = 0;
  #to: Readable | undefined;

  constructor(
    line: (line: string) => void,
    target: (id: number, tag: 'o' | 'e') => Readable | undefined,
    end: (id: number, tag: 'o' | 'e') => void,
  ) {
    this.#line = line;
    this.#target = target;
    this.#end = end;
  }

  feed(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.#body > 0) {
        const n = Math.min(this.#body, chunk.length - at);
        const to = this.#to;
        if (to !== undefined && !to.destroyed) to.push(chunk.subarray(at, at + n));
        this.#body -= n;
        at += n;
        continue;
      }
      const nl = chunk.indexOf(0x0a, at);
      if (nl < 0) {
        const rest = chunk.subarray(at);
        this.#partial = this.#partial ? Buffer.concat([this.#partial, rest]) : Buffer.from(rest);
        return;
      }
      let line = chunk.subarray(at, nl);
      at = nl + 1;
      if (this.#partial !== undefined) {
        line = Buffer.concat([this.#partial, line]);
        this.#partial = undefined;
      }
      const tag = line[0];
      if ((tag === 0x6f || tag === 0x65) && line[1] === 0x20) {
        // `o ID LEN` / `e ID LEN`: no other line starts with either letter and a space.
        const text = line.toString('latin1');
        const space = text.indexOf(' ', 2);
        const id = Number(text.slice(2, space));
        const len = Number(text.slice(space + 1));
        const which = tag === 0x6f ? 'o' : 'e';
        if (len === 0) {
          this.#end(id, which);
        } else {
          this.#body = len;
          this.#to = this.#target(id, which);
        }
        continue;
      }
      this.#line(line.toString('utf8'));
    }
  }
}
