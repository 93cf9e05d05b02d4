// One client connection (docs/server.md): its lifecycle, the loop that reads its messages
// and lets the handshake (handshake.ts) decide what each may do, and the running of its
// commands. What a job brings is job intake's (intake.ts); what it gets back is the reply's
// (reply.ts).

import type { Socket } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import {
  type Extension,
  encodeExtension,
  FIRST_BEAT_WITHIN_MS,
  FramedReader,
  type Header,
  hold,
  isProtocolError,
  newNonce,
  ProtocolError,
  write,
} from '../protocol/index.js';
import { unreachable } from '../util/unreachable.js';
import { ClientGone, type ConnectionContext, JobLost, type Wire } from './context.js';
import {
  AWAITING_FIRST,
  costReply,
  grantedOf,
  type HandshakeConfig,
  type HandshakeState,
  modeOf,
  onExtension,
  onHeader,
} from './handshake.js';
import { JobIntake } from './intake.js';
import { type JobOutcome, prepareJob, runJob } from './job.js';
import { type LoadWatch, watchLoad } from './load.js';
import { listRegularFiles, noFiles, StdoutSpool } from './outputs.js';
import {
  REFUSAL_EXIT_CODE,
  sendFailure,
  sendReply,
  sendStoredResult,
  storeResult,
} from './reply.js';
import { type SlotHold, SlotWaitAborted } from './slots.js';

/**
 * The reason every connection's AbortController is aborted with: nothing reads it, and
 * `abort()` without one builds a DOMException with a stack trace, about 0.15 ms of server
 * CPU per connection here.
 */
const CONNECTION_ENDED = new Error('the connection ended');

/** How a job starts on the wire: its requirements, or its command. */
const JOB_START = new Set(['!R', '!C']);

/** How a connection ended, for its log line. */
type ConnectionOutcome =
  | 'ok'
  | 'vanished'
  | 'refused'
  | 'error'
  | 'shutdown'
  | 'idle-timeout'
  | 'evicted';

const LINGER_MS = 1000;

/** Idle time before TCP keepalive probes start, on every connection. */
const KEEPALIVE_MS = 30_000;

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
  /** What the client sent for its job, and the job directory (intake.ts). */
  readonly #intake: JobIntake;
  /** This connection as intake and reply see it. */
  readonly #wire: Wire;
  #managing = false;
  #outcome: ConnectionOutcome = 'ok';
  #evicted = false;
  /** The current command's stdout, until its reply is sent. */
  #spool: StdoutSpool | undefined;
  #commands = 0;
  #costQueries = 0;
  /** The handshake (handshake.ts): base or extended, challenged, the extensions granted. */
  #state: HandshakeState = AWAITING_FIRST;
  readonly #handshake: HandshakeConfig;
  /** `!X watch` came: the load stream sent on this connection (extension `load`). */
  #watch: LoadWatch | undefined;

  constructor(id: number, socket: Socket, ctx: ConnectionContext) {
    this.id = id;
    this.#socket = socket;
    this.#ctx = ctx;
    this.#log = ctx.logger.child({ conn: id });
    this.#reader = new FramedReader(socket);
    this.#remote = `${socket.remoteAddress}:${socket.remotePort}`;
    this.#handshake = {
      token: ctx.token,
      extensions: ctx.extensions,
      platform: ctx.platform,
      limits: ctx.limits,
      newNonce,
    };
    this.#wire = {
      id,
      ctx,
      socket,
      reader: this.#reader,
      log: this.#log,
      signal: this.#abort.signal,
      granted: () => grantedOf(this.#state),
      manage: (on) => this.#setManaging(on),
      payloadDeadline: (length) => this.#payloadDeadline(length),
    };
    this.#intake = new JobIntake(this.#wire);
    socket.setNoDelay(true);
    // A peer whose host died or whose link broke mid-job is noticed even in base mode, which
    // has no heartbeat (the kernel probes an idle connection; a frozen but live host answers).
    socket.setKeepAlive(true, KEEPALIVE_MS);
    const gone = () => this.#abort.abort(CONNECTION_ENDED);
    socket.once('end', gone);
    socket.once('close', gone);
    socket.on('error', (err) => this.#log.debug({ err }, 'socket error'));
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

  /** True once {@link evict} closed it (it may still be cleaning up). */
  get evicted(): boolean {
    return this.#evicted;
  }

  /**
   * Closes a connection that has no job, to make room at `--max-connections` (the oldest
   * such one goes first: the likeliest to be a peer holding it open on purpose).
   */
  evict(maxConnections: number): void {
    this.#evicted = true;
    if (this.#outcome === 'ok') this.#outcome = 'evicted';
    this.#log.warn(
      { reason: 'max-connections', maxConnections, remote: this.#remote },
      'evicted: the oldest connection without a job, to make room for a new one',
    );
    this.#abort.abort(CONNECTION_ENDED);
    this.#socket.destroy();
  }

  /** Ends the connection now: kills its job, removes its directory (server shutdown). */
  shutdown(): void {
    if (this.#outcome === 'ok') this.#outcome = 'shutdown';
    this.#abort.abort(CONNECTION_ENDED);
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
      this.#watch?.unsubscribe();
      this.#abort.abort(CONNECTION_ENDED);
      this.#disposeSpool();
      this.#intake.settleExpected();
      await this.#intake.removeDir();
      await this.#close(linger);
      // A connection that ended well is routine (its jobs said how they ended, a cost poll
      // says nothing): it is logged at debug, so info stays one line per job (pino's
      // serialisation and a synchronous write each).
      this.#log[this.#outcome === 'ok' ? 'debug' : 'info'](
        {
          remote: this.#remote,
          outcome: this.#outcome,
          durationMs: Math.round(performance.now() - this.#started),
          bytesIn: this.#socket.bytesRead,
          bytesOut: this.#socket.bytesWritten,
          commands: this.#commands,
          costQueries: this.#costQueries,
          mode: modeOf(this.#state),
          ...(modeOf(this.#state) === 'extended'
            ? { extensions: [...grantedOf(this.#state)].join(',') }
            : {}),
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
      const h = await this.#reader.readHeaderOrEnd(limits, {
        deadlineMs: this.#ctx.messageTimeoutMs,
      });
      if (!h) return;
      const step = onHeader(this.#state, h, this.#handshake);
      this.#state = step.state;
      const effect = step.effect;
      switch (effect.kind) {
        case 'refuse':
          throw effect.error;
        case 'cost':
          this.#costQueries++;
          await write(
            this.#socket,
            costReply(
              h as Extract<Header, { kind: 'plain' }>,
              this.#ctx.cost(),
              this.#ctx.description,
            ),
          );
          break;
        case 'command':
          await this.#command(effect.length);
          if (effect.endsJob) await this.#intake.nextJob();
          break;
        case 'requirements':
          await this.#intake.requirements(effect.length);
          break;
        case 'extension':
          await this.#extension(effect.length, effect.maxBytes);
          break;
        case 'end':
          await this.#intake.removeDir();
          return;
        default:
          unreachable(effect, 'header effect');
      }
    }
  }

  /** The extensions the handshake granted (none in base mode). */
  get #ext(): ReadonlySet<Extension> {
    return grantedOf(this.#state);
  }

  /**
   * An `!X` message: the hello (only as a connection's first message), the answer to a
   * challenge, or a job's message (`have`, `cwd`, `lookup`). The handshake decides.
   */
  async #extension(length: number, maxBytes: number): Promise<void> {
    const handshake = this.#state.phase !== 'extended';
    const payload = await this.#reader.readPayload(
      length,
      maxBytes,
      handshake ? '!X handshake message' : '!X message',
      { deadlineMs: this.#payloadDeadline(length) },
    );
    const before = this.#state;
    const step = onExtension(before, payload, this.#handshake, {
      jobStarted: this.#intake.started,
    });
    this.#state = step.state;
    const effect = step.effect;
    switch (effect.kind) {
      case 'refuse':
        throw effect.error;
      case 'send': {
        if (before.phase === 'awaiting-first') {
          this.#log.debug({ phase: step.state.phase, granted: [...this.#ext].join(',') }, 'hello');
        } else {
          this.#log.debug('authenticated');
        }
        const message = encodeExtension(effect.message);
        // A push client that sent its job right behind the hello (`!R` or `!C` is already
        // here) is not waiting for this `ok`: it leaves with the reply, one write and one
        // wake-up of the client fewer (docs/protocol.md, "push").
        if (effect.mayHold && JOB_START.has(this.#reader.peek(2).toString('latin1'))) {
          hold(this.#socket, message);
        } else {
          await write(this.#socket, message);
        }
        return;
      }
      case 'job':
        return this.#intake.message(effect.message);
      case 'watch': {
        // Extension `load`: from now on the connection carries the server's load until the
        // client sends `!D` (the handshake refuses anything else).
        const feed = this.#ctx.load;
        const beatMs = this.#ctx.heartbeatMs;
        if (feed === undefined || beatMs === undefined) throw new Error('load without a feed');
        this.#setIdleTimeout(false);
        this.#log.debug('watching the load');
        this.#watch = watchLoad(this.#socket, feed, beatMs);
        return;
      }
      default:
        unreachable(effect, 'extension effect');
    }
  }

  /**
   * A command: read it (intake), answer it from a stored result if the client asked and one
   * is there, else run it in a job slot and send its reply.
   */
  async #command(length: number): Promise<void> {
    const limits = this.#ctx.limits;
    const command = await this.#intake.command(length);
    this.#commands++;
    this.#setManaging(true);
    const dir = this.#intake.dir();
    const lookup = await this.#intake.resultKey(dir, command);
    const resultKey = lookup.key;
    const only = lookup.only;
    // The lookup's listing of the job directory, while it still says what is there.
    let listing = lookup.listing;
    if (resultKey !== undefined) {
      const files = await sendStoredResult(this.#wire, resultKey, dir);
      if (typeof files === 'number') {
        this.#setManaging(false);
        this.#log.info({ command, key: resultKey, files }, 'result hit');
        return;
      }
      if (files === 'not-landed') listing = undefined;
    }
    if (only) {
      // `!X lookup only`: the client asks without wanting the job run here (it has other
      // hosts to ask, or will run it elsewhere). The miss is the reply; nothing runs.
      await write(this.#socket, encodeExtension({ verb: 'miss' }));
      this.#setManaging(false);
      this.#log.info(
        { command, ...(resultKey === undefined ? {} : { key: resultKey }) },
        'result miss (lookup only): not run',
      );
      return;
    }
    // The files the job will find, to tell its outputs from: read before it waits for a slot
    // (nothing else writes to this directory meanwhile), from the lookup's listing if there
    // was one, and not at all in a directory known to hold no file.
    const before = dir.noFiles
      ? noFiles()
      : (listing ?? (await listRegularFiles(dir.path, limits.maxFiles)));
    const cwd = this.#intake.runIn(dir);
    this.#setIdleTimeout(false);
    // Extension `beat`: from here to the reply, the client hears from us every interval.
    const stopBeats = this.#heartbeat();
    let slot: SlotHold | undefined;
    // Extension `queue`: a command that must wait for a slot is announced, and so is its start.
    const queued = this.#ext.has('queue') && !this.#ctx.slots.available;
    try {
      if (queued) await write(this.#socket, encodeExtension({ verb: 'queued' }));
      // A command that waits is made ready once it is next for a running job's slot, so that
      // the launcher starts it the moment that job ends (src/server/slots.ts).
      slot = await this.#ctx.slots.acquire(this.#abort.signal, () =>
        prepareJob(this.#ctx.launcher, command, cwd),
      );
    } catch (err) {
      stopBeats();
      if (err instanceof SlotWaitAborted) throw new ClientGone('client left while queued');
      throw err;
    }
    // The slot is for the command only: from here to its end nothing waits on the client,
    // the disk or the log.
    let outcome: JobOutcome;
    // Stdout past 256 KiB goes to a file, not the heap: a client that never reads its reply
    // must not make the server hold a finished job's 64 MiB (issue 17, defect 7).
    const spool = new StdoutSpool(join(this.#ctx.spoolDir, `${this.id}-${this.#commands}`));
    this.#spool = spool;
    try {
      // Not waited for: a client that does not read must not hold the slot (the bytes go
      // out in order, before the reply, whenever it reads).
      if (queued) write(this.#socket, encodeExtension({ verb: 'started' })).catch(() => {});
      // Until the listing after the job, the directory may hold anything.
      dir.small = false;
      dir.noFiles = false;
      dir.bare = false;
      this.#log.debug({ command }, 'job start');
      outcome = await runJob(
        {
          command,
          cwd,
          signal: this.#abort.signal,
          timeoutMs: this.#ctx.jobTimeoutMs,
          maxOutputBytes: limits.maxOutputBytes,
          stdoutSpool: spool,
          prepared: slot.prepared,
          started: (job) => slot?.running(job),
        },
        this.#ctx.launcher,
      );
    } finally {
      slot.release();
      stopBeats();
    }
    this.#setIdleTimeout(true);
    const end = { command, reason: outcome.reason, durationMs: outcome.durationMs };
    if (outcome.reason === 'aborted') {
      this.#log.info({ ...end, exitStatus: null }, 'job end');
      throw new ClientGone('client left during its job');
    }
    const reply = await sendReply(
      this.#wire,
      outcome,
      dir,
      before.ok ? before.files : new Map(),
      spool,
    );
    if (resultKey !== undefined && reply.exitCode === 0) {
      await storeResult(this.#wire, resultKey, dir, spool, outcome, reply.outputs);
    }
    this.#disposeSpool();
    this.#setManaging(false);
    this.#log.info(
      {
        ...end,
        exitStatus: reply.exitCode,
        bytesIn: this.#socket.bytesRead,
        bytesOut: this.#socket.bytesWritten,
        files: reply.files,
      },
      'job end',
    );
  }

  /**
   * With `beat` negotiated, sends `!X beat <ms>` every `<ms>` (the first after at most
   * {@link FIRST_BEAT_WITHIN_MS}) until the returned function is called, just before the
   * reply: a job shorter than that costs no write (a push client's held `ok` leaves with the
   * reply). The first beat also carries such an `ok`. A beat is skipped while the client is
   * not reading (the socket's buffer is full): bytes are already waiting for it.
   */
  #heartbeat(): () => void {
    const ms = this.#ctx.heartbeatMs;
    if (!this.#ext.has('beat') || ms === undefined) return () => {};
    const beat = encodeExtension({ verb: 'beat', intervalMs: ms });
    const send = () => {
      if (this.#socket.destroyed || this.#socket.writableNeedDrain) return;
      write(this.#socket, beat).catch(() => {});
    };
    const tick = () => {
      send();
      timer = setTimeout(tick, ms);
    };
    let timer = setTimeout(tick, Math.min(ms, FIRST_BEAT_WITHIN_MS));
    return () => clearTimeout(timer);
  }

  /**
   * Turns a failed conversation into its outcome: a vanished peer is cleaned up quietly, a
   * wire fault or a local error is refused with `!F` packets. Returns whether to linger.
   */
  async #fail(err: unknown): Promise<boolean> {
    if (err instanceof JobLost) {
      // No reply at all: to any client, base or ours, a host that drops a job before its
      // reply has failed, not the command, and the action is retried on another host.
      this.#outcome = 'error';
      this.#log.error(
        { reason: err.message },
        'job lost: dropping the connection so the client retries',
      );
      this.#socket.resetAndDestroy();
      return false;
    }
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
      const code = (e as NodeJS.ErrnoException).code;
      this.#log.error({ err: e }, 'error');
      // The log has the whole message; the peer gets none of it: a system error's message
      // names server paths (the workdir, the job directory and the server's pid in it).
      message = `rakeserver: error: a local failure on this server${code === undefined ? '' : ` (${code})`} while serving connection ${this.id}; the server's log has the details\n`;
    }
    try {
      await sendFailure(this.#wire, message, REFUSAL_EXIT_CODE);
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

  /**
   * How long a message's payload may take once its header is in: the message timeout, plus
   * a second per 64 KiB (a 1 MiB command on a 64 KiB/s link). Trickling does not extend it.
   */
  #payloadDeadline(length: number): number | undefined {
    const ms = this.#ctx.messageTimeoutMs;
    return ms === undefined ? undefined : ms + Math.ceil(length / 65536) * 1000;
  }

  #disposeSpool(): void {
    this.#spool?.dispose();
    this.#spool = undefined;
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
