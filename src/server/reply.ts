// The reply to a job: `!SS`/`!SSI` + stdout and the output files' filestream for a success,
// the two-packet `!F` for a failure or a refusal (docs/protocol.md); with `results`, the
// reply from a stored result (`!X hit`) and the storing of a success's result.
import { join } from 'node:path';
import { entryOf } from '../cache/job.js';
import {
  encodeExtension,
  encodeHeader,
  encodePacket,
  FLAGS,
  sendFilestream,
  write,
} from '../protocol/index.js';
import { unreachable } from '../util/unreachable.js';
import { type JobDir, JobLost, type Wire } from './context.js';
import type { JobOutcome } from './job.js';
import { changedFiles, isSmallListing, listRegularFiles, type StdoutSpool } from './outputs.js';
import { landResult } from './results.js';

/** Exit status sent in the second `!F` packet when the server itself refuses a request. */
export const REFUSAL_EXIT_CODE = 2;
/** Exit status for a job killed by `--job-timeout` (as `timeout(1)` does). */
export const TIMEOUT_EXIT_CODE = 124;
/** Exit status when `/bin/sh` itself could not be started. */
export const SPAWN_FAILURE_EXIT_CODE = 126;

/** Largest stdout a stored result keeps (extension `results`): read into memory to store. */
const MAX_RESULT_STDOUT_BYTES = 16 * 1024 * 1024;

/** A job that ran to an end the client hears about (not one whose client left). */
export type FinishedJob = Exclude<JobOutcome, { reason: 'aborted' }>;

/** What a sent reply said, for the job's log line (and `outputs`, to store a result). */
export interface ReplySent {
  readonly exitCode: number;
  readonly files: number;
  readonly outputs?: readonly string[];
}

/**
 * Sends the reply for a finished job: a failure as `!F`, a success as stdout (from the
 * spool) and the files the job wrote or changed (`before`: the listing before it ran).
 * A job the server lost is not answered at all (`JobLost`: the client retries elsewhere).
 */
export async function sendReply(
  wire: Wire,
  outcome: FinishedJob,
  dir: JobDir,
  before: Parameters<typeof changedFiles>[0],
  spool: StdoutSpool,
): Promise<ReplySent> {
  const { limits, workdir, jobTimeoutMs } = wire.ctx;
  switch (outcome.reason) {
    case 'spawn-error':
      return sendFailure(
        wire,
        `rakeserver: cannot start /bin/sh: ${withoutPaths(outcome.error.message, workdir)}\n`,
        SPAWN_FAILURE_EXIT_CODE,
      );
    case 'timeout':
      return sendFailure(
        wire,
        Buffer.concat([
          outcome.stderr,
          Buffer.from(
            `rakeserver: job timed out after ${jobTimeoutMs / 1000} s; its processes were killed\n`,
          ),
        ]),
        TIMEOUT_EXIT_CODE,
      );
    case 'refused':
      return sendFailure(wire, `rakeserver: refused: ${outcome.message}\n`, REFUSAL_EXIT_CODE);
    case 'lost':
      throw new JobLost(outcome.message);
    case 'output-limit':
      return sendFailure(
        wire,
        `rakeserver: refused: the job's ${outcome.stream} exceeded ${limits.maxOutputBytes} bytes; its processes were killed\n`,
        REFUSAL_EXIT_CODE,
      );
    case 'exited':
      break;
    default:
      return unreachable(outcome, 'job outcome');
  }
  if (outcome.exitCode !== 0) {
    const note =
      outcome.exitCode === 127
        ? 'rakeserver: exit status 127: a program in this command was not found on this server\n'
        : '';
    return sendFailure(wire, Buffer.concat([outcome.stderr, Buffer.from(note)]), outcome.exitCode);
  }
  const after = await listRegularFiles(dir.path, limits.maxFiles);
  dir.small = isSmallListing(after);
  if (after.ok) {
    dir.noFiles = after.files.size === 0 && after.notUtf8.length === 0;
    dir.bare = after.empty;
  }
  if (!after.ok) {
    return sendFailure(
      wire,
      `rakeserver: refused: the job left more than ${after.limit} files\n`,
      REFUSAL_EXIT_CODE,
    );
  }
  if (after.notUtf8.length > 0) {
    // The wire carries UTF-8 names: say so rather than leave the files behind unsaid.
    const shown = after.notUtf8.slice(0, 10).join(', ');
    return sendFailure(
      wire,
      `rakeserver: refused: the command wrote ${after.notUtf8.length} file name(s) that are not UTF-8, which the protocol cannot carry: ${shown}${after.notUtf8.length > 10 ? ', …' : ''}; give them UTF-8 names\n`,
      REFUSAL_EXIT_CODE,
    );
  }
  const outputs = changedFiles(before, after.files);
  const flags = outputs.length > 0 ? FLAGS.stdoutAndFiles : FLAGS.stdout;
  // Extension `stderr`: a successful job's warnings travel just before its reply.
  const warnings =
    wire.granted().has('stderr') && outcome.stderr.length > 0
      ? [encodeExtension({ verb: 'stderr', bytes: outcome.stderr })]
      : [];
  await writeAll(wire, [
    ...warnings,
    encodeHeader({ kind: 'flagged', flags, length: outcome.stdoutBytes }),
  ]);
  // From memory in the same tick (one write with the header), or read back from the spool
  // file 256 KiB at a time, each read waiting until the socket has taken the last.
  for await (const chunk of spool.read()) await write(wire.socket, chunk);
  if (outputs.length > 0) await sendOutputs(wire, dir, outputs);
  return { exitCode: 0, files: outputs.length, outputs };
}

/** The two-packet failure reply: `!F` + stderr, then `!F` + exit status. */
export async function sendFailure(
  wire: Wire,
  stderr: Buffer | string,
  exitCode: number,
): Promise<ReplySent> {
  await writeAll(wire, [
    encodePacket({ code: '!F' }, stderr),
    encodePacket({ code: '!F' }, String(exitCode)),
  ]);
  return { exitCode, files: 0 };
}

/**
 * Extension `results`: a stored result of `key`, if any, landed in the job directory and
 * sent as the job's reply behind `!X hit <key>`: nothing runs, no slot is taken. Returns the
 * number of files sent, `'miss'` on a miss, or `'not-landed'` when the entry cannot be
 * landed (the job then runs; some of the entry's files may be in the job directory now).
 */
export async function sendStoredResult(
  wire: Wire,
  key: string,
  dir: JobDir,
): Promise<number | 'miss' | 'not-landed'> {
  const entry = wire.ctx.results?.get(key);
  if (entry === undefined) {
    wire.log.debug({ key }, 'result miss');
    return 'miss';
  }
  if (entry.files.length >= 64) dir.small = false;
  dir.bare = false;
  if (entry.files.length > 0) dir.noFiles = false;
  try {
    await landResult(dir.path, entry);
  } catch (err) {
    wire.log.warn({ key, err }, 'cannot land a stored result: running the job');
    return 'not-landed';
  }
  const names = entry.files.map((f) => f.name);
  const flags = names.length > 0 ? FLAGS.stdoutAndFiles : FLAGS.stdout;
  await writeAll(wire, [
    encodeExtension({ verb: 'hit', key }),
    encodeHeader({ kind: 'flagged', flags, length: entry.stdout.length }),
    entry.stdout,
  ]);
  if (names.length > 0) await sendOutputs(wire, dir, names);
  return names.length;
}

/** Extension `results`: a successful job's stdout and output files stored under `key`. */
export async function storeResult(
  wire: Wire,
  key: string,
  dir: JobDir,
  spool: StdoutSpool,
  outcome: FinishedJob,
  outputs: readonly string[] | undefined,
): Promise<void> {
  const results = wire.ctx.results;
  if (results === undefined || outcome.reason !== 'exited') return;
  if (outcome.stdoutBytes > MAX_RESULT_STDOUT_BYTES) return;
  const chunks: Buffer[] = [];
  for await (const chunk of spool.read()) chunks.push(Buffer.from(chunk));
  const entry = entryOf(dir.path, Buffer.concat(chunks), outputs ?? []);
  // Off the event loop: the other connections (their heartbeats too) go on meanwhile.
  if (entry !== undefined && (await results.putAsync(key, entry))) {
    wire.log.debug({ key, files: entry.files.length }, 'result stored');
  }
}

/** The output files' filestream (never following a symlink a job planted). */
async function sendOutputs(wire: Wire, dir: JobDir, names: readonly string[]): Promise<void> {
  const granted = wire.granted();
  await sendFilestream(
    wire.socket,
    wire.reader,
    names.map((name) => ({ name, path: join(dir.path, ...name.split('/')) })),
    { noFollow: true, modes: granted.has('mode'), push: granted.has('push') },
  );
}

/**
 * Writes `buffers` in one system call with whatever else is written in the same tick: a
 * reply's header, its stdout and (with `push`) its output files go out together.
 */
async function writeAll(wire: Wire, buffers: readonly Uint8Array[]): Promise<void> {
  for (const b of buffers) await write(wire.socket, b);
}

/** `text` with the server's workdir (and so every job directory in it) as `<workdir>`. */
function withoutPaths(text: string, workdir: string): string {
  return text.split(workdir).join('<workdir>');
}
