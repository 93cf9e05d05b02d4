/**
 * Step `download`: after a reply that says output files follow, receives them on an open
 * connection, each staged under a temporary name, and lands them together (a refused name,
 * a claim by another action or a broken connection leaves nothing of this action behind);
 * then `!D`, best effort. Reports `downloaded`. Its errors come after the reply
 * ({@link AfterReply}). Unsubscribing stops it with the connection, and the staged files
 * are removed.
 *
 *     download --D-(r|)         D downloaded (names, bytes)
 */
import { relative, sep } from 'node:path';
import type { Observable } from 'rxjs';
import { ProtocolError } from '../../protocol/errors.js';
import { receiveFilestream } from '../../protocol/filestream.js';
import { encodeHeader } from '../../protocol/header.js';
import { wireNameSegments } from '../../protocol/names.js';
import { write } from '../../protocol/socket-writes.js';
import { type Connection, step, type Told } from '../conversation.js';
import { isConnectionError, JobError } from '../errors.js';
import { discardStaged, landStaged, MadeDirectories, outputRefusal } from '../landing.js';
import type { JobProgress, JobRequest, TrackCleanup, TransportLimits } from '../transport.js';
import type { Replied } from './execute.js';

/** An error after the reply (while downloading, or sending `!D`): the job ran. */
export class AfterReply extends Error {
  constructor(readonly error: unknown) {
    super(error instanceof Error ? error.message : String(error));
  }
}

export interface DownloadSpec {
  readonly job: JobRequest;
  readonly cwd: string | undefined;
  readonly limits: TransportLimits;
  readonly modes: boolean;
  readonly push: boolean;
  readonly host: string;
  /** The connection is kept for another job (extension `reuse`): no `!D`. */
  readonly keep?: boolean;
}

export function download(
  connection: Connection,
  replied: Replied,
  spec: DownloadSpec,
  track: TrackCleanup,
): Observable<Told<JobProgress, void>> {
  // One step for the files and `!D` (what a concat of two steps with a catchError did, in
  // one subscription: every job of ours downloads, most with no files at all).
  return step<JobProgress, void>(track, async (emit) => {
    try {
      if (replied.outputs) await receive(connection, spec, emit);
      // The reply and every file are in: a server that closed right after them (one shutting
      // down does, as may any base server) has lost us nothing, so `!D` is best effort.
      if (spec.keep === true) return;
      await write(connection.socket, encodeHeader({ kind: 'plain', code: '!D', length: 0 })).catch(
        (err: unknown) => {
          if (!isConnectionError(err)) throw err;
        },
      );
    } catch (err) {
      throw new AfterReply(err);
    }
  });
}

async function receive(
  { socket, reader }: Connection,
  { job, cwd, limits, modes, push, host }: DownloadSpec,
  emit: (p: JobProgress) => void,
): Promise<void> {
  // Every file is staged under a temporary name and they land together at the end: a refused
  // name or a broken connection leaves nothing of this action behind.
  const made = new MadeDirectories();
  const received = await receiveFilestream(reader, socket, {
    resolve: (name) => {
      const local = outputName(name, cwd);
      const why = outputRefusal(local, job.outputDir, job.refusedFiles ?? []);
      if (why !== undefined) {
        throw new JobError(
          'bad-output',
          `refused output file ${JSON.stringify(local)} from ${host}: ${why}; no output of this action was written`,
          false,
        );
      }
      return made.prepare(job.outputDir, local);
    },
    limits,
    modes,
    push,
    stage: true,
  }).catch((err: unknown) => {
    made.removeEmpty();
    throw err;
  });
  const names = received.map((f) => relative(job.outputDir, f.path).split(sep).join('/'));
  const conflict = job.claim?.(names);
  if (conflict !== undefined) {
    discardStaged(received);
    made.removeEmpty();
    throw new JobError(
      'bad-output',
      `${conflict} (from ${host}); no output of this action was written`,
      false,
    );
  }
  landStaged(received);
  emit({ type: 'downloaded', files: names, bytes: received.reduce((n, f) => n + f.size, 0) });
}

/**
 * Where an output file goes, relative to the Rakefile's directory: with `cwd` (the command
 * ran in that subdirectory of the job directory) the server's name is relative to the job
 * directory, and only what lies below `cwd` is inside the Rakefile's directory.
 */
function outputName(name: string, cwd: string | undefined): string {
  if (cwd === undefined) return name;
  const segments = wireNameSegments(name);
  const prefix = cwd.split('/');
  if (segments.length > prefix.length && prefix.every((p, i) => segments[i] === p)) {
    return segments.slice(prefix.length).join('/');
  }
  throw new ProtocolError(
    'bad-name',
    "an output file inside the Rakefile's directory",
    `${JSON.stringify(name)}, which the command wrote outside it (the job ran in ${JSON.stringify(cwd)})`,
  );
}
