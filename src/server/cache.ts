import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  copyFileSync,
  constants as fsc,
  openSync,
  readSync,
  renameSync,
  writeSync,
} from 'node:fs';
import { chmod, copyFile, mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { SMALL_FILE_BYTES } from '../protocol/filestream.js';
import { applicableMode } from '../protocol/modes.js';
import { uniqueSuffix } from '../util/unique.js';

/**
 * A pinned cache entry: it cannot be evicted until released, so a copy out of it never
 * races an eviction. Release exactly once (later calls do nothing).
 */
export interface CacheLease {
  readonly sha256: string;
  readonly path: string;
  readonly size: number;
  release(): void;
}

/** What {@link InputCache.insert} did with a file. */
export type InsertResult =
  | 'inserted'
  /** Already cached (another upload got there first). */
  | 'present'
  /** The bytes do not hash to the claimed SHA-256: never cached. */
  | 'mismatch'
  /** The file's size differs from the claimed size: never cached. */
  | 'wrong-size'
  /** Larger than the whole cache, or every byte of it is pinned. */
  | 'no-room';

/** Counters for logs and benchmarks. */
export interface CacheStats {
  readonly entries: number;
  readonly bytes: number;
  readonly maxBytes: number;
  readonly hits: number;
  readonly misses: number;
  readonly inserts: number;
  readonly rejected: number;
  readonly evictions: number;
}

interface Entry {
  readonly size: number;
  pins: number;
}

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * The server's input cache (extension `cache`): requirement contents by SHA-256 under one
 * directory, bounded to `maxBytes` with least-recently-used eviction. One instance per
 * server; every method is safe under concurrent jobs:
 * - entries are files named by their hash, written to a temporary name and renamed into
 *   place, read-only, and only ever inserted after the server itself hashed the bytes
 *   (a client's claimed hash is never trusted);
 * - a job gets its own copy of an entry (`materialize`), never a link, so a job that
 *   modifies its input in place cannot corrupt the cache;
 * - a leased (pinned) entry is never evicted; an upload in flight can be waited for, so
 *   concurrent jobs needing the same new file upload it once.
 */
export class InputCache {
  readonly dir: string;
  readonly maxBytes: number;
  readonly #log: Logger;
  /** In least-recently-used order: the first key is evicted first. */
  readonly #entries = new Map<string, Entry>();
  readonly #inflight = new Map<string, { done: Promise<void>; settle: () => void }>();
  readonly #unlinking = new Map<string, Promise<void>>();
  readonly #inserting = new Map<string, Promise<InsertResult>>();
  /** The mode a new file gets here (0o666 less the umask), for copies without a mode. */
  readonly #defaultMode: number;
  #bytes = 0;
  #hits = 0;
  #misses = 0;
  #inserts = 0;
  #rejected = 0;
  #evictions = 0;

  private constructor(dir: string, maxBytes: number, log: Logger, defaultMode: number) {
    this.dir = dir;
    this.maxBytes = maxBytes;
    this.#log = log;
    this.#defaultMode = defaultMode;
  }

  /**
   * Opens (creating) the cache directory. Entries left by an earlier run of a server with
   * the same `--workdir` are kept, oldest first, up to `maxBytes`; temporary files are removed.
   */
  static async open(dir: string, maxBytes: number, log: Logger): Promise<InputCache> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const probe = join(dir, `.probe-${randomBytes(6).toString('hex')}`);
    const handle = await open(probe, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o666);
    const defaultMode = (await handle.stat()).mode & 0o777;
    await handle.close();
    await unlink(probe);
    const cache = new InputCache(dir, maxBytes, log, defaultMode);
    const found: Array<{ sha256: string; size: number; mtimeMs: number }> = [];
    for (const name of await readdir(dir)) {
      const path = join(dir, name);
      if (!HEX64.test(name)) {
        await unlink(path).catch(() => {});
        continue;
      }
      const st = await stat(path).catch(() => undefined);
      if (st?.isFile()) found.push({ sha256: name, size: st.size, mtimeMs: st.mtimeMs });
    }
    found.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const f of found) {
      cache.#entries.set(f.sha256, { size: f.size, pins: 0 });
      cache.#bytes += f.size;
    }
    await cache.#makeRoom(0);
    return cache;
  }

  /** Current counters. */
  stats(): CacheStats {
    return {
      entries: this.#entries.size,
      bytes: this.#bytes,
      maxBytes: this.maxBytes,
      hits: this.#hits,
      misses: this.#misses,
      inserts: this.#inserts,
      rejected: this.#rejected,
      evictions: this.#evictions,
    };
  }

  /** True if `sha256` is cached now (no pin, no wait). */
  has(sha256: string): boolean {
    return this.#entries.has(sha256);
  }

  /**
   * Pins the entry for `sha256` if it is cached with this `size`. If another connection is
   * uploading that content right now, waits for it (at most `waitMs`, and not past
   * `signal`) rather than asking for a second copy.
   */
  async lease(
    sha256: string,
    size: number,
    waitMs: number,
    signal?: AbortSignal,
  ): Promise<CacheLease | undefined> {
    const inflight = this.#inflight.get(sha256);
    if (!this.#entries.has(sha256) && inflight !== undefined && waitMs > 0) {
      await waitBounded(inflight.done, waitMs, signal);
    }
    const entry = this.#entries.get(sha256);
    if (entry === undefined || entry.size !== size) {
      this.#misses++;
      return undefined;
    }
    this.#hits++;
    entry.pins++;
    this.#touch(sha256, entry);
    let released = false;
    return {
      sha256,
      path: this.#path(sha256),
      size: entry.size,
      release: () => {
        if (released) return;
        released = true;
        entry.pins--;
      },
    };
  }

  /**
   * Marks `sha256` as being uploaded by one connection, so others wait for it (see
   * {@link lease}). Returns the function to call when that upload is over, inserted or not,
   * or `undefined` if the content is already cached or already on its way.
   */
  claim(sha256: string): (() => void) | undefined {
    if (this.#entries.has(sha256) || this.#inflight.has(sha256)) return undefined;
    let resolve!: () => void;
    const done = new Promise<void>((r) => {
      resolve = r;
    });
    const settle = () => {
      if (this.#inflight.get(sha256)?.done === done) this.#inflight.delete(sha256);
      resolve();
    };
    this.#inflight.set(sha256, { done, settle });
    return settle;
  }

  /**
   * Copies a leased entry to `dest` through a temporary name beside it (created
   * exclusively, then renamed: a symlink a job planted at `dest` is replaced, never
   * followed). Its permission bits are those a received file would get for `wireMode`
   * (`applicableMode`), or those of a new file here without one.
   */
  async materialize(lease: CacheLease, dest: string, wireMode?: number): Promise<void> {
    const mode =
      wireMode === undefined ? this.#defaultMode : applicableMode(wireMode, this.#defaultMode);
    const tmp = `${dest}.rake-tmp-${uniqueSuffix()}`;
    // FICLONE: a reflink where the file system has them, a plain copy elsewhere.
    const flags = fsc.COPYFILE_EXCL | fsc.COPYFILE_FICLONE;
    try {
      if (lease.size <= SMALL_FILE_BYTES) {
        // Small: synchronous calls, no thread-pool handoffs (see SMALL_FILE_BYTES).
        copyFileSync(lease.path, tmp, flags);
        chmodSync(tmp, mode);
        renameSync(tmp, dest);
      } else {
        await copyFile(lease.path, tmp, flags);
        await chmod(tmp, mode);
        await rename(tmp, dest);
      }
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
  }

  /**
   * Inserts the file at `from` under `sha256` if, and only if, its bytes hash to it. The
   * hash is computed while copying into the cache, so what is cached is exactly what was
   * hashed. Evicts least-recently-used unpinned entries to make room.
   */
  async insert(sha256: string, size: number, from: string): Promise<InsertResult> {
    if (!HEX64.test(sha256)) throw new RangeError(`not a SHA-256: ${sha256}`);
    // One insert of a content at a time; a later one (its claim may be honest where the
    // first one's was not) looks again once the first is done.
    for (
      let running = this.#inserting.get(sha256);
      running;
      running = this.#inserting.get(sha256)
    ) {
      await running.catch(() => {});
    }
    if (this.#entries.has(sha256)) return 'present';
    if (size > this.maxBytes) return this.#reject('no-room', sha256, size);
    const work = this.#insert(sha256, size, from);
    this.#inserting.set(sha256, work);
    try {
      return await work;
    } finally {
      if (this.#inserting.get(sha256) === work) this.#inserting.delete(sha256);
    }
  }

  async #insert(sha256: string, size: number, from: string): Promise<InsertResult> {
    const tmp = join(this.dir, `.${sha256.slice(0, 16)}.tmp-${randomBytes(6).toString('hex')}`);
    try {
      const small = size <= SMALL_FILE_BYTES;
      const actual = small ? copyHashingSync(from, tmp) : await copyHashing(from, tmp);
      if (actual.size !== size || actual.sha256 !== sha256) {
        await unlink(tmp).catch(() => {});
        return this.#reject(actual.size !== size ? 'wrong-size' : 'mismatch', sha256, size);
      }
      if (small) chmodSync(tmp, 0o444);
      else await chmod(tmp, 0o444);
      const unlinking = this.#unlinking.get(sha256);
      if (unlinking) await unlinking;
      // Not in the index yet, so nobody leases it before it is committed below.
      const path = this.#path(sha256);
      if (small) renameSync(tmp, path);
      else await rename(tmp, path);
      // The bound holds for committed entries: make room, then commit in the same tick.
      while (this.#bytes + size > this.maxBytes) {
        if (!(await this.#makeRoom(size))) {
          await unlink(path).catch(() => {});
          return this.#reject('no-room', sha256, size);
        }
      }
      this.#entries.set(sha256, { size, pins: 0 });
      this.#bytes += size;
      this.#inserts++;
      return 'inserted';
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
  }

  #reject(result: InsertResult, sha256: string, size: number): InsertResult {
    this.#rejected++;
    this.#log.warn({ sha256, size, result }, 'cache insert refused');
    return result;
  }

  /**
   * Evicts unpinned entries, oldest first, until `extra` more bytes fit beside what is
   * cached. False if they cannot (everything left is pinned).
   */
  async #makeRoom(extra: number): Promise<boolean> {
    const removals: Promise<void>[] = [];
    for (const [sha256, entry] of this.#entries) {
      if (this.#bytes + extra <= this.maxBytes) break;
      if (entry.pins > 0) continue;
      this.#entries.delete(sha256);
      this.#bytes -= entry.size;
      this.#evictions++;
      const removal = unlink(this.#path(sha256))
        .catch(() => {})
        .finally(() => {
          if (this.#unlinking.get(sha256) === removal) this.#unlinking.delete(sha256);
        });
      this.#unlinking.set(sha256, removal);
      removals.push(removal);
    }
    await Promise.all(removals);
    if (removals.length > 0) this.#log.debug({ evicted: removals.length }, 'cache evicted');
    return removals.length > 0 || this.#bytes + extra <= this.maxBytes;
  }

  #touch(sha256: string, entry: Entry): void {
    this.#entries.delete(sha256);
    this.#entries.set(sha256, entry);
  }

  #path(sha256: string): string {
    return join(this.dir, sha256);
  }
}

/**
 * {@link copyHashing} for a small file: read whole (refusing a symlink), hashed, written to
 * a new file. The size returned is what was read, so a claim of "small" cannot be used to
 * make the server read a big file into memory: the read stops past the bound.
 */
function copyHashingSync(from: string, to: string): { sha256: string; size: number } {
  const input = openSync(from, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  let bytes: Buffer;
  try {
    const buf = Buffer.allocUnsafe(SMALL_FILE_BYTES + 1);
    let n = 0;
    for (let got = 1; got > 0 && n < buf.length; n += got) {
      got = readSync(input, buf, n, buf.length - n, null);
    }
    bytes = buf.subarray(0, n);
  } finally {
    closeSync(input);
  }
  const output = openSync(to, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
  try {
    for (let done = 0; done < bytes.length; ) {
      done += writeSync(output, bytes, done, bytes.length - done);
    }
  } finally {
    closeSync(output);
  }
  return { sha256: createHash('sha256').update(bytes).digest('hex'), size: bytes.length };
}

/** Copies `from` to a new file `to` (exclusive), returning the SHA-256 and size it copied. */
async function copyHashing(from: string, to: string): Promise<{ sha256: string; size: number }> {
  const input = await open(from, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  try {
    const output = await open(to, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
    try {
      const hash = createHash('sha256');
      const buf = Buffer.allocUnsafe(256 * 1024);
      let size = 0;
      for (;;) {
        const { bytesRead } = await input.read(buf, 0, buf.length, null);
        if (bytesRead === 0) break;
        hash.update(buf.subarray(0, bytesRead));
        for (let done = 0; done < bytesRead; ) {
          done += (await output.write(buf, done, bytesRead - done)).bytesWritten;
        }
        size += bytesRead;
      }
      return { sha256: hash.digest('hex'), size };
    } finally {
      await output.close();
    }
  } finally {
    await input.close();
  }
}

function waitBounded(done: Promise<void>, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', finish);
      resolve();
    };
    const timer = setTimeout(finish, ms);
    signal?.addEventListener('abort', finish, { once: true });
    void done.then(finish);
  });
}
