import type { Readable, Writable } from 'node:stream';
import { ProtocolError, showBytes } from './errors.js';
import {
  decodeHeader,
  decodeRequest,
  HEADER_SIZE,
  type Header,
  REQUEST_SIZE,
  type Request,
} from './header.js';
import type { ProtocolLimits } from './limits.js';

const SPACE = 0x20;
const BANG = 0x21;
/** Second bytes of the headers this protocol knows: `!E !C !R !D !F !X !S`. */
const HEADER_LETTERS = new Set([...'ECRDFXS'].map((c) => c.charCodeAt(0)));

/** A bound on one read (the server's message deadline, docs/server.md). */
export interface ReadDeadline {
  /**
   * The read fails with `too-slow` unless done this many ms after it starts (for a header:
   * after its first byte). Bytes that trickle in do not extend it.
   */
  readonly deadlineMs?: number | undefined;
}

/** Tuning for {@link FramedReader}. */
export interface FramedReaderOptions {
  /** Pause the source once this many unread bytes are queued (default 256 KiB). */
  readonly highWaterMark?: number;
}

/**
 * The one framed reader over a socket, used by client and server alike. It keeps a queue of
 * received chunks and hands out exact byte counts, headers and requests; `pipeExact` streams
 * a large payload straight into a writable with backpressure on both sides, so a file is
 * never held in memory. Reads are sequential: one call at a time.
 *
 * End of stream while bytes are due is a `short-read` {@link ProtocolError} saying how many
 * bytes were expected and how many arrived; a socket error is `socket-error`.
 */
export class FramedReader {
  readonly #source: Readable;
  readonly #highWaterMark: number;
  readonly #chunks: Buffer[] = [];
  #buffered = 0;
  #bytesRead = 0;
  #ended = false;
  #error: Error | undefined;
  #pausedByUs = false;
  #wake: (() => void) | undefined;
  #busy = false;
  /** While set, the read in progress must be over by `at` (performance.now() ms). */
  #deadline: { readonly at: number; readonly ms: number; readonly what: string } | undefined;

  constructor(source: Readable, options: FramedReaderOptions = {}) {
    this.#source = source;
    this.#highWaterMark = options.highWaterMark ?? 256 * 1024;
    source.on('data', this.#onData);
    source.on('end', this.#onEnd);
    source.on('close', this.#onEnd);
    source.on('error', this.#onError);
  }

  /** Bytes consumed so far by reads (including skipped padding), not merely received. */
  get bytesRead(): number {
    return this.#bytesRead;
  }

  /** Bytes received but not yet consumed. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Up to `n` of the bytes received and not yet consumed, leaving them queued. */
  peek(n: number): Buffer {
    const first = this.#chunks[0];
    if (first === undefined) return Buffer.alloc(0);
    if (first.length >= n || this.#chunks.length === 1) return first.subarray(0, n);
    const parts: Buffer[] = [];
    let have = 0;
    for (const chunk of this.#chunks) {
      if (have >= n) break;
      parts.push(chunk.subarray(0, n - have));
      have += parts[parts.length - 1]?.length ?? 0;
    }
    return Buffer.concat(parts);
  }

  /** True once the source has ended and every queued byte has been consumed. */
  get exhausted(): boolean {
    return this.#ended && this.#buffered === 0;
  }

  /** Stops listening to the source. Queued bytes are dropped. */
  dispose(): void {
    this.#source.off('data', this.#onData);
    this.#source.off('end', this.#onEnd);
    this.#source.off('close', this.#onEnd);
    this.#source.off('error', this.#onError);
    this.#chunks.length = 0;
    this.#buffered = 0;
    this.#ended = true;
    this.#notify();
  }

  /** Reads exactly `n` bytes. `what` names them in a short-read error. */
  readExact(n: number, what = 'bytes'): Promise<Buffer> {
    if (!this.#busy && this.#buffered >= n) return Promise.resolve(this.#takeExact(n));
    return this.#exclusive(() => this.#readExact(n, what));
  }

  /**
   * Reads a payload of `length` bytes after checking it against `max`: a `limit-exceeded`
   * error naming `what` before any byte is read.
   */
  readPayload(
    length: number,
    max: number,
    what: string,
    options: ReadDeadline = {},
  ): Promise<Buffer> {
    if (length > max) {
      return Promise.reject(
        new ProtocolError('limit-exceeded', `${what} of at most ${max} bytes`, `${length} bytes`),
      );
    }
    // Already here (a message's payload arrives with its header): no deadline to keep.
    if (!this.#busy && this.#buffered >= length) return Promise.resolve(this.#takeExact(length));
    return this.#exclusive(() =>
      this.#within(options.deadlineMs, what, () => this.#readExact(length, what)),
    );
  }

  /** Skips leading spaces (a padding peer), then reads and decodes a 64-byte header. */
  readHeader(limits?: Partial<ProtocolLimits>): Promise<Header> {
    if (this.#busy) return Promise.reject(this.#inProgress());
    // A header that is here whole is decoded at once; otherwise each arrival of bytes is
    // looked at until it is (one await per arrival, not one per step of the reading).
    let now: Header | undefined;
    try {
      now = this.#headerNow(limits);
    } catch (err) {
      return Promise.reject(err);
    }
    if (now !== undefined) return Promise.resolve(now);
    return this.#exclusive(async () => {
      for (;;) {
        await this.#wait();
        const h = this.#headerNow(limits);
        if (h !== undefined) return h;
      }
    });
  }

  /**
   * The next header, when its bytes are here: leading spaces skipped (they stay skipped),
   * its first two bytes checked as soon as they are here (`#checkHeaderStart`), then its 64
   * bytes decoded. `undefined`: more bytes are due. At the end of the stream, the short read.
   */
  #headerNow(limits: Partial<ProtocolLimits> | undefined): Header | undefined {
    for (;;) {
      const first = this.#chunks[0];
      if (first === undefined) break;
      let i = 0;
      while (i < first.length && first[i] === SPACE) i++;
      if (i > 0) this.#take(i);
      if (i < first.length) break;
    }
    const first = this.#chunks[0];
    if (first !== undefined) {
      if (first[0] !== BANG) throw this.#notAHeader();
      const second = first.length >= 2 ? first[1] : this.#chunks[1]?.[0];
      if (second !== undefined && !HEADER_LETTERS.has(second)) throw this.#notAHeader();
    }
    if (this.#buffered >= HEADER_SIZE) return decodeHeader(this.#takeExact(HEADER_SIZE), limits);
    if (!this.#ended) return undefined;
    const got = this.#buffered;
    while (this.#buffered > 0) this.#take(this.#buffered);
    throw this.#shortRead('header bytes', HEADER_SIZE, got);
  }

  /**
   * Like {@link readHeader}, but a stream that ends cleanly before the first byte of a header
   * (only padding, or nothing) gives `null` instead of a short-read error.
   */
  readHeaderOrEnd(
    limits?: Partial<ProtocolLimits>,
    options: ReadDeadline = {},
  ): Promise<Header | null> {
    return this.#exclusive(async () => {
      // Silence before a header is the idle timeout's business; from its first byte (a
      // padding space included) the header has `deadlineMs`, however the bytes trickle.
      while (this.#buffered === 0 && !this.#ended) await this.#wait();
      return this.#within(options.deadlineMs, 'a header', async () => {
        await this.#skipSpaces();
        if (this.#buffered === 0 && this.#ended) {
          if (this.#error) throw this.#socketError();
          return null;
        }
        await this.#checkHeaderStart();
        return decodeHeader(await this.#readExact(HEADER_SIZE, 'header bytes'), limits);
      });
    });
  }

  /**
   * Skips leading spaces, then reads a 2-byte filestream request (`!N`, `!Z`, `!T`). With
   * `expected`, any other request is an `unexpected-code` error.
   */
  readRequest(expected?: Request): Promise<Request> {
    return this.#exclusive(async () => {
      await this.#skipSpaces();
      const what = expected ? `bytes of request ${expected}` : 'bytes of a request';
      const bytes = await this.#readExact(REQUEST_SIZE, what);
      if (bytes[0] === 0x21 && bytes[1] === 0x46) throw await this.#refusal(bytes, expected);
      return decodeRequest(bytes, expected);
    });
  }

  /**
   * Streams exactly `n` bytes into `writable`, honouring its backpressure (the source is
   * paused while the writable is full). Does not end the writable; resolves once every
   * byte has been handed to it.
   */
  pipeExact(n: number, writable: Writable, what = 'bytes'): Promise<void> {
    return this.#exclusive(async () => {
      let failure: Error | undefined;
      const onError = (err: Error) => {
        failure ??= err;
        this.#notify();
      };
      writable.on('error', onError);
      try {
        let remaining = n;
        while (remaining > 0) {
          if (failure) throw failure;
          if (this.#buffered === 0) {
            if (this.#ended) throw this.#shortRead(what, n, n - remaining);
            await this.#wait();
            continue;
          }
          const piece = this.#take(remaining);
          remaining -= piece.length;
          if (!writable.write(piece)) await this.#drain(writable, () => failure);
        }
        if (failure) throw failure;
      } finally {
        writable.off('error', onError);
      }
    });
  }

  /** Reads and drops exactly `n` bytes without holding them. */
  discardExact(n: number, what = 'bytes'): Promise<void> {
    return this.#exclusive(async () => {
      let remaining = n;
      while (remaining > 0) {
        if (this.#buffered === 0) {
          if (this.#ended) throw this.#shortRead(what, n, n - remaining);
          await this.#wait();
          continue;
        }
        remaining -= this.#take(remaining).length;
      }
    });
  }

  /** Runs `op` with a deadline `ms` from now (none when `ms` is undefined). */
  async #within<T>(ms: number | undefined, what: string, op: () => Promise<T>): Promise<T> {
    if (ms === undefined) return op();
    this.#deadline = { at: performance.now() + ms, ms, what };
    try {
      return await op();
    } finally {
      this.#deadline = undefined;
    }
  }

  #inProgress(): Error {
    return new Error('FramedReader: a read is already in progress');
  }

  async #exclusive<T>(op: () => Promise<T>): Promise<T> {
    if (this.#busy) throw this.#inProgress();
    this.#busy = true;
    try {
      return await op();
    } finally {
      this.#busy = false;
    }
  }

  /** The peer sent `!F` where a request was due: read its message for the error. */
  async #refusal(code: Buffer, expected: Request | undefined): Promise<ProtocolError> {
    const rest = await this.#readExact(HEADER_SIZE - REQUEST_SIZE, 'header bytes');
    const h = decodeHeader(Buffer.concat([code, rest]));
    const message = await this.#readExact(Math.min(h.length, 64 * 1024), 'refusal message');
    const want = expected ? `request ${expected}` : 'a request';
    return new ProtocolError('refused', want, `!F: ${message.toString('utf8').trim()}`);
  }

  /**
   * Refuses at once a header whose first bytes cannot start one (`\x00`, `{`, `GET`: another
   * protocol, or garbage) instead of waiting for all 64 of them, which such a peer may never
   * send. Waits for at most 2 bytes; an end of stream is left to the read that follows.
   */
  async #checkHeaderStart(): Promise<void> {
    for (;;) {
      const head = this.peek(2);
      if (head.length >= 1 && head[0] !== BANG) throw this.#notAHeader();
      if (head.length >= 2) {
        if (!HEADER_LETTERS.has(head[1] as number)) throw this.#notAHeader();
        return;
      }
      if (this.#ended) return;
      await this.#wait();
    }
  }

  #notAHeader(): ProtocolError {
    return new ProtocolError(
      'unknown-code',
      'a header starting with !E, !C, !R, !D, !F, !X or !S',
      `${showBytes(this.peek(16))}, which cannot start one (another protocol?)`,
    );
  }

  /** Exactly `n` bytes of those here (at least `n` are). */
  #takeExact(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.#chunks[0] as Buffer;
    if (first.length >= n) return this.#take(n);
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const piece = this.#take(n - filled);
      piece.copy(out, filled);
      filled += piece.length;
    }
    return out;
  }

  async #readExact(n: number, what: string): Promise<Buffer> {
    if (n === 0) return Buffer.alloc(0);
    const first = this.#chunks[0];
    if (first && first.length >= n) return this.#take(n);
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      if (this.#buffered === 0) {
        if (this.#ended) throw this.#shortRead(what, n, filled);
        await this.#wait();
        continue;
      }
      const piece = this.#take(n - filled);
      piece.copy(out, filled);
      filled += piece.length;
    }
    return out;
  }

  async #skipSpaces(): Promise<void> {
    for (;;) {
      const first = this.#chunks[0];
      if (!first) {
        if (this.#ended) return;
        await this.#wait();
        continue;
      }
      let i = 0;
      while (i < first.length && first[i] === SPACE) i++;
      if (i > 0) this.#take(i);
      if (i < first.length) return;
    }
  }

  /** Removes up to `max` bytes from the front of the first chunk, without copying. */
  #take(max: number): Buffer {
    const first = this.#chunks[0] as Buffer;
    let piece: Buffer;
    if (first.length <= max) {
      piece = first;
      this.#chunks.shift();
    } else {
      piece = first.subarray(0, max);
      this.#chunks[0] = first.subarray(max);
    }
    this.#buffered -= piece.length;
    this.#bytesRead += piece.length;
    if (this.#pausedByUs && this.#buffered < this.#highWaterMark / 2) {
      this.#pausedByUs = false;
      this.#source.resume();
    }
    return piece;
  }

  #wait(): Promise<void> {
    if (this.#pausedByUs) {
      this.#pausedByUs = false;
      this.#source.resume();
    }
    const deadline = this.#deadline;
    if (deadline === undefined) {
      return new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
    const left = deadline.at - performance.now();
    if (left <= 0) return Promise.reject(this.#tooSlow(deadline));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#wake = undefined;
        reject(this.#tooSlow(deadline));
      }, left);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  #tooSlow(deadline: { readonly ms: number; readonly what: string }): ProtocolError {
    return new ProtocolError(
      'too-slow',
      `${deadline.what} complete within ${deadline.ms / 1000} s of its first byte`,
      `${this.#buffered} bytes of it by then`,
    );
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  #drain(writable: Writable, failed: () => Error | undefined): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        writable.off('drain', done);
        writable.off('close', done);
        writable.off('error', done);
        resolve();
      };
      if (failed() || writable.destroyed) return resolve();
      writable.on('drain', done);
      writable.on('close', done);
      writable.on('error', done);
    }).then(() => {
      const err = failed();
      if (err) throw err;
      if (writable.destroyed && !writable.writableFinished) {
        throw new Error('destination closed before all bytes were written');
      }
    });
  }

  #shortRead(what: string, expected: number, got: number): ProtocolError {
    if (this.#error) return this.#socketError();
    return new ProtocolError(
      'short-read',
      `${expected} ${what}`,
      `${got} bytes, then the end of the stream`,
    );
  }

  #socketError(): ProtocolError {
    const err = this.#error as Error & { code?: string };
    return new ProtocolError('socket-error', 'an open connection', err.code ?? err.message, {
      cause: err,
    });
  }

  readonly #onData = (chunk: Buffer | string): void => {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk;
    if (buf.length === 0) return;
    this.#chunks.push(buf);
    this.#buffered += buf.length;
    if (this.#buffered >= this.#highWaterMark && !this.#pausedByUs) {
      this.#pausedByUs = true;
      this.#source.pause();
    }
    this.#notify();
  };

  readonly #onEnd = (): void => {
    this.#ended = true;
    this.#notify();
  };

  readonly #onError = (err: Error): void => {
    this.#error ??= err;
    this.#ended = true;
    this.#notify();
  };
}
