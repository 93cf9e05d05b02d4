/**
 * The CLI's stdout: action output and the summary, written in order, one block at a time,
 * with backpressure (a slow reader slows the writing, never the memory: large outputs wait
 * in spool files, see src/client/output.ts). Off a terminal, stdout carries exactly the
 * bytes the actions wrote; on a terminal, a block that does not end its line gets a newline
 * so the next one (or the status lines) starts on a fresh line. A reader that goes away
 * (EPIPE: `rake-ts | head`) stops the writing quietly, as it stops other command-line tools.
 */
import { readSync } from 'node:fs';
import { Writable } from 'node:stream';
import { ActionOutput, type OutputSource } from '../client/output.js';

/** How much of a spooled output is read at a time. */
const CHUNK_BYTES = 256 * 1024;

/** Why stdout stopped taking bytes. */
export interface StdoutFailure {
  /** `EPIPE`: the reader went away (stop quietly); anything else is worth a message. */
  readonly code: string | undefined;
  readonly message: string;
}

/**
 * A Writable (object mode) in front of the real stdout: write strings or Buffers (the
 * summary) and {@link ActionOutput}s (an action's stdout, released once written; its spool
 * must outlive the writing: the CLI closes it after this stream finishes). `end()` it and
 * await `finished()` before exiting: it does not end the stream it writes to.
 */
export class StdoutWriter extends Writable {
  readonly #target: Writable;
  readonly #terminal: boolean;
  readonly #onFailure: (failure: StdoutFailure) => void;
  #failure: StdoutFailure | undefined;

  constructor(target: Writable, options: { onFailure?: (failure: StdoutFailure) => void } = {}) {
    super({ objectMode: true, highWaterMark: 64 });
    this.#target = target;
    this.#terminal = (target as { isTTY?: boolean }).isTTY === true;
    this.#onFailure = options.onFailure ?? (() => {});
    // Without a listener, a write error (EPIPE, ENOBUFS) on stdout is an uncaught exception.
    target.on('error', this.#fail);
  }

  /** Whether the stream it writes to is a terminal. */
  get isTTY(): boolean {
    return this.#terminal;
  }

  /** Why stdout stopped taking bytes, if it did. */
  get failure(): StdoutFailure | undefined {
    return this.#failure;
  }

  override _write(item: unknown, _encoding: BufferEncoding, callback: (err?: Error) => void): void {
    this.#writeItem(item).then(
      () => callback(),
      () => callback(),
    );
  }

  override _final(callback: (err?: Error) => void): void {
    this.#target.off('error', this.#fail);
    callback();
  }

  async #writeItem(item: unknown): Promise<void> {
    if (item instanceof ActionOutput) {
      try {
        if (this.#failure === undefined) {
          const source = item.open();
          try {
            await this.#writeBlock(source);
          } finally {
            source.close();
          }
        }
      } finally {
        item.release();
      }
      return;
    }
    if (this.#failure !== undefined) return;
    await this.#put(typeof item === 'string' ? Buffer.from(item, 'utf8') : (item as Buffer));
  }

  async #writeBlock(source: OutputSource): Promise<void> {
    let last = -1;
    if (source.bytes !== undefined) {
      if (source.size > 0) last = source.bytes[source.size - 1] as number;
      await this.#put(source.bytes);
    } else if (source.fd !== undefined) {
      for (let done = 0; done < source.size && this.#failure === undefined; ) {
        const buf = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, source.size - done));
        const n = readSync(source.fd, buf, 0, buf.length, done);
        if (n === 0) break;
        done += n;
        last = buf[n - 1] as number;
        await this.#put(n === buf.length ? buf : buf.subarray(0, n));
      }
    }
    // On a terminal, a block ends its line; elsewhere the bytes stay exactly as written.
    if (this.#terminal && last !== -1 && last !== 0x0a) await this.#put(Buffer.from('\n'));
  }

  /** Writes to the real stdout, waiting while it is full; resolves early once it failed. */
  #put(buf: Buffer): Promise<void> {
    if (this.#failure !== undefined || buf.length === 0) return Promise.resolve();
    if (this.#target.write(buf)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.#target.off('drain', done);
        this.#target.off('error', done);
        this.#target.off('close', done);
        resolve();
      };
      this.#target.on('drain', done);
      this.#target.on('error', done);
      this.#target.on('close', done);
    });
  }

  readonly #fail = (err: NodeJS.ErrnoException): void => {
    if (this.#failure !== undefined) return;
    this.#failure = { code: err.code, message: err.message };
    this.#onFailure(this.#failure);
  };
}
