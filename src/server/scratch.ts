import { accessSync, constants, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';

/** `f_type` of a tmpfs (linux/magic.h). */
export const TMPFS_MAGIC = 0x01021994;

/** The memory-backed directory Linux mounts for every system (a tmpfs). */
export const SHM_DIR = '/dev/shm';

/** Free space a memory file system needs before job directories go there. */
export const MIN_MEMORY_SCRATCH_BYTES = 1024 ** 3;

/** Where a server's default workdir goes, and why there. */
export interface ScratchRoot {
  readonly dir: string;
  /** `tmpdir`: `$TMPDIR` was set; `memory`: /dev/shm; `default`: the system temp dir. */
  readonly reason: 'tmpdir' | 'memory' | 'default';
  /** Why /dev/shm was passed over, when it was looked at. */
  readonly why?: string;
}

/** What {@link scratchRoot} asks of the machine (the real calls by default). */
export interface ScratchProbe {
  readonly env: NodeJS.ProcessEnv;
  readonly platform: NodeJS.Platform;
  readonly tmpdir: () => string;
  readonly statfs: (dir: string) => { type: number; bavail: number; bsize: number };
  /** Throws when `dir` cannot be written and entered by this user. */
  readonly access: (dir: string) => void;
}

const REAL: ScratchProbe = {
  env: process.env,
  platform: process.platform,
  tmpdir,
  statfs: (dir) => statfsSync(dir),
  access: (dir) => accessSync(dir, constants.W_OK | constants.X_OK),
};

/**
 * The parent of a server's default workdir (its job directories and input cache). Job
 * directories are scratch space: each lives as long as one job, and every job writes its
 * inputs and outputs there. On a disk file system making a file is dear (ext4 allocates an
 * inode: 0.3–0.5 ms of CPU each on the test machine, against 0.02 ms on tmpfs), and a
 * compile job makes three (two inputs, one object); a link of N objects makes N + 1. So,
 * as on systems whose /tmp is a tmpfs (Debian 13, Fedora, Arch):
 * - `$TMPDIR` set: there, as the user asked;
 * - else, on Linux, `/dev/shm` when it is a tmpfs this user can write with at least
 *   {@link MIN_MEMORY_SCRATCH_BYTES} free;
 * - else the system temp dir.
 * `--workdir` overrides all of this; the `listening` log record says which was taken.
 */
export function scratchRoot(probe: ScratchProbe = REAL): ScratchRoot {
  if ((probe.env.TMPDIR ?? '') !== '') return { dir: probe.tmpdir(), reason: 'tmpdir' };
  const fallback = (why: string): ScratchRoot => ({ dir: probe.tmpdir(), reason: 'default', why });
  if (probe.platform !== 'linux') return fallback(`not Linux (${probe.platform})`);
  let fs: { type: number; bavail: number; bsize: number };
  try {
    fs = probe.statfs(SHM_DIR);
    probe.access(SHM_DIR);
  } catch (err) {
    return fallback(`${SHM_DIR}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (fs.type !== TMPFS_MAGIC) return fallback(`${SHM_DIR} is not a tmpfs`);
  const free = fs.bavail * fs.bsize;
  if (free < MIN_MEMORY_SCRATCH_BYTES) {
    return fallback(`${SHM_DIR} has ${Math.floor(free / 1024 ** 2)} MiB free, under 1 GiB`);
  }
  return { dir: SHM_DIR, reason: 'memory' };
}
