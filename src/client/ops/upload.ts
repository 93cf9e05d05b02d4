/**
 * Step `upload`: the job's requirements and its command on an open connection — `!R` and the
 * filestream (when there are files), then `!X lookup` (or `lookup only`) / `!X cwd` when
 * planned and `!C`.
 * Reports `uploaded`. Unsubscribing stops it with the connection (see `conversation.ts`).
 *
 *     upload  --U--(r|)        U uploaded (files, bytes), r its result (a write that failed late)
 */
import type { Observable } from 'rxjs';
import { encodeExtension } from '../../protocol/extensions.js';
import { type OutgoingFile, sendFilestream } from '../../protocol/filestream.js';
import { encodeHeader, encodePacket } from '../../protocol/header.js';
import { write, writeAlone } from '../../protocol/socket-writes.js';
import { type Connection, step, type Told } from '../conversation.js';
import { isConnectionError } from '../errors.js';
import type { JobProgress, TrackCleanup } from '../transport.js';

/** What to send, and how. */
export interface UploadSpec {
  readonly command: string;
  readonly files: readonly OutgoingFile[];
  /** Files carry their modes (extension `mode`). */
  readonly modes: boolean;
  /** Extension `push`: the files go without waiting for a `!M` per file. */
  readonly push: boolean;
  /** The host says when a queued job starts (`queue`); `undefined`: it cannot say (base). */
  readonly startReported: boolean | undefined;
  /** The directory the command runs in, inside the job directory (extension `cwd`). */
  readonly cwd: string | undefined;
  /** Ask the host's stored results first (extension `results`). */
  /** `only`: do not run the command there on a miss (`!X lookup only`, a peek). */
  readonly lookup: boolean | 'only';
}

/**
 * What an upload leaves for the reply: a pushed upload the server refuses part-way (a file
 * over its limit) is answered with `!F` while our bytes are still on their way; when it then
 * closes, our write fails. The refusal is what the user needs, so the reply is read before
 * the write error is believed.
 */
export interface Uploaded {
  readonly writeFailed: unknown;
}

/** The upload as a promise, reporting `uploaded` through `emit` (also used behind a hello). */
export async function sendUpload(
  { socket, reader }: Connection,
  spec: UploadSpec,
  emit: (p: JobProgress) => void,
): Promise<Uploaded> {
  const told = spec.startReported === undefined ? {} : { startReported: spec.startReported };
  try {
    if (spec.files.length > 0) {
      await write(socket, encodeHeader({ kind: 'plain', code: '!R', length: 0 }));
      const sent = await sendFilestream(socket, reader, spec.files, {
        modes: spec.modes,
        push: spec.push,
      });
      emit({
        type: 'uploaded',
        files: sent.length,
        bytes: sent.reduce((n, f) => n + f.size, 0),
        ...told,
      });
    } else {
      emit({ type: 'uploaded', files: 0, bytes: 0, ...told });
    }
    // Extension `results`: a job that may be cached asks the host's stored results first.
    const command = encodePacket({ code: '!C' }, spec.command);
    if (spec.lookup === false && spec.cwd === undefined) await writeAlone(socket, command);
    else {
      await write(
        socket,
        Buffer.concat([
          ...(spec.lookup === false
            ? []
            : [
                encodeExtension(
                  spec.lookup === 'only' ? { verb: 'lookup', only: true } : { verb: 'lookup' },
                ),
              ]),
          ...(spec.cwd === undefined ? [] : [encodeExtension({ verb: 'cwd', path: spec.cwd })]),
          command,
        ]),
      );
    }
    return { writeFailed: undefined };
  } catch (err) {
    if (!spec.push || !isConnectionError(err)) throw err;
    return { writeFailed: err };
  }
}

export function upload(
  connection: Connection,
  spec: UploadSpec,
  track: TrackCleanup,
): Observable<Told<JobProgress, Uploaded>> {
  return step(track, (emit) => sendUpload(connection, spec, emit));
}
