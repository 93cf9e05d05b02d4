/**
 * The action cache in a job (issue 21): the key of a job as a given host would receive it,
 * a hit's outputs landed as a host's would be, and a success's outputs read back for
 * storing. Used by the transport (`sendJob`) when a job asks for the cache.
 */
import {
  closeSync,
  fchmodSync,
  constants as fsc,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import type { OutgoingFile } from '../protocol/filestream.js';
import { prepareInside } from '../protocol/names.js';
import { uniqueSuffix } from '../util/unique.js';
import { actionKey, type PlatformIdentity } from './key.js';
import type { CachedFile, CacheEntry } from './store.js';

/** What hashes a requirement (the transport's memoizing `ContentHasher`). */
export type HashFile = (
  file: OutgoingFile,
) => Promise<{ readonly sha256: string; readonly mode: number } | undefined>;

/**
 * The key of a job: `undefined` when the host's platform is unknown (no hits, no stores) or a
 * requirement cannot be hashed (a name a line cannot carry; a missing file, which the job
 * itself then reports).
 */
export async function jobKey(
  command: string,
  files: readonly OutgoingFile[],
  cwd: string | undefined,
  platform: PlatformIdentity | undefined,
  hash: HashFile,
): Promise<string | undefined> {
  if (platform === undefined) return undefined;
  const inputs: { name: string; mode: number; sha256: string }[] = [];
  for (const f of files) {
    let h: Awaited<ReturnType<HashFile>>;
    try {
      h = await hash(f);
    } catch {
      return undefined;
    }
    if (h === undefined) return undefined;
    inputs.push({ name: f.name, mode: h.mode, sha256: h.sha256 });
  }
  try {
    return actionKey({ command, cwd: cwd ?? '', inputs, platform });
  } catch {
    return undefined; // two inputs under one name: the job refuses it itself
  }
}

/** A cached output staged beside its place, for `landStaged`. */
export interface StagedFile {
  readonly name: string;
  readonly path: string;
  readonly staged: string;
  readonly size: number;
}

/**
 * Writes a hit's files under temporary names beside their places, modes set before any byte
 * (as received files are): `check(name)` refuses a name (`.git/…`, the Rakefile) by
 * throwing. On an error, what was staged is removed and the error rethrown.
 */
export function stageCached(
  outputDir: string,
  files: readonly CachedFile[],
  check: (name: string) => void,
): StagedFile[] {
  const staged: StagedFile[] = [];
  try {
    for (const f of files) {
      check(f.name);
      const path = prepareInside(outputDir, f.name);
      const tmp = join(
        dirname(path),
        `.${f.name.split('/').at(-1)?.slice(0, 32)}.rake-tmp-${uniqueSuffix()}`,
      );
      const fd = openSync(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
      staged.push({ name: f.name, path, staged: tmp, size: f.bytes.length });
      try {
        fchmodSync(fd, f.mode & 0o777);
        for (let done = 0; done < f.bytes.length; ) {
          done += writeSync(fd, f.bytes, done, f.bytes.length - done);
        }
      } finally {
        closeSync(fd);
      }
    }
  } catch (err) {
    for (const s of staged) rmSync(s.staged, { force: true });
    throw err;
  }
  return staged;
}

/**
 * A successful job's entry: its stdout, its stderr (when the host carried any) and its
 * output files (`names`, relative to `outputDir`, as landed) read back with their modes.
 * `undefined` when one cannot be read (replaced meanwhile): nothing is stored then.
 */
export function entryOf(
  outputDir: string,
  stdout: Buffer,
  names: readonly string[],
  stderr?: Buffer,
): CacheEntry | undefined {
  const files: CachedFile[] = [];
  try {
    for (const name of names) {
      const path = join(outputDir, ...name.split('/'));
      const mode = statSync(path).mode & 0o777;
      files.push({ name, mode, bytes: readFileSync(path) });
    }
  } catch {
    return undefined;
  }
  return stderr === undefined || stderr.length === 0
    ? { stdout, files }
    : { stdout, stderr, files };
}

/** `outputDir`-relative, `/`-separated. */
export function relativeName(outputDir: string, path: string): string {
  return relative(outputDir, path).split(sep).join('/');
}
