import { createHash, type Hash } from 'node:crypto';
import { createReadStream, type ReadStream } from 'node:fs';
import { copyFile, mkdir, open, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { uniqueSuffix } from '../util/unique.js';
import { digestKey, makeDigest } from './digest.js';
import type { Digest } from './gen/build/bazel/remote/execution/v2/remote_execution_pb.js';

/** What storing a blob did. */
export type PutResult =
  | { readonly ok: true; readonly digest: Digest }
  | {
      readonly ok: false;
      readonly reason: 'mismatch' | 'no-room';
      /** For the peer: what went wrong and what to do. */
      readonly message: string;
    };

/**
 * rakeserver's REAPI content-addressable store: blobs by SHA-256 in files under one
 * directory, bounded to `maxBytes` with least-recently-used eviction. A blob is only ever
 * stored after the server hashed its bytes itself; files are written under a temporary name
 * and renamed into place, so a reader never sees half a blob. Eviction can remove a blob a
 * client checked with FindMissingBlobs before its Execute: Execute then answers
 * FAILED_PRECONDITION naming the missing blobs, and the client uploads them again (the
 * protocol's own remedy).
 */
export class Cas {
  readonly dir: string;
  readonly maxBytes: number;
  readonly #log: Logger;
  /** hash -> size, in least-recently-used order (first is evicted first). */
  readonly #blobs = new Map<string, number>();
  #bytes = 0;

  private constructor(dir: string, maxBytes: number, log: Logger) {
    this.dir = dir;
    this.maxBytes = maxBytes;
    this.#log = log;
  }

  /** A new, empty store in `dir` (made if missing; whatever it held is removed). */
  static async open(dir: string, maxBytes: number, log: Logger): Promise<Cas> {
    await rm(dir, { recursive: true, force: true });
    await mkdir(join(dir, 'tmp'), { recursive: true });
    return new Cas(dir, maxBytes, log);
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Whether the blob is held (the empty blob always is). Counts as a use. */
  has(d: Digest): boolean {
    if (d.sizeBytes === 0n) return true;
    const size = this.#blobs.get(d.hash);
    if (size === undefined || BigInt(size) !== d.sizeBytes) return false;
    this.#touch(d.hash, size);
    return true;
  }

  /** The file holding a blob, or undefined when it is not held. Never write to it. */
  path(d: Digest): string | undefined {
    if (d.sizeBytes === 0n) return undefined;
    return this.has(d) ? this.#path(d.hash) : undefined;
  }

  /** A blob's bytes (whole: for small blobs, Directory and Command messages). */
  async read(d: Digest): Promise<Uint8Array | undefined> {
    if (d.sizeBytes === 0n) return new Uint8Array(0);
    const p = this.path(d);
    if (p === undefined) return undefined;
    try {
      return await readFile(p);
    } catch {
      this.#forget(d.hash);
      return undefined;
    }
  }

  /** A stream of part of a blob, or undefined when it is not held. */
  readStream(d: Digest, offset: number, end: number): ReadStream | undefined {
    const p = this.path(d);
    if (p === undefined) return undefined;
    return createReadStream(p, { start: offset, end: end - 1, highWaterMark: 64 * 1024 });
  }

  /** Copies a blob to `dest` (a new file of the job's own: never a link into the store). */
  async copyOut(d: Digest, dest: string, executable: boolean): Promise<boolean> {
    const mode = executable ? 0o755 : 0o644;
    if (d.sizeBytes === 0n) {
      const fh = await open(dest, 'wx', mode);
      await fh.close();
      return true;
    }
    const p = this.path(d);
    if (p === undefined) return false;
    await copyFile(p, dest);
    const fh = await open(dest, 'r');
    try {
      await fh.chmod(mode);
    } finally {
      await fh.close();
    }
    return true;
  }

  /** Stores `data`, checked against `expect` when given. */
  async put(data: Uint8Array, expect?: Digest): Promise<PutResult> {
    const hash = createHash('sha256').update(data).digest('hex');
    const digest = makeDigest(hash, data.length);
    const bad = mismatch(digest, expect);
    if (bad) return bad;
    if (data.length === 0 || this.has(digest)) return { ok: true, digest };
    const tmp = this.#tmp();
    const fh = await open(tmp, 'wx', 0o444);
    try {
      await fh.writeFile(data);
    } finally {
      await fh.close();
    }
    return this.#admit(tmp, digest);
  }

  /**
   * Stores the file at `path` by moving it in (it must be on the store's file system and
   * be the caller's to give away; a job's output, whose directory is removed next).
   */
  async adoptFile(path: string): Promise<PutResult> {
    const hash = await hashFile(path);
    const size = (await stat(path)).size;
    const digest = makeDigest(hash, size);
    if (size === 0 || this.has(digest)) return { ok: true, digest };
    const tmp = this.#tmp();
    try {
      await rename(path, tmp);
    } catch {
      await copyFile(path, tmp);
    }
    return this.#admit(tmp, digest);
  }

  /** A writer for a streamed upload (ByteStream Write) of the blob `expect`. */
  writer(expect: Digest): BlobWriter {
    return new BlobWriter(this, this.#tmp(), expect);
  }

  /** Takes a finished temporary file whose bytes hash to `digest` into the store. */
  async admit(tmp: string, digest: Digest): Promise<PutResult> {
    return this.#admit(tmp, digest);
  }

  async #admit(tmp: string, digest: Digest): Promise<PutResult> {
    const size = Number(digest.sizeBytes);
    if (this.has(digest)) {
      await unlink(tmp).catch(() => {});
      return { ok: true, digest };
    }
    if (size > this.maxBytes || !(await this.#makeRoom(size))) {
      await unlink(tmp).catch(() => {});
      return {
        ok: false,
        reason: 'no-room',
        message: `blob ${digestKey(digest)} does not fit in the server's store of ${this.maxBytes} bytes; start rakeserver with a larger --cache-size`,
      };
    }
    const dest = this.#path(digest.hash);
    await mkdir(join(dest, '..'), { recursive: true });
    await rename(tmp, dest);
    this.#blobs.set(digest.hash, size);
    this.#bytes += size;
    return { ok: true, digest };
  }

  async #makeRoom(extra: number): Promise<boolean> {
    for (const [hash, size] of this.#blobs) {
      if (this.#bytes + extra <= this.maxBytes) break;
      this.#forget(hash);
      this.#log.debug({ hash, size }, 'evicted');
      await unlink(this.#path(hash)).catch(() => {});
    }
    return this.#bytes + extra <= this.maxBytes;
  }

  #forget(hash: string): void {
    const size = this.#blobs.get(hash);
    if (size === undefined) return;
    this.#blobs.delete(hash);
    this.#bytes -= size;
  }

  #touch(hash: string, size: number): void {
    this.#blobs.delete(hash);
    this.#blobs.set(hash, size);
  }

  #path(hash: string): string {
    return join(this.dir, hash.slice(0, 2), hash);
  }

  #tmp(): string {
    return join(this.dir, 'tmp', `blob-${uniqueSuffix()}`);
  }
}

/** A blob being received in order; `finish` checks it and stores it. */
export class BlobWriter {
  readonly #cas: Cas;
  readonly tmp: string;
  readonly expect: Digest;
  readonly #hash: Hash = createHash('sha256');
  #fh: Awaited<ReturnType<typeof open>> | undefined;
  /** Bytes received so far (ByteStream's committed size). */
  written = 0;

  constructor(cas: Cas, tmp: string, expect: Digest) {
    this.#cas = cas;
    this.tmp = tmp;
    this.expect = expect;
  }

  /** Appends a chunk. */
  async write(chunk: Uint8Array): Promise<void> {
    this.#fh ??= await open(this.tmp, 'wx', 0o444);
    this.#hash.update(chunk);
    await this.#fh.write(chunk);
    this.written += chunk.length;
  }

  /** Checks the bytes against the expected digest and stores them. */
  async finish(): Promise<PutResult> {
    this.#fh ??= await open(this.tmp, 'wx', 0o444);
    await this.#fh.close();
    const digest = makeDigest(this.#hash.digest('hex'), this.written);
    const bad = mismatch(digest, this.expect);
    if (bad) {
      await unlink(this.tmp).catch(() => {});
      return bad;
    }
    return this.#cas.admit(this.tmp, digest);
  }

  /** Drops what was received (the stream broke). */
  async abort(): Promise<void> {
    await this.#fh?.close().catch(() => {});
    await unlink(this.tmp).catch(() => {});
  }
}

function mismatch(got: Digest, expect: Digest | undefined): PutResult | undefined {
  if (expect === undefined) return undefined;
  if (got.hash === expect.hash && got.sizeBytes === expect.sizeBytes) return undefined;
  return {
    ok: false,
    reason: 'mismatch',
    message: `the bytes sent for ${digestKey(expect)} are ${digestKey(got)}: resend the blob`,
  };
}

/** SHA-256 of a file, streamed. */
export async function hashFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 256 * 1024 })) {
    hash.update(chunk as Buffer);
  }
  return hash.digest('hex');
}
