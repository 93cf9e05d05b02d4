import {
  closeSync,
  createReadStream,
  createWriteStream,
  fchmodSync,
  constants as fsc,
  fstatSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { uniqueSuffix } from '../util/unique.js';
import { ProtocolError } from './errors.js';
import {
  encodeHeader,
  encodePacket,
  encodeRequest,
  expectFlagged,
  FLAGS,
  type Header,
  parseDecimal,
} from './header.js';
import { MAX_DECIMAL_PAYLOAD, type ProtocolLimits, withDefaults } from './limits.js';
import { applicableMode, formatMode, parseMode } from './modes.js';
import type { FramedReader } from './reader.js';
import { drained, write } from './socket-writes.js';

/** A file offered by a filestream sender: the name on the wire and where it is on disk. */
export interface OutgoingFile {
  /** Relative name sent to the peer, `/`-separated. */
  readonly name: string;
  /** Local path to read from. */
  readonly path: string;
}

/** One file that crossed the wire, as the sender or the receiver saw it. */
export interface TransferredFile {
  readonly name: string;
  readonly path: string;
  readonly size: number;
  /** Permission bits: sent (sender) or applied (receiver); only with the `mode` extension. */
  readonly mode?: number;
  /**
   * Receiver with `stage`: the temporary file beside `path` that holds the bytes; the caller
   * renames it into place (or removes it).
   */
  readonly staged?: string;
}

/** Options for {@link sendFilestream}. */
export interface SendOptions {
  /**
   * Open files with `O_NOFOLLOW` and send regular files only. The server sets this for
   * output files; a client sending its own requirements may follow symlinks.
   */
  readonly noFollow?: boolean;
  /** Read-ahead per file, in bytes (default 256 KiB). */
  readonly chunkSize?: number;
  /**
   * Extension `mode` negotiated: after `!Z`, answer the receiver's `!M` with the file's
   * permission bits (`!S!MF<len>` + octal). Never on a base-mode connection.
   */
  readonly modes?: boolean;
  /**
   * Extension `push` negotiated: send every file's name, size (mode) and bytes right behind
   * the announcement, without waiting for the receiver's `!N`, `!Z` (`!M`), `!T`. Small
   * files go out in one system call with whatever the caller writes in the same tick.
   * Never on a base-mode connection.
   */
  readonly push?: boolean;
}

/** Options for {@link receiveFilestream}. */
export interface ReceiveOptions {
  /**
   * Maps a wire name to the local path to write, or throws (a `bad-name` ProtocolError) to
   * refuse it. Usually `(name) => prepareInside(dir, name)`.
   */
  readonly resolve: (wireName: string) => string | Promise<string>;
  readonly limits?: Partial<ProtocolLimits>;
  /**
   * Extension `mode` negotiated: ask each file's mode with `!M` after `!Z` and apply it
   * (see `applicableMode` in modes.ts). Never on a base-mode connection.
   */
  readonly modes?: boolean;
  /**
   * Ask for the next file's `!N`, `!Z` (and `!M`) together with this file's `!T`, so a
   * filestream costs one round trip per file instead of three or four. Default: on with
   * `modes`, that is on connections that negotiated our extensions, whose sender reads
   * requests through a buffer (`FramedReader`); a base-mode peer gets one request at a time.
   * Each `!T` still waits until its file's name and size are checked, so a refusal lands
   * where the sender expects `!T`, as it would in lockstep.
   */
  readonly pipeline?: boolean;
  /**
   * Extension `push` negotiated: the sender sends everything unasked, so no request is
   * written at all. A refused name or size is still an error here, but the sender's bytes
   * may already be on their way: the caller must answer `!F` and drain, not resync.
   */
  readonly push?: boolean;
  /**
   * Leave every file under its temporary name (`staged`) for the caller to rename, so a
   * filestream lands all together or not at all. A failed filestream removes the files it
   * staged before it throws.
   */
  readonly stage?: boolean;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Files up to this size are read and written whole with synchronous calls (tens of
 * microseconds on the event loop); larger ones stream through the thread pool with
 * backpressure. On a small VM each thread-pool call costs two thread handoffs, which made
 * the fs calls of a compile job a large share of its overhead (docs/benchmarks.md).
 */
export const SMALL_FILE_BYTES = 256 * 1024;

/**
 * Sends `files` as a filestream: announces `!SSIF<count>`, then answers the receiver's
 * `!N`, `!Z`, `!T` for each file in order (with `push`, sends the same packets unasked). File bytes are streamed from disk into the socket
 * with backpressure. The size sent at `!Z` is the size of the file opened at that moment;
 * a file that shrinks before `!T` is finished is an error (the peer cannot be resynced).
 */
export async function sendFilestream(
  socket: Writable,
  reader: FramedReader,
  files: readonly OutgoingFile[],
  options: SendOptions = {},
): Promise<TransferredFile[]> {
  const sent: TransferredFile[] = [];
  await write(
    socket,
    encodeHeader({ kind: 'flagged', flags: FLAGS.announce, length: files.length }),
  );
  for (const file of files) {
    if (!options.push) await expectRequest(reader, '!N');
    await write(socket, encodePacket({ flags: FLAGS.name }, file.name));
    if (!options.push) await expectRequest(reader, '!Z');
    const flags = fsc.O_RDONLY | (options.noFollow ? fsc.O_NOFOLLOW : 0);
    // Opened, checked and (when small) read synchronously: a few microseconds each, where
    // the thread pool would cost two thread handoffs per call (see SMALL_FILE_BYTES).
    const fd = openSync(file.path, flags);
    let streamed = false; // streamFile's read stream closes fd itself
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new Error(`${file.path} is not a regular file`);
      const size = st.size;
      const bytes = size <= SMALL_FILE_BYTES ? readWhole(fd, size, file.path) : undefined;
      await write(socket, encodePacket({ flags: FLAGS.size }, String(size)));
      let mode: number | undefined;
      if (options.modes) {
        mode = st.mode & 0o777;
        if (!options.push) await expectRequest(reader, '!M');
        await write(socket, encodePacket({ flags: FLAGS.mode }, formatMode(mode)));
      }
      if (!options.push) await expectRequest(reader, '!T');
      if (bytes !== undefined) {
        if (size > 0) await write(socket, bytes);
      } else {
        streamed = true;
        await streamFile(fd, size, socket, options.chunkSize ?? 256 * 1024, file.path);
      }
      sent.push({
        name: file.name,
        path: file.path,
        size,
        ...(mode === undefined ? {} : { mode }),
      });
    } finally {
      if (!streamed) closeSync(fd);
    }
  }
  return sent;
}

/**
 * Receives a filestream: reads the `!SSIF<count>` announcement, then pulls each file with
 * `!N`, `!Z`, `!T` (with `push`, reads them as the sender sends them unasked). Each file is streamed to a temporary name beside its destination and
 * renamed into place, so a partial file never appears under the real name.
 */
export async function receiveFilestream(
  reader: FramedReader,
  socket: Writable,
  options: ReceiveOptions,
): Promise<TransferredFile[]> {
  const limits = withDefaults(options.limits);
  const announce = expectFlagged(await readHeader(reader, limits), FLAGS.announce);
  const count = announce.length;
  if (count > limits.maxFiles) {
    throw new ProtocolError(
      'limit-exceeded',
      `at most ${limits.maxFiles} files in a filestream`,
      `${count} files announced`,
    );
  }
  const received: TransferredFile[] = [];
  const push = options.push === true;
  const pipeline = !push && (options.pipeline ?? options.modes === true);
  const lockstep = !push && !pipeline;
  const questions = Buffer.from(options.modes ? '!N!Z!M' : '!N!Z', 'latin1');
  if (pipeline && count > 0) await write(socket, questions);
  try {
    await receiveEach();
  } catch (err) {
    for (const f of received) if (f.staged !== undefined) rmSync(f.staged, { force: true });
    throw err;
  }
  return received;

  async function receiveEach(): Promise<void> {
    for (let i = 0; i < count; i++) {
      if (lockstep) await write(socket, encodeRequest('!N'));
      const nameHeader = expectFlagged(await readHeader(reader, limits), FLAGS.name);
      const nameBytes = await reader.readPayload(
        nameHeader.length,
        limits.maxNameBytes,
        'file name',
      );
      let name: string;
      try {
        name = utf8.decode(nameBytes);
      } catch (err) {
        throw new ProtocolError('bad-name', 'a UTF-8 file name', 'bytes that are not UTF-8', {
          cause: err,
        });
      }
      const path = await options.resolve(name);

      if (lockstep) await write(socket, encodeRequest('!Z'));
      const sizeHeader = expectFlagged(await readHeader(reader, limits), FLAGS.size);
      const sizeText = await reader.readPayload(
        sizeHeader.length,
        MAX_DECIMAL_PAYLOAD,
        'file size',
      );
      const size = parseDecimal(sizeText, `size of ${JSON.stringify(name)}`, limits.maxFileSize);

      let wireMode: number | undefined;
      if (options.modes) {
        if (lockstep) await write(socket, encodeRequest('!M'));
        const modeHeader = expectFlagged(await readHeader(reader, limits), FLAGS.mode);
        const modeText = await reader.readPayload(modeHeader.length, 8, 'file mode');
        wireMode = parseMode(modeText, name);
      }

      if (!push) {
        const next = pipeline && i + 1 < count;
        await write(
          socket,
          next ? Buffer.concat([encodeRequest('!T'), questions]) : encodeRequest('!T'),
        );
      }
      const { mode, staged } = await receiveFile(reader, path, size, name, wireMode, options.stage);
      received.push({
        name,
        path,
        size,
        ...(mode === undefined ? {} : { mode }),
        ...(staged === undefined ? {} : { staged }),
      });
    }
  }
}

async function receiveFile(
  reader: FramedReader,
  path: string,
  size: number,
  name: string,
  wireMode: number | undefined,
  stage = false,
): Promise<{ mode: number | undefined; staged: string | undefined }> {
  const tmpName = `.${basename(path).slice(0, 32)}.rake-tmp-${uniqueSuffix()}`;
  const tmp = join(dirname(path), tmpName);
  // A small file is read off the wire first, then written with synchronous calls: no
  // temporary file exists while we wait on the peer, and no thread-pool handoffs.
  const bytes =
    size <= SMALL_FILE_BYTES
      ? await reader.readExact(size, `bytes of ${JSON.stringify(name)}`)
      : undefined;
  // O_EXCL | O_NOFOLLOW: never write through something a job planted at the temporary name.
  const fd = openSync(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o666);
  let mode: number | undefined;
  let fdDone = false; // closed, or owned by the write stream
  try {
    if (wireMode !== undefined) {
      // Set through the descriptor, before any byte: the file never appears with other bits.
      const created = fstatSync(fd).mode & 0o777;
      mode = applicableMode(wireMode, created);
      if (mode !== created) fchmodSync(fd, mode);
    }
    if (bytes !== undefined) {
      for (let done = 0; done < bytes.length; ) {
        done += writeSync(fd, bytes, done, bytes.length - done);
      }
      fdDone = true;
      closeSync(fd);
    } else {
      const out = createWriteStream('', { fd, highWaterMark: 256 * 1024 });
      fdDone = true; // the stream closes it when it finishes or is destroyed
      // Errors surface through pipeExact and finished(); this keeps a late one (a write
      // completing after destroy) from becoming an uncaught exception.
      out.on('error', () => {});
      try {
        await reader.pipeExact(size, out, `bytes of ${JSON.stringify(name)}`);
        out.end();
        await finished(out);
      } catch (err) {
        out.destroy();
        throw err;
      }
    }
    if (!stage) renameSync(tmp, path);
  } catch (err) {
    if (!fdDone) closeQuietly(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // Never created, or gone already.
    }
    throw err;
  }
  return { mode, staged: stage ? tmp : undefined };
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // Closed already.
  }
}

/** Reads all `size` bytes of an open file; a file that shrank since its stat is an error. */
function readWhole(fd: number, size: number, path: string): Buffer {
  const buf = Buffer.allocUnsafe(size);
  for (let done = 0; done < size; ) {
    const n = readSync(fd, buf, done, size - done, done);
    if (n === 0) {
      throw new Error(`${path} changed while being sent: announced ${size} bytes, read ${done}`);
    }
    done += n;
  }
  return buf;
}

/** Streams the first `size` bytes of `fd` into `socket`; closes `fd` (the stream owns it). */
async function streamFile(
  fd: number,
  size: number,
  socket: Writable,
  chunkSize: number,
  path: string,
): Promise<void> {
  const input = createReadStream('', {
    fd,
    start: 0,
    end: size - 1,
    highWaterMark: chunkSize,
  });
  let sentBytes = 0;
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      sentBytes += chunk.length;
      if (!socket.write(chunk)) await drained(socket);
    }
  } finally {
    input.destroy();
  }
  if (sentBytes !== size) {
    throw new Error(`${path} changed while being sent: announced ${size} bytes, read ${sentBytes}`);
  }
}

/** Reads a header, turning a `!F` (the peer refusing us) into a `refused` ProtocolError. */
async function readHeader(reader: FramedReader, limits: ProtocolLimits): Promise<Header> {
  const h = await reader.readHeader(limits);
  if (h.kind === 'plain' && h.code === '!F') {
    const message = await reader.readPayload(h.length, 64 * 1024, 'refusal message');
    throw new ProtocolError(
      'refused',
      'a filestream packet',
      `!F: ${message.toString('utf8').trim()}`,
    );
  }
  return h;
}

async function expectRequest(
  reader: FramedReader,
  request: '!N' | '!Z' | '!M' | '!T',
): Promise<void> {
  await reader.readRequest(request);
}
