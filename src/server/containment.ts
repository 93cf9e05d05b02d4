import { spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmdirSync,
  writeFileSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import type { Logger } from 'pino';
import { uniqueSuffix } from '../util/unique.js';
import { OWNER_TAG } from './stale.js';

/**
 * How the server finds every process a job started, to kill them all when the job ends (its
 * shell exited, its client vanished, `--job-timeout`, shutdown). A process group is not
 * enough: `setsid` or a double fork leaves it, and such a process used to outlive its job.
 *
 * - `cgroup`: each job runs in a cgroup v2 of its own (`<the server's cgroup>/rakeserver-
 *   p<pid>-…/job-<n>`); its first process enters it before it runs anything, and every
 *   descendant stays there whatever it does; `cgroup.kill` ends them all at once. Needs a
 *   writable cgroup2 hierarchy (root, or a delegated subtree) and Linux 5.14 or later.
 * - `tag`: each job's environment carries `RAKE_JOB_TAG=<unique>`; killing the job kills
 *   its process group, then every process whose initial environment (`/proc/PID/environ`)
 *   holds the tag, scan after scan until one finds none. Holds against `setsid` and double
 *   forks; a process that re-executes itself with an emptied environment escapes it.
 *
 * `auto` (the default) takes `cgroup` when the probe at start-up succeeds, else `tag`.
 */
export type ContainmentChoice = 'auto' | 'cgroup' | 'tag';

/** The variable every job's environment carries, naming its group (both mechanisms). */
export const JOB_TAG_VARIABLE = 'RAKE_JOB_TAG';

/** One job's group of processes. */
export interface JobGroup {
  /** `RAKE_JOB_TAG`'s value for this job. */
  readonly tag: string;
  /** `cgroup`: the `cgroup.procs` file the job's first process writes its pid into. */
  readonly procs: string | undefined;
  /** Sends SIGKILL to every process of the group now. Idempotent. */
  kill(): void;
  /**
   * Kills whatever is left, waits (bounded) until none is, and removes the group. Resolves
   * whether the group emptied. Idempotent.
   */
  release(): Promise<boolean>;
}

/** The mechanism in force for a server's jobs. */
export interface Containment {
  /** `on-demand`: not chosen yet (launcher.ts's OnDemandLauncher before its first job). */
  readonly kind: 'cgroup' | 'tag' | 'on-demand';
  /** The cgroup directory holding the jobs' cgroups, or why `cgroup` was not taken. */
  readonly detail: string;
  /**
   * `cgroup`: the `cgroup.procs` of a cgroup of the spawn helper's own, beside the jobs'
   * (it moves into a job's cgroup to spawn the job, then back there).
   */
  readonly helperProcs: string | undefined;
  /** A group for job `id`. Throws when its cgroup cannot be made. */
  open(id: number): JobGroup;
  /** Kills every group still open and removes this server's cgroup directory. */
  close(): Promise<void>;
}

/**
 * Empty job cgroups a server keeps for its next jobs. Making a cgroup (mkdir) and removing it
 * (listing its 30-odd control files, rmdir) cost about 0.4 ms of CPU per job here
 * (scripts/bench/server-phases.ts); a job whose processes are all gone leaves its cgroup
 * empty, ready for another.
 */
const SPARE_CGROUPS = 32;

/** How long {@link JobGroup.release} waits for the group's processes to be gone. */
const EMPTY_WAIT_MS = 2000;
/** Scans of `/proc` a tag kill makes at most (each kills what the previous one missed). */
const TAG_SCANS = 20;

/** Where the cgroup2 hierarchy is mounted, and this process's cgroup in it; or why not. */
function ownCgroup(): { dir: string } | { why: string } {
  let mount: string | undefined;
  try {
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      // `36 25 0:30 / /sys/fs/cgroup rw,… - cgroup2 cgroup2 rw,…`
      const [left, right] = line.split(' - ');
      if (right?.split(' ')[0] !== 'cgroup2') continue;
      const fields = left?.split(' ') ?? [];
      if (fields[3] !== '/') continue;
      mount = fields[4];
      break;
    }
  } catch (err) {
    return { why: `cannot read /proc/self/mountinfo: ${(err as Error).message}` };
  }
  if (mount === undefined) return { why: 'no cgroup2 hierarchy is mounted' };
  const own = readFileSync('/proc/self/cgroup', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('0::'))
    ?.slice(3);
  if (own === undefined) return { why: 'this process has no cgroup2 membership' };
  return { dir: join(mount, own) };
}

/** Sets up the mechanism `choice` asks for; `auto` falls back to `tag`, saying why. */
export async function createContainment(
  choice: ContainmentChoice,
  log: Logger,
): Promise<Containment> {
  const prefix = `${OWNER_TAG}-${uniqueSuffix()}`;
  if (choice === 'tag') return new TagContainment(prefix, 'chosen');
  const cgroup = await CgroupContainment.probe(prefix, log);
  if (cgroup instanceof CgroupContainment) return cgroup;
  if (choice === 'cgroup') {
    throw new Error(
      `cannot contain jobs in cgroups: ${cgroup}. Run the server as root or in a delegated cgroup2 subtree on Linux 5.14 or later, or choose containment tag`,
    );
  }
  return new TagContainment(prefix, cgroup);
}

/** The tag mechanism: the process group, then a scan of every process's environment. */
class TagContainment implements Containment {
  readonly kind = 'tag';
  readonly detail: string;
  readonly helperProcs = undefined;
  readonly #prefix: string;
  readonly #open = new Set<JobGroup>();

  constructor(prefix: string, why: string) {
    this.#prefix = prefix;
    this.detail = why;
  }

  open(id: number): JobGroup {
    const tag = `${this.#prefix}-${id}`;
    const needle = Buffer.from(`${JOB_TAG_VARIABLE}=${tag}\0`);
    const open = this.#open;
    let released: Promise<boolean> | undefined;
    const group: JobGroup = {
      tag,
      procs: undefined,
      kill: () => {
        for (let scan = 0; scan < TAG_SCANS && killTagged(needle) > 0; scan++);
      },
      release: () => {
        released ??= (async () => {
          // A process in the middle of an exec shows an empty environment for a moment, so
          // one clean scan proves little: only two in a row, a few milliseconds apart, do.
          let clean = 0;
          for (let scan = 0; scan < TAG_SCANS && clean < 2; scan++) {
            clean = killTagged(needle) === 0 ? clean + 1 : 0;
            if (clean < 2) await new Promise((r) => setTimeout(r, 2));
          }
          open.delete(group);
          return clean === 2;
        })();
        return released;
      },
    };
    open.add(group);
    return group;
  }

  async close(): Promise<void> {
    await Promise.all([...this.#open].map((g) => g.release()));
  }
}

/** One buffer for every `/proc/PID/environ` a scan reads (most are a few KiB). */
const ENVIRON = Buffer.alloc(256 * 1024);

/** SIGKILLs every process whose initial environment holds `needle`; returns how many. */
function killTagged(needle: Buffer): number {
  let killed = 0;
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return 0;
  }
  for (const name of names) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    let length: number;
    try {
      const fd = openSync(`/proc/${name}/environ`, 'r');
      try {
        length = readSync(fd, ENVIRON, 0, ENVIRON.length, 0);
      } finally {
        closeSync(fd);
      }
    } catch {
      continue;
    }
    let environ = ENVIRON.subarray(0, length);
    if (length === ENVIRON.length) {
      try {
        environ = readFileSync(`/proc/${name}/environ`);
      } catch {
        continue;
      }
    }
    const at = environ.indexOf(needle);
    if (at < 0 || (at > 0 && environ[at - 1] !== 0)) continue;
    try {
      process.kill(pid, 'SIGKILL');
      killed++;
    } catch {
      // Gone already.
    }
  }
  return killed;
}

/** The cgroup mechanism: a cgroup v2 per job under one of this server's own. */
class CgroupContainment implements Containment {
  readonly kind = 'cgroup';
  readonly detail: string;
  readonly helperProcs: string;
  readonly #root: string;
  readonly #log: Logger;
  readonly #open = new Set<JobGroup>();
  /** Empty job cgroups, ready for the next jobs (at most {@link SPARE_CGROUPS}). */
  readonly #spare: string[] = [];

  private constructor(root: string, log: Logger) {
    this.#root = root;
    this.detail = root;
    this.helperProcs = join(root, 'helper', 'cgroup.procs');
    this.#log = log;
  }

  /**
   * Makes this server's cgroup and checks, with a throw-away `sh`, that a process can move
   * itself into a job's cgroup and that `cgroup.kill` is there. Returns why not, if not.
   */
  static async probe(prefix: string, log: Logger): Promise<CgroupContainment | string> {
    const own = ownCgroup();
    if ('why' in own) return own.why;
    await sweepStaleCgroups(own.dir, log);
    const root = join(own.dir, `rakeserver-${prefix}`);
    try {
      mkdirSync(root);
    } catch (err) {
      return `cannot make a cgroup in ${own.dir}: ${(err as Error).message}`;
    }
    const containment = new CgroupContainment(root, log);
    try {
      mkdirSync(join(root, 'helper'));
      if (!existsSync(join(root, 'cgroup.kill'))) {
        throw new Error('this kernel has no cgroup.kill (Linux 5.14 or later has)');
      }
      const group = containment.open(0);
      const moved = spawnSync(
        '/bin/sh',
        ['-c', 'echo $$ > "$0" && cat /proc/self/cgroup', group.procs as string],
        {
          encoding: 'utf8',
        },
      );
      const inside = moved.stdout
        .split('\n')
        .some((l) => l.startsWith('0::') && l.endsWith('/job-0'));
      removeCgroup(join(root, 'job-0'));
      containment.#open.clear();
      if (moved.status !== 0 || !inside) {
        throw new Error(
          `a process cannot enter a job's cgroup: ${moved.stderr.trim() || `status ${moved.status}`}`,
        );
      }
      return containment;
    } catch (err) {
      removeCgroup(root);
      return (err as Error).message;
    }
  }

  open(id: number): JobGroup {
    let dir = this.#spare.pop();
    if (dir === undefined) {
      dir = join(this.#root, `job-${id}`);
      mkdirSync(dir);
    }
    const at = dir;
    const open = this.#open;
    const log = this.#log;
    const spare = this.#spare;
    let released: Promise<boolean> | undefined;
    // Once the cgroup is empty and handed on, it may hold another job: no kill of this group
    // may reach it.
    let handedOn = false;
    // A cgroup once killed through cgroup.kill is never handed on: on this kernel (6.18) every
    // process later cloned into it (clone3, CLONE_INTO_CGROUP) is killed at birth, its
    // kill count being compared with the helper's own cgroup's (spec/server/cgroup-entry).
    let killed = false;
    const group: JobGroup = {
      tag: `${basename(this.#root)}-${id}`,
      procs: join(at, 'cgroup.procs'),
      kill: () => {
        if (handedOn) return;
        killed = true;
        try {
          writeFileSync(join(at, 'cgroup.kill'), '1');
        } catch {
          // Removed already.
        }
      },
      release: () => {
        released ??= (async () => {
          // Most jobs end with their shell, their last process: the cgroup is empty already
          // and writing cgroup.kill (0.8 ms of CPU here) would kill nothing.
          let empty = isEmpty(at);
          if (!empty) {
            group.kill();
            empty = await waitEmpty(at);
          }
          if (!empty) {
            log.warn(
              { cgroup: at },
              "a job's processes outlived SIGKILL for 2 s: its cgroup is left",
            );
          } else {
            handedOn = true;
            if (spare.length < SPARE_CGROUPS && !killed) spare.push(at);
            else removeCgroup(at);
          }
          open.delete(group);
          return empty;
        })();
        return released;
      },
    };
    open.add(group);
    return group;
  }

  async close(): Promise<void> {
    await Promise.all([...this.#open].map((g) => g.release()));
    this.#spare.length = 0;
    removeCgroup(this.#root);
  }
}

/** Whether the cgroup `dir` holds no process (`populated 0`); true when it is gone. */
function isEmpty(dir: string): boolean {
  try {
    return /^populated 0$/m.test(readFileSync(join(dir, 'cgroup.events'), 'utf8'));
  } catch {
    return true;
  }
}

/** Waits until the cgroup `dir` is empty, up to {@link EMPTY_WAIT_MS}; resolves whether it is. */
async function waitEmpty(dir: string): Promise<boolean> {
  // SIGKILLed processes leave within microseconds to milliseconds: a short poll, bounded.
  const until = Date.now() + EMPTY_WAIT_MS;
  for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
    if (isEmpty(dir)) return true;
    if (Date.now() >= until) return false;
    await new Promise((r) => setTimeout(r, delay));
  }
}

/** Removes a cgroup and those under it (cgroupfs removes with rmdir alone). Never throws. */
function removeCgroup(dir: string): void {
  try {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) removeCgroup(join(dir, entry.name));
    }
    rmdirSync(dir);
  } catch {
    // Gone, or still populated: the next server's sweep takes it.
  }
}

/** Names of server cgroups: `rakeserver-p<pid>-…`, as {@link CgroupContainment} makes them. */
const SERVER_CGROUP = /^rakeserver-p(\d+)-/;

/**
 * Kills and removes the cgroups that servers no longer running left under `dir` (a server
 * killed with SIGKILL cannot remove its own). Never throws.
 */
async function sweepStaleCgroups(dir: string, log: Logger): Promise<void> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(SERVER_CGROUP.exec(name)?.[1]);
    if (!Number.isInteger(pid) || pid === process.pid || running(pid)) continue;
    const stale = join(dir, name);
    try {
      writeFileSync(join(stale, 'cgroup.kill'), '1');
    } catch {
      // Old kernel or gone: rmdir below says whether it worked.
    }
    await waitEmpty(stale);
    removeCgroup(stale);
    if (existsSync(stale)) log.warn({ cgroup: stale }, 'cannot remove a cgroup a dead server left');
    else log.info({ cgroup: stale }, 'removed a cgroup a dead server left');
  }
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
