/**
 * Step `execute`: waits for the job's reply on an open connection — the `!X` messages the
 * extensions put before it (`queued`, `started`, a success's `stderr`, a stored result's
 * `hit`, heartbeats), then `!SS` + stdout or `!F` + stderr + exit status. Reports `queued`,
 * `started`, `replied`. Unsubscribing stops it with the connection.
 *
 *     execute --q---g------R-(r|)      q queued, g started, R replied, r: outputs follow?
 */
import type { Observable } from 'rxjs';
import { ProtocolError } from '../../protocol/errors.js';
import type { Extension } from '../../protocol/extensions.js';
import { describeHeader, expectPlain, type Header, parseDecimal } from '../../protocol/header.js';
import type { FramedReader } from '../../protocol/reader.js';
import { type Connection, step, type Told } from '../conversation.js';
import { isConnectionError, JobError } from '../errors.js';
import { ResultMissed, readReply } from '../negotiate.js';
import type { OutputSpool } from '../output.js';
import type { JobProgress, TrackCleanup, TransportLimits } from '../transport.js';
import type { Uploaded } from './upload.js';

/** What the reply leaves for the download: whether output files follow. */
export interface Replied {
  readonly outputs: boolean;
}

export interface ExecuteSpec {
  readonly granted: ReadonlySet<Extension>;
  readonly limits: TransportLimits;
  readonly spool: OutputSpool;
  readonly host: string;
  /**
   * The command went with `!X lookup only` (a peek at another host's stored results): `miss`
   * fails with `ResultMissed`, and a hit counts only if this says so (the first host to
   * answer with a hit takes the action; a later one's is dropped with the connection).
   */
  readonly claimHit?: () => boolean;
}

export function execute(
  connection: Connection,
  uploaded: Uploaded,
  spec: ExecuteSpec,
  track: TrackCleanup,
): Observable<Told<JobProgress, Replied>> {
  return step(track, (emit) => awaitReply(connection, uploaded, spec, emit));
}

/** The reply as a promise, reporting through `emit` (also used right behind an upload). */
export async function awaitReply(
  { reader }: Connection,
  { writeFailed }: Uploaded,
  { granted, limits, spool, host, claimHit }: ExecuteSpec,
  emit: (p: JobProgress) => void,
): Promise<Replied> {
  const only = claimHit !== undefined;
  const {
    header: reply,
    stderr: warnings,
    hit: serverHit,
  } = await readReply(reader, limits, granted, (verb) => emit({ type: verb }), host, only).catch(
    (err: unknown) => {
      throw writeFailed ?? err;
    },
  );
  if (only && (serverHit === undefined || !claimHit())) throw new ResultMissed(host);
  if (writeFailed !== undefined && reply.kind !== 'plain') throw writeFailed;
  checkReply(reply);
  if (reply.kind === 'plain') {
    // `!F<len>` + stderr, then `!F<len>` + exit status (PROTOCOL.md, "failure").
    const stderr = await reader.readPayload(reply.length, limits.maxOutputBytes, 'stderr');
    const exitStatus = await readExitStatus(reader, limits);
    emit({ type: 'replied', ok: false, stderr: stderr.toString('utf8'), exitStatus });
    return { outputs: false };
  }
  if (reply.length > limits.maxOutputBytes) {
    throw new ProtocolError(
      'limit-exceeded',
      `command output of at most ${limits.maxOutputBytes} bytes`,
      `${reply.length} bytes`,
    );
  }
  const body = await spool.receive(reader, reply.length, 'command output');
  const outputs = reply.flags[1] === 'I';
  const stderr = warnings === undefined ? undefined : warnings.toString('utf8');
  emit({
    type: 'replied',
    ok: true,
    stdout: body,
    files: outputs,
    ...(stderr === undefined ? {} : { stderr }),
    ...(serverHit === undefined ? {} : { serverHit }),
    ...(serverHit !== undefined && only ? { hitFrom: host } : {}),
  });
  return { outputs };
}

/** A reply is `!S..` (stdout follows) or `!F` (stderr follows). */
function checkReply(reply: Header): void {
  if (reply.kind === 'plain') expectPlain(reply, '!F');
  else if (reply.flags[0] !== 'S' && reply.flags[0] !== ' ') {
    throw new JobError(
      'protocol-error',
      `expected a reply !SS or !F, received ${describeHeader(reply)}`,
      true,
    );
  }
}

/** The second `!F` packet; a peer that closes instead leaves the status unknown. */
async function readExitStatus(
  reader: FramedReader,
  limits: TransportLimits,
): Promise<number | undefined> {
  try {
    const h = await reader.readHeaderOrEnd(limits);
    if (h === null) return undefined;
    const code = expectPlain(h, '!F');
    return parseDecimal(await reader.readPayload(code.length, 64, 'exit status'), 'exit status');
  } catch (err) {
    if (isConnectionError(err)) return undefined;
    throw err;
  }
}
