import { mkdtemp } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import {
  describeHeader,
  drained,
  encodeHeader,
  encodePacket,
  FLAGS,
  FramedReader,
  isProtocolError,
  ProtocolError,
  type ProtocolLimits,
  prepareInside,
  receiveFilestream,
  sendFilestream,
  write,
} from '../protocol/index.js';
import { unreachable } from '../util/unreachable.js';
import { type JobOutcome, runJob } from './job.js';
import { changedFiles, listRegularFiles, removeTree } from './outputs.js';
import { type JobSlots, SlotWaitAborted } from './slots.js';

/** Limits the server enforces: the wire limits plus the cap on captured output. */
export interface ServerLimits extends ProtocolLimits {
  /** Cap on a job's captured stdout, and separately on its stderr, in bytes. */
  readonly maxOutputBytes: number;
}

/** Exit status sent in the second `!F` packet when the server itself refuses a request. */
export const REFUSAL_EXIT_CODE = 2;
/** Exit status for a job killed by `--job-timeout` (as `timeout(1)` does). */
export const TIMEOUT_EXIT_CODE = 124;
/** Exit status when `/bin/sh` itself could not be started. */
export const SPAWN_FAILURE_EXIT_CODE = 126;

/** What a connection needs from its server; the server owns the shared state. */
export interface ConnectionContext {
  readonly logger: Logger;
  readonly limits: ServerLimits;
  readonly workdir: string;
  readonly jobTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly slots: JobSlots;
  /** The cost to report: jobs being managed + the configured offset. */
  cost(): number;
  /** Counts a connection into, or out of, the jobs being managed. */
  manage(delta: 1 | -1): void;
  /** True once the server is shutting down: finish the current job, take no new one. */
  closing(): boolean;
}

/** How a connection ended, for its log line. */
type ConnectionOutcome = 'ok' | 'vanished' | 'refused' | 'error' | 'shutdown' | 'idle-timeout';

/** The client went away while we were waiting on it or running its job. */
class ClientGone extends Error {
  override readonly name = 'ClientGone';
}

const LINGER_MS = 1000;

/**
 * One client connection: an optional `!R`, a command, its reply, `!D` — plus any number of
 * cost queries. Owns the connection's job directory and its job, and cleans both up
 * however the conversation ends.
 */
export class Connection {
  readonly id: number;
  /** Resolves once the socket is closed, the job is dead and the directory is gone. */
  readonly done: Promise<void>;
  readonly #socket: Socket;
  readonly #ctx: ConnectionContext;
  readonly #log: Logger;
  readonly #reader: FramedReader;
  readonly #abort = new AbortController();
  readonly #started = performance.now();
  readonly #remote: string;
  #dir: string | undefined;
  #managing = false;
  #outcome: ConnectionOutcome = 'ok';
  #commands = 0;
  #costQueries = 0;

  constructor(id: number, socket: Socket, ctx: ConnectionContext) {
    this.id = id;
    this.#socket = socket;
    this.#ctx = ctx;
    this.#log = ctx.logger.child({ conn: id });
    this.#reader = new FramedReader(socket);
    this.#remote = `${socket.remoteAddress}:${socket.remotePort}`;
    socket.setNoDelay(true);
    const gone = () => this.#abort.abort();
    socket.once('end', gone);
    socket.once('close', gone);
    socket.on('error', (err) => this.#log.debug({ err: err.message }, 'socket error'));
    socket.on('timeout', () => {
      this.#outcome = 'idle-timeout';
      this.#log.warn({ reason: 'idle-timeout', seconds: ctx.idleTimeoutMs / 1000 }, 'refused');
      socket.destroy();
    });
    this.#setIdleTimeout(true);
    this.done = this.#run();
  }

  /** True from `!R`/`!C` until the reply is fully sent or the connection ends. */
  get managing(): boolean {
    return this.#managing;
  }

  /** Ends the connection now: kills its job, removes its directory (server shutdown). */
  shutdown(): void {
    if (this.#outcome === 'ok') this.#outcome = 'shutdown';
    this.#abort.abort();
    this.#socket.destroy();
  }

  async #run(): Promise<void> {
    let linger = false;
    try {
      await this.#converse();
    } catch (err) {
      linger = await this.#fail(err);
    } finally {
      this.#setManaging(false);
      this.#abort.abort();
      await this.#removeDir();
      await this.#close(linger);
      this.#log.info(
        {
          remote: this.#remote,
          outcome: this.#outcome,
          durationMs: Math.round(performance.now() - this.#started),
          bytesIn: this.#socket.bytesRead,
          bytesOut: this.#socket.bytesWritten,
          commands: this.#commands,
          costQueries: this.#costQueries,
        },
        'connection',
      );
    }
  }

  async #converse(): Promise<void> {
    const limits = this.#ctx.limits;
    for (;;) {
      if (this.#ctx.closing() && !this.#managing) {
        this.#outcome = 'shutdown';
        return;
      }
      const h = await this.#reader.readHeaderOrEnd(limits);
      if (!h) return;
      if (h.kind === 'flagged') {
        throw new ProtocolError('unexpected-code', 'a !E, !C, !R or !D header', describeHeader(h));
      }
      switch (h.code) {
        case '!E':
          if (h.length === 0) {
            this.#costQueries++;
            await write(this.#socket, encodePacket({ code: '!E' }, String(this.#ctx.cost())));
          } else {
            await this.#command(h.length);
          }
          break;
        case '!C':
          await this.#command(h.length);
          break;
        case '!R':
          await this.#requirements(h.length);
          break;
        case '!D':
          await this.#removeDir();
          return;
        case '!F':
          throw new ProtocolError(
            'unexpected-code',
            'a !E, !C, !R or !D header',
            describeHeader(h),
          );
        default:
          unreachable(h.code, 'plain code');
      }
    }
  }

  async #requirements(length: number): Promise<void> {
    const limits = this.#ctx.limits;
    // `!R` carries no payload in base mode; tolerate one (bounded) and ignore it.
    await this.#reader.readPayload(length, limits.maxCommandBytes, '!R payload');
    this.#setManaging(true);
    const dir = await this.#ensureDir();
    const files = await receiveFilestream(this.#reader, this.#socket, {
      resolve: (name) => prepareInside(dir, name),
      limits,
    });
    this.#log.debug(
      { files: files.length, bytes: files.reduce((n, f) => n + f.size, 0) },
      'requirements received',
    );
  }

  async #command(length: number): Promise<void> {
    const limits = this.#ctx.limits;
    const command = (
      await this.#reader.readPayload(length, limits.maxCommandBytes, 'command')
    ).toString('utf8');
    this.#commands++;
    this.#setManaging(true);
    const dir = await this.#ensureDir();
    this.#setIdleTimeout(false);
    let release: (() => void) | undefined;
    try {
      release = await this.#ctx.slots.acquire(this.#abort.signal);
    } catch (err) {
      if (err instanceof SlotWaitAborted) throw new ClientGone('client left while queued');
      throw err;
    }
    let outcome: JobOutcome;
    let before: Awaited<ReturnType<typeof listRegularFiles>>;
    try {
      before = await listRegularFiles(dir, limits.maxFiles);
      this.#log.info({ command }, 'job start');
      outcome = await runJob({
        command,
        cwd: dir,
        signal: this.#abort.signal,
        timeoutMs: this.#ctx.jobTimeoutMs,
        maxOutputBytes: limits.maxOutputBytes,
      });
    } finally {
      release();
    }
    this.#setIdleTimeout(true);
    const end = { command, reason: outcome.reason, durationMs: outcome.durationMs };
    if (outcome.reason === 'aborted') {
      this.#log.info({ ...end, exitCode: null }, 'job end');
      throw new ClientGone('client left during its job');
    }
    const reply = await this.#reply(outcome, dir, before.ok ? before.files : new Map());
    this.#setManaging(false);
    this.#log.info(
      {
        ...end,
        exitCode: reply.exitCode,
        bytesIn: this.#socket.bytesRead,
        bytesOut: this.#socket.bytesWritten,
        files: reply.files,
      },
      'job end',
    );
  }

  /** Sends the reply for a finished job; returns what the log line needs. */
  async #reply(
    outcome: Exclude<JobOutcome, { reason: 'aborted' }>,
    dir: string,
    before: Parameters<typeof changedFiles>[0],
  ): Promise<{ exitCode: number; files: number }> {
    const limits = this.#ctx.limits;
    switch (outcome.reason) {
      case 'spawn-error':
        return this.#failure(
          `rakeserver: cannot start /bin/sh: ${outcome.error.message}\n`,
          SPAWN_FAILURE_EXIT_CODE,
        );
      case 'timeout':
        return this.#failure(
          Buffer.concat([
            outcome.stderr,
            Buffer.from(
              `rakeserver: job timed out after ${this.#ctx.jobTimeoutMs / 1000} s; its processes were killed\n`,
            ),
          ]),
          TIMEOUT_EXIT_CODE,
        );
      case 'output-limit':
        return this.#failure(
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
      return this.#failure(Buffer.concat([outcome.stderr, Buffer.from(note)]), outcome.exitCode);
    }
    const after = await listRegularFiles(dir, limits.maxFiles);
    if (!after.ok) {
      return this.#failure(
        `rakeserver: refused: the job left more than ${after.limit} files\n`,
        REFUSAL_EXIT_CODE,
      );
    }
    const outputs = changedFiles(before, after.files);
    const flags = outputs.length > 0 ? FLAGS.stdoutAndFiles : FLAGS.stdout;
    await this.#writeAll([
      encodeHeader({ kind: 'flagged', flags, length: outcome.stdoutBytes }),
      ...outcome.stdout,
    ]);
    if (outputs.length > 0) {
      await sendFilestream(
        this.#socket,
        this.#reader,
        outputs.map((name) => ({ name, path: join(dir, ...name.split('/')) })),
        { noFollow: true },
      );
    }
    return { exitCode: 0, files: outputs.length };
  }

  /** The two-packet failure reply: `!F` + stderr, then `!F` + exit status. */
  async #failure(
    stderr: Buffer | string,
    exitCode: number,
  ): Promise<{ exitCode: number; files: number }> {
    await this.#writeAll([
      encodePacket({ code: '!F' }, stderr),
      encodePacket({ code: '!F' }, String(exitCode)),
    ]);
    return { exitCode, files: 0 };
  }

  /**
   * Turns a failed conversation into its outcome: a vanished peer is cleaned up quietly, a
   * wire fault or a local error is refused with `!F` packets. Returns whether to linger.
   */
  async #fail(err: unknown): Promise<boolean> {
    if (
      err instanceof ClientGone ||
      isProtocolError(err, 'short-read', 'socket-error') ||
      this.#socket.destroyed
    ) {
      if (this.#outcome === 'ok') this.#outcome = 'vanished';
      this.#log.info(
        { reason: err instanceof Error ? err.message : String(err), managing: this.#managing },
        'client vanished',
      );
      return false;
    }
    let message: string;
    if (err instanceof ProtocolError) {
      this.#outcome = 'refused';
      this.#log.warn(
        { reason: err.reason, expected: err.expected, received: err.received },
        'refused',
      );
      message = `rakeserver: refused: ${err.message}\n`;
    } else {
      this.#outcome = 'error';
      const e = err instanceof Error ? err : new Error(String(err));
      this.#log.error({ err: e.message, code: (e as NodeJS.ErrnoException).code }, 'error');
      message = `rakeserver: error: ${e.message}\n`;
    }
    try {
      await this.#failure(message, REFUSAL_EXIT_CODE);
    } catch {
      return false;
    }
    return true;
  }

  /** Ends the socket; after a refusal, keep reading (and dropping) briefly so the peer gets
   * our `!F` instead of a reset. Resolves when the socket is closed. */
  #close(linger: boolean): Promise<void> {
    const socket = this.#socket;
    this.#reader.dispose();
    return new Promise<void>((resolve) => {
      if (socket.destroyed) return resolve();
      socket.once('close', () => resolve());
      socket.on('data', () => {});
      socket.resume();
      socket.setTimeout(0);
      socket.end();
      setTimeout(() => socket.destroy(), linger ? LINGER_MS : LINGER_MS / 4).unref();
    });
  }

  async #writeAll(buffers: readonly Uint8Array[]): Promise<void> {
    const socket = this.#socket;
    socket.cork();
    let ok = true;
    for (const b of buffers) ok = socket.write(b) && ok;
    socket.uncork();
    if (!ok) await drained(socket);
  }

  async #ensureDir(): Promise<string> {
    this.#dir ??= await mkdtemp(join(this.#ctx.workdir, `job-${this.id}-`));
    return this.#dir;
  }

  async #removeDir(): Promise<void> {
    const dir = this.#dir;
    if (dir === undefined) return;
    this.#dir = undefined;
    try {
      await removeTree(dir);
    } catch (err) {
      this.#log.error(
        { dir, err: err instanceof Error ? err.message : String(err) },
        'cannot remove job directory',
      );
    }
  }

  #setManaging(on: boolean): void {
    if (on === this.#managing) return;
    this.#managing = on;
    this.#ctx.manage(on ? 1 : -1);
  }

  #setIdleTimeout(on: boolean): void {
    this.#socket.setTimeout(on ? this.#ctx.idleTimeoutMs : 0);
  }
}
