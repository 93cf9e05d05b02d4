import {
  chmodSync,
  lstatSync,
  mkdtempSync,
  readdirSync,
  renameSync,
  rmdirSync,
  unlinkSync,
} from 'node:fs';
import { join } from 'node:path';
import { uniqueSuffix } from '../util/unique.js';
import { removeTree } from './outputs.js';
import { OWNER_TAG } from './stale.js';

/**
 * The job directories under a server's workdir. A connection takes one and gives it back
 * when it ends; a directory that held few files is emptied and kept for a later connection
 * instead of being removed and made again. Making and removing directories is the dearest
 * metadata work a job needs (on ext4 mounted with `discard`, as on the test machine, about
 * 1 ms of CPU per mkdir and 3–5 ms per rmdir).
 *
 * A job sees exactly what it would see in a new directory:
 * - With no `layout`, it gets a directory with nothing in it.
 * - With a `layout` (the subdirectories its files will need, known up front from an
 *   `!X have` list), it may get a directory that holds exactly those subdirectories, empty,
 *   as receiving its files would have made them. Its files then land without a mkdir.
 *
 * Directories in use are named `job-<connection>-p<pid>-<random>`, spare ones
 * `spare-p<pid>-<random>` (a rename frees no block), so `job-*` under the workdir is
 * exactly the live connections'; the pid lets a later server remove what a killed one
 * left (src/server/stale.ts).
 */
export class JobDirs {
  readonly #workdir: string;
  readonly #maxSpare: number;
  /** Spare directories by layout key (sorted subdirectories, NUL-joined; '' = none). */
  readonly #spare = new Map<string, string[]>();
  /** What a fresh mkdir makes: 0o777 less the umask. */
  readonly #dirMode: number;

  /** `maxSpare`: emptied directories kept at most (beyond it they are removed). */
  constructor(workdir: string, maxSpare: number) {
    this.#workdir = workdir;
    this.#maxSpare = maxSpare;
    const umask = process.umask();
    this.#dirMode = 0o777 & ~umask;
  }

  /**
   * A directory of this server's own (mode 0700) holding nothing, or exactly the
   * subdirectories in `layout` (relative, `/`-separated, with every parent listed), empty.
   */
  take(id: number, layout: readonly string[] = []): string {
    for (const key of new Set([layoutKey(layout), ''])) {
      const spares = this.#spare.get(key);
      for (let spare = spares?.pop(); spare !== undefined; spare = spares?.pop()) {
        const dir = join(this.#workdir, `job-${id}-${OWNER_TAG}-${uniqueSuffix()}`);
        try {
          renameSync(spare, dir);
          return dir;
        } catch {
          // Gone (someone cleaned the workdir): try another, or make a new one.
        }
      }
    }
    return mkdtempSync(join(this.#workdir, `job-${id}-${OWNER_TAG}-`));
  }

  /**
   * Gives a directory back. `small`: it is known to hold few entries, so it is emptied at
   * once (files removed, a few subdirectories kept, empty) and kept; otherwise, or if that
   * fails, it is removed the careful way. `bare`: it is known to hold nothing at all (no
   * walk: only its mode is reset).
   */
  async give(dir: string, { small = false, bare = false } = {}): Promise<void> {
    if ((small || bare) && this.#spareCount() < this.#maxSpare) {
      const layout = bare ? (this.keep(dir) ? [] : undefined) : this.#empty(dir);
      if (layout !== undefined) {
        const spare = join(this.#workdir, `spare-${OWNER_TAG}-${uniqueSuffix()}`);
        try {
          renameSync(dir, spare);
          const key = layoutKey(layout);
          const list = this.#spare.get(key) ?? [];
          list.push(spare);
          this.#spare.set(key, list);
          return;
        } catch {
          // Fall through: remove it.
        }
      }
    }
    await removeTree(dir, { small });
  }

  /**
   * Readies a directory known to hold nothing at all for another job as it is: mode 0700,
   * as made (its job may have changed it). False if that fails (it is gone).
   */
  keep(dir: string): boolean {
    try {
      chmodSync(dir, 0o700);
      return true;
    } catch {
      return false;
    }
  }

  #spareCount(): number {
    let n = 0;
    for (const list of this.#spare.values()) n += list.length;
    return n;
  }

  /** Removes every spare directory (server shutdown). */
  async close(): Promise<void> {
    const spare = [...this.#spare.values()].flat();
    this.#spare.clear();
    await Promise.all(spare.map((dir) => removeTree(dir, { small: true })));
  }

  /**
   * Removes everything under `dir` but up to {@link MAX_LAYOUT} subdirectories (deeper
   * ones, and any past the bound, go too), resets the modes (0700 for `dir`, a fresh
   * mkdir's for the rest), and returns the subdirectories kept; undefined if it cannot.
   */
  #empty(dir: string): string[] | undefined {
    const kept: string[] = [];
    try {
      chmodSync(dir, 0o700);
      const walk = (rel: string, depth: number): void => {
        const abs = rel === '' ? dir : join(dir, rel);
        for (const entry of readdirSync(abs, { withFileTypes: true })) {
          const name = rel === '' ? entry.name : `${rel}/${entry.name}`;
          const path = join(dir, name);
          if (!entry.isDirectory()) {
            unlinkSync(path);
            continue;
          }
          const keep = depth < MAX_LAYOUT_DEPTH && kept.length < MAX_LAYOUT;
          if (keep) {
            if ((lstatSync(path).mode & 0o7777) !== this.#dirMode) chmodSync(path, this.#dirMode);
            kept.push(name);
          }
          walk(name, depth + 1);
          if (!keep) rmdirSync(path);
        }
      };
      walk('', 0);
      return kept;
    } catch {
      return undefined;
    }
  }
}

/** Subdirectories a spare directory keeps at most, and how deep. */
const MAX_LAYOUT = 16;
const MAX_LAYOUT_DEPTH = 4;

/**
 * The subdirectories the files `names` (wire names, already checked) will need, every
 * parent included, or undefined when there are more than a spare directory keeps.
 */
export function layoutOf(names: readonly string[]): string[] | undefined {
  const dirs = new Set<string>();
  for (const name of names) {
    const segments = name.split('/').filter((s) => s !== '' && s !== '.');
    for (let i = 1; i < segments.length; i++) {
      if (i > MAX_LAYOUT_DEPTH) return undefined;
      dirs.add(segments.slice(0, i).join('/'));
    }
  }
  return dirs.size <= MAX_LAYOUT ? [...dirs] : undefined;
}

function layoutKey(layout: readonly string[]): string {
  return [...layout].sort().join('\0');
}
