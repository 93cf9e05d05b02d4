/**
 * An action's stdout as the client holds it between the reply and the terminal: byte for
 * byte (never decoded and re-encoded: binary output passes unchanged), in memory when small,
 * in a spool file when large. Sixteen actions printing 60 MB each would otherwise hold
 * almost a gigabyte until stdout took it (issue 17, defect 5).
 */
import {
  closeSync,
  createWriteStream,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  unlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import type { FramedReader } from '../protocol/reader.js';

/** Outputs up to this size are kept in memory (while the memory budget allows). */
export const SPOOL_THRESHOLD_BYTES = 1024 * 1024;

/**
 * At most this many bytes of outputs not yet released are kept in memory; beyond it, even
 * small outputs are spooled (a slow stdout and a thousand 1 MiB outputs stay bounded).
 */
export const MEMORY_BUDGET_BYTES = 32 * 1024 * 1024;

/**
 * One action's stdout. Read it with {@link ActionOutput.buffer} or {@link ActionOutput.text}
 * (a spooled one is read from its file), or stream it with {@link ActionOutput.open}. A
 * spooled output's file lives until {@link ActionOutput.release} or the end of the run, so
 * open it while handling the `output` event if it is written out later.
 */
export class ActionOutput {
  /** Its size in bytes. */
  readonly size: number;
  readonly #bytes: Buffer | undefined;
  readonly #file: string | undefined;
  readonly #onRelease: (() => void) | undefined;
  #released = false;

  private constructor(
    size: number,
    bytes: Buffer | undefined,
    file: string | undefined,
    onRelease?: () => void,
  ) {
    this.size = size;
    this.#bytes = bytes;
    this.#file = file;
    this.#onRelease = onRelease;
  }

  /** An output held in memory (tests, scripted transports, small replies). */
  static of(data: string | Uint8Array, onRelease?: () => void): ActionOutput {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
    return new ActionOutput(bytes.length, bytes, undefined, onRelease);
  }

  /** An output spooled to `file` (`size` bytes). */
  static spooled(file: string, size: number, onRelease?: () => void): ActionOutput {
    return new ActionOutput(size, undefined, file, onRelease);
  }

  /** The spool file, when it is spooled. */
  get file(): string | undefined {
    return this.#file;
  }

  /** Every byte, in memory (reads a spooled output's file whole). */
  buffer(): Buffer {
    if (this.#bytes !== undefined) return this.#bytes;
    const fd = openSync(this.#file as string, 'r');
    try {
      const buf = Buffer.allocUnsafe(this.size);
      for (let done = 0; done < this.size; ) {
        const n = readSync(fd, buf, done, this.size - done, done);
        if (n === 0) throw new Error(`${this.#file}: spooled output shorter than ${this.size} B`);
        done += n;
      }
      return buf;
    } finally {
      closeSync(fd);
    }
  }

  /** The output decoded as UTF-8 (invalid bytes become U+FFFD: use `buffer()` for bytes). */
  text(): string {
    return this.buffer().toString('utf8');
  }

  /**
   * A source of its bytes that survives the spool file's removal: the file is opened now,
   * synchronously, and read through the descriptor later. Close it when done.
   */
  open(): OutputSource {
    if (this.#bytes !== undefined) return { size: this.size, bytes: this.#bytes, close: () => {} };
    const fd = openSync(this.#file as string, 'r');
    let closed = false;
    return {
      size: this.size,
      fd,
      close: () => {
        if (closed) return;
        closed = true;
        closeSync(fd);
      },
    };
  }

  /** Frees its memory budget and removes its spool file; later reads fail. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    if (this.#file !== undefined) rmSync(this.#file, { force: true });
    this.#onRelease?.();
  }

  /** In JSON (logs, traces): its size only. */
  toJSON(): { size: number } {
    return { size: this.size };
  }

  /** The text, so `${e.stdout}` reads as it did when it was a string. */
  toString(): string {
    return this.text();
  }
}

/** An opened {@link ActionOutput}: its bytes in memory, or a descriptor to read them from. */
export interface OutputSource {
  readonly size: number;
  readonly bytes?: Buffer;
  readonly fd?: number;
  close(): void;
}

/**
 * Where one run's outputs are spooled: a directory of its own under the system's temporary
 * directory, made on the first large output and removed by {@link OutputSpool.close} (the
 * run's end). Keeps the count of bytes held in memory by outputs not yet released.
 */
export class OutputSpool {
  readonly #parent: string;
  readonly #threshold: number;
  readonly #budget: number;
  #dir: string | undefined;
  #next = 0;
  #inMemory = 0;

  constructor(options: { dir?: string; thresholdBytes?: number; memoryBudgetBytes?: number } = {}) {
    this.#parent = options.dir ?? tmpdir();
    this.#threshold = options.thresholdBytes ?? SPOOL_THRESHOLD_BYTES;
    this.#budget = options.memoryBudgetBytes ?? MEMORY_BUDGET_BYTES;
  }

  /** Bytes now held in memory by outputs not yet released. */
  get inMemory(): number {
    return this.#inMemory;
  }

  /**
   * Reads a payload of `length` bytes (an action's stdout) from `reader`: into memory when
   * it is small and the budget allows, else straight into a spool file (never whole in
   * memory). A failed read leaves no file.
   */
  async receive(reader: FramedReader, length: number, what: string): Promise<ActionOutput> {
    if (length <= this.#threshold && this.#inMemory + length <= this.#budget) {
      const bytes = await reader.readExact(length, what);
      this.#inMemory += length;
      let freed = false;
      return ActionOutput.of(bytes, () => {
        if (freed) return;
        freed = true;
        this.#inMemory -= length;
      });
    }
    const file = join(this.#directory(), `${this.#next++}.out`);
    const out = createWriteStream(file, { flags: 'wx', mode: 0o600 });
    out.on('error', () => {});
    try {
      await reader.pipeExact(length, out, what);
      out.end();
      await finished(out);
    } catch (err) {
      out.destroy();
      try {
        unlinkSync(file);
      } catch {
        // Not created.
      }
      throw err;
    }
    return ActionOutput.spooled(file, length);
  }

  /** Removes the spool directory and every file left in it. */
  close(): void {
    if (this.#dir !== undefined) rmSync(this.#dir, { recursive: true, force: true });
    this.#dir = undefined;
    process.off('exit', this.#atExit);
  }

  #directory(): string {
    if (this.#dir === undefined) {
      this.#dir = mkdtempSync(join(this.#parent, 'rake-ts-stdout-'));
      // A spool nobody closes (a transport made without one) still goes with the process.
      process.once('exit', this.#atExit);
    }
    return this.#dir;
  }

  readonly #atExit = (): void => {
    if (this.#dir !== undefined) rmSync(this.#dir, { recursive: true, force: true });
  };
}
