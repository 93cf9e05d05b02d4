import {
  type BigIntStats,
  closeSync,
  createReadStream,
  type Dirent,
  lstatSync,
  openSync,
  readdirSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { chmod, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { removeDeep } from './remove-deep.js';

/** Identity of a regular file's content at one moment: any change means "modified". */
interface FileStamp {
  readonly size: bigint;
  readonly mtimeNs: bigint;
  readonly ctimeNs: bigint;
  readonly ino: bigint;
}

/**
 * The regular files under a job directory before its command runs, by relative `/` name.
 * Output files are those that are new or whose stamp changed (PROTOCOL.md, "we do").
 */
export type TreeSnapshot = ReadonlyMap<string, FileStamp>;

/** Whether a listing is small enough for {@link removeTree}'s synchronous path. */
export function isSmallListing(listing: TreeListing): boolean {
  return listing.ok && listing.files.size < ENTRIES_PER_TURN;
}

/** Result of listing a tree: the files, or the fact that there were too many. */
export type TreeListing =
  | {
      readonly ok: true;
      readonly files: Map<string, FileStamp>;
      /**
       * Entries whose names are not UTF-8 (the wire carries UTF-8 names), shown with their
       * other bytes as `\xNN`: they cannot be sent, and must not be dropped silently.
       */
      readonly notUtf8: string[];
      /**
       * The root was read and held no entry at all (no file, directory, link or other): a
       * job directory it describes can be kept for the next job without a walk.
       */
      readonly empty: boolean;
    }
  | { readonly ok: false; readonly reason: 'too-many-files'; readonly limit: number };

/** Entries a listing or removal handles synchronously before it lets other work run. */
const ENTRIES_PER_TURN = 256;

/**
 * Lists the regular files under `root`, recursively, by lstat: symlinks are neither
 * followed nor listed, so a job cannot make the server return `/etc/passwd`. Unreadable
 * directories are skipped. Stops at `limit` files.
 *
 * The calls are synchronous (a job directory usually holds a handful of files, and each
 * thread-pool call costs two thread handoffs), in turns of {@link ENTRIES_PER_TURN}
 * entries, so a job that left 100,000 files does not stall the server's other connections.
 */
export async function listRegularFiles(root: string, limit: number): Promise<TreeListing> {
  const files = new Map<string, FileStamp>();
  const notUtf8: string[] = [];
  const pending: string[] = [''];
  let work = 0;
  let empty = false;
  for (let rel = pending.pop(); rel !== undefined; rel = pending.pop()) {
    let entries: Dirent[];
    try {
      entries = readdirSync(join(root, rel), { withFileTypes: true });
    } catch {
      continue;
    }
    if (rel === '') empty = entries.length === 0;
    // A name that is not UTF-8 reads with U+FFFD in it (and then names nothing): find the
    // real ones. Only then: the common listing costs nothing more.
    if (entries.some((e) => e.name.includes('\ufffd'))) {
      const bad = namesNotUtf8(join(root, rel));
      for (const name of bad) notUtf8.push(rel === '' ? name : `${rel}/${name}`);
      if (bad.length > 0) entries = entries.filter((e) => !isLossy(join(root, rel, e.name)));
    }
    for (const entry of entries) {
      if (++work % ENTRIES_PER_TURN === 0) await new Promise((r) => setImmediate(r));
      const name = rel === '' ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory()) pending.push(name);
      else if (entry.isFile()) {
        let st: BigIntStats | undefined;
        try {
          st = lstatSync(join(root, name), { bigint: true, throwIfNoEntry: false });
        } catch {
          continue;
        }
        if (!st?.isFile()) continue;
        if (files.size >= limit) return { ok: false, reason: 'too-many-files', limit };
        files.set(name, { size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino });
      }
    }
  }
  return { ok: true, files, notUtf8, empty };
}

/** The listing of a directory known to hold no regular file (nothing was put in it). */
export function noFiles(): TreeListing {
  return { ok: true, files: new Map(), notUtf8: [], empty: false };
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** The names in `dir` that are not UTF-8, their other bytes shown as `\xNN`. */
function namesNotUtf8(dir: string): string[] {
  let raw: Buffer[];
  try {
    raw = readdirSync(dir, { encoding: 'buffer' });
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const name of raw) {
    try {
      strictUtf8.decode(name);
    } catch {
      out.push(
        [...name]
          .map((b) =>
            b >= 0x20 && b < 0x7f
              ? String.fromCharCode(b)
              : `\\x${b.toString(16).padStart(2, '0')}`,
          )
          .join(''),
      );
    }
  }
  return out;
}

/** Whether a path read back from a lossy (U+FFFD) name names nothing. */
function isLossy(path: string): boolean {
  return path.includes('\ufffd') && lstatSync(path, { throwIfNoEntry: false }) === undefined;
}

/** Names (sorted) of files in `after` that are absent from `before` or changed since. */
export function changedFiles(before: TreeSnapshot, after: TreeSnapshot): string[] {
  const out: string[] = [];
  for (const [name, stamp] of after) {
    const old = before.get(name);
    if (
      !old ||
      old.size !== stamp.size ||
      old.mtimeNs !== stamp.mtimeNs ||
      old.ctimeNs !== stamp.ctimeNs ||
      old.ino !== stamp.ino
    ) {
      out.push(name);
    }
  }
  return out.sort();
}

/**
 * Removes a job directory, even one whose command made subdirectories read-only (it makes
 * every directory writable again and retries once), or one deeper than PATH_MAX
 * ({@link removeDeep}). `small`: the caller knows the tree
 * holds few entries (fewer than {@link ENTRIES_PER_TURN}), so it goes synchronously.
 */
export async function removeTree(dir: string, { small = false } = {}): Promise<void> {
  if (small) {
    try {
      rmSync(dir, { recursive: true, force: true });
      return;
    } catch {
      // Read-only subdirectories, or a tree bigger than we thought: the careful way below.
    }
  }
  try {
    await rm(dir, { recursive: true, force: true, maxRetries: 2 });
  } catch (err) {
    // Deeper than PATH_MAX: only a walk with descriptors gets there.
    if ((err as NodeJS.ErrnoException).code === 'ENAMETOOLONG') return removeDeep(dir);
    try {
      await makeWritable(dir);
      await rm(dir, { recursive: true, force: true, maxRetries: 2 });
    } catch {
      // Deeper than PATH_MAX: only a walk with descriptors gets there.
      await removeDeep(dir);
    }
  }
}

async function makeWritable(dir: string): Promise<void> {
  const pending = [dir];
  for (let d = pending.pop(); d !== undefined; d = pending.pop()) {
    await chmod(d, 0o700).catch(() => {});
    const entries = await readdir(d, { withFileTypes: true }).catch(() => [] as Dirent[]);
    for (const e of entries) if (e.isDirectory()) pending.push(join(d, e.name));
  }
}

/**
 * A job's stdout as it arrives: in memory up to `memoryBytes`, then in a file of its own
 * (`path`, outside the job directory, so never an output file), so a finished job whose
 * client does not read its reply holds no more than `memoryBytes` of the server's heap. The
 * writes are synchronous (a page-cache copy of a pipe's chunk, at most 64 KiB); the reply
 * streams the file back with backpressure. {@link dispose} removes the file.
 */
export class StdoutSpool {
  readonly #path: string;
  readonly #memoryBytes: number;
  readonly #chunks: Buffer[] = [];
  #bytes = 0;
  #fd: number | undefined;
  #spilled = false;

  constructor(path: string, memoryBytes = SPOOL_MEMORY_BYTES) {
    this.#path = path;
    this.#memoryBytes = memoryBytes;
  }

  /** Bytes written so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** True once the output went to the file (over `memoryBytes`). */
  get spilled(): boolean {
    return this.#spilled;
  }

  /** Adds a chunk of stdout. Throws if the file cannot be written (disk full). */
  write(chunk: Buffer): void {
    this.#bytes += chunk.length;
    if (!this.#spilled && this.#bytes <= this.#memoryBytes) {
      this.#chunks.push(chunk);
      return;
    }
    if (!this.#spilled) {
      this.#fd = openSync(this.#path, 'w', 0o600);
      this.#spilled = true;
      for (const held of this.#chunks.splice(0)) writeAll(this.#fd, held);
    }
    writeAll(this.#fd as number, chunk);
  }

  /** The output, chunk by chunk: from memory, or read back from the file in 256 KiB reads. */
  async *read(): AsyncGenerator<Buffer> {
    if (!this.#spilled) {
      yield* this.#chunks;
      return;
    }
    this.#closeFd();
    for await (const chunk of createReadStream(this.#path, { highWaterMark: 256 * 1024 })) {
      yield chunk as Buffer;
    }
  }

  /** Frees the memory and removes the file. Idempotent; never throws. */
  dispose(): void {
    this.#chunks.length = 0;
    this.#closeFd();
    if (this.#spilled) rmSync(this.#path, { force: true });
  }

  #closeFd(): void {
    if (this.#fd === undefined) return;
    try {
      closeSync(this.#fd);
    } catch {
      // Already closed.
    }
    this.#fd = undefined;
  }
}

/** Stdout a job keeps in memory before its spool goes to a file (see {@link StdoutSpool}). */
export const SPOOL_MEMORY_BYTES = 256 * 1024;

function writeAll(fd: number, chunk: Buffer): void {
  let done = 0;
  while (done < chunk.length) done += writeSync(fd, chunk, done, chunk.length - done);
}
