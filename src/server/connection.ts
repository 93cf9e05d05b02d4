import type { Socket } from 'node:net';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import type { Subscription } from 'rxjs';
import { entryOf } from '../cache/job.js';
import type { LocalCache } from '../cache/store.js';
import {
  type Extension,
  type ExtensionMessage,
  encodeExtension,
  encodeHeader,
  encodePacket,
  FIRST_BEAT_WITHIN_MS,
  FLAGS,
  FramedReader,
  type HaveEntry,
  type Header,
  hold,
  isProtocolError,
  newNonce,
  ProtocolError,
  type ProtocolLimits,
  prepareInside,
  receiveFilestream,
  sendFilestream,
  type Token,
  wireNameSegments,
  write,
} from '../protocol/index.js';
import { unreachable } from '../util/unreachable.js';
import type { InputCache } from './cache.js';
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
import { type JobOutcome, runJob } from './job.js';
import { type JobDirs, layoutOf } from './jobdirs.js';
import type { Launcher } from './launcher.js';
import { type LoadFeed, watchLoad } from './load.js';
import { changedFiles, isSmallListing, listRegularFiles, StdoutSpool } from './outputs.js';
import { landResult, serverResultKey } from './results.js';
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

/**
 * The reason every connection's AbortController is aborted with: nothing reads it, and
 * `abort()` without one builds a DOMException with a stack trace, about 0.15 ms of server
 * CPU per connection here.
 */
const CONNECTION_ENDED = new Error('the connection ended');

/** How a job starts on the wire: its requirements, or its command. */
const JOB_START = new Set(['!R', '!C']);

/** What a connection needs from its server; the server owns the shared state. */
export interface ConnectionContext {
  readonly logger: Logger;
  readonly limits: ServerLimits;
  readonly workdir: string;
  /** Where jobs' large stdout is spooled (a directory of this server's, not a job's). */
  readonly spoolDir: string;
  readonly jobTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /**
   * A message (header and payload, not a file's bytes) must be whole this long after its
   * first byte, however its bytes trickle; `undefined` = no deadline.
   */
  readonly messageTimeoutMs: number | undefined;
  /** Interval of `!X beat` (extension `beat`); `undefined`: the extension is off. */
  readonly heartbeatMs: number | undefined;
  readonly slots: JobSlots;
  /** Starts the jobs' shells. */
  readonly launcher: Launcher;
  /** Hands out (and takes back) the job directories. */
  readonly jobDirs: JobDirs;
  /** The cost to report: jobs being managed + the configured offset. */
  cost(): number;
  /** Counts a connection into, or out of, the jobs being managed. */
  manage(delta: 1 | -1): void;
  /** True once the server is shutting down: finish the current job, take no new one. */
  closing(): boolean;
  /** Set: clients must prove they know it (extension `auth`); base-mode clients cannot run jobs. */
  readonly token: Token | undefined;
  /** The input cache (extension `cache`), if on. */
  readonly cache: InputCache | undefined;
  /**
   * Results of the jobs this server ran, by the server's own key (extension `results`, the
   * shared action cache), if on. Only this connection class writes to it, after a job of its
   * own succeeded: no message of a client inserts an entry.
   */
  readonly results?: LocalCache | undefined;
  /** The server's load, for connections that watch it (extension `load`). */
  readonly load?: LoadFeed;
  /** Extensions this server grants a client that asks (never `auth`: that is `token`). */
  readonly extensions: ReadonlySet<Extension>;
  /** The annex of a cost reply to our client's offer: `rake/1 v=… ext=…`. */
  readonly description: string;
  /**
   * What kind of host this is (`os`, `arch`, the operator's `--platform` labels): said in the
   * `ok` to a client that asks (`platform?`), for its action cache's key.
   */
  readonly platform?: Readonly<Record<string, string>>;
}

/** How a connection ended, for its log line. */
type ConnectionOutcome =
  | 'ok'
  | 'vanished'
  | 'refused'
  | 'error'
  | 'shutdown'
  | 'idle-timeout'
  | 'evicted';

/** How long a job waits for another connection's upload of a file it also needs. */
const CACHE_WAIT_MS = 30_000;

/** Largest stdout a stored result keeps (extension `results`): read into memory to store. */
const MAX_RESULT_STDOUT_BYTES = 16 * 1024 * 1024;

/** The client went away while we were waiting on it or running its job. */
class ClientGone extends Error {
  override readonly name = 'ClientGone';
}

/** The server lost a job (its spawner died): the connection is dropped, and the client retries. */
class JobLost extends Error {
  override readonly name = 'JobLost';
}

const LINGER_MS = 1000;

/** Idle time before TCP keepalive probes start, on every connection. */
const KEEPALIVE_MS = 30_000;

/** `text` with the server's workdir (and so every job directory in it) as `<workdir>`. */
function withoutPaths(text: string, workdir: string): string {
  return text.split(workdir).join('<workdir>');
}

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
  /** A job directory was made (requirements, a `have` or a command came). */
  #hadDir = false;
  /** The job directory is known to hold few files (it can be removed synchronously). */
  #smallDir = true;
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
  /** Extension `cwd`: the job directory's subdirectory the command runs in (`!X cwd`). */
  #cwd: string | undefined;
  /** Extension `results`: the next command may be answered from the stored results. */
  #lookup = false;
  /** `!X watch` came: the load stream sent on this connection (extension `load`). */
  #watch: Subscription | undefined;
  /** Files the last `!X have` asked the client to upload, by wire name, to cache on arrival. */
  readonly #expected = new Map<string, { entry: HaveEntry; settle: (() => void) | undefined }>();

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
      this.#settleExpected();
      await this.#removeDir();
      await this.#close(linger);
      // A connection that only asked for costs (the client's polls: one or more per action)
      // is routine; it is logged at debug so info stays one line per job.
      const routine = this.#outcome === 'ok' && this.#commands === 0 && !this.#hadDir;
      this.#log[routine ? 'debug' : 'info'](
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
          if (effect.endsJob) await this.#nextJob();
          break;
        case 'requirements':
          await this.#requirements(effect.length);
          break;
        case 'extension':
          await this.#extension(effect.length, effect.maxBytes);
          break;
        case 'end':
          await this.#removeDir();
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
    const step = onExtension(before, payload, this.#handshake, { jobStarted: this.#hadDir });
    this.#state = step.state;
    const effect = step.effect;
    switch (effect.kind) {
      case 'refuse':
        throw effect.error;
      case 'send': {
        if (before.phase === 'awaiting-first') {
          this.#log.debug({ phase: step.state.phase, granted: [...this.#ext].join(',') }, 'hello');
        } else {
          this.#log.info('authenticated');
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
        return this.#jobMessage(effect.message);
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

  /** `!X lookup`, `!X cwd`, `!X have` on an extended connection. */
  async #jobMessage(msg: ExtensionMessage): Promise<void> {
    if (msg.verb === 'lookup') {
      this.#lookup = true;
      return;
    }
    if (msg.verb === 'cwd') {
      // Extension `cwd`: where the next command runs, inside the job directory.
      this.#cwd = wireNameSegments(msg.path).join('/');
      return;
    }
    if (msg.verb !== 'have') return;
    await this.#have(msg.entries);
  }

  /**
   * `!X have`: copies every listed file the cache holds into the job directory, and
   * answers `!X need` with the others (in the order listed), which the client then uploads.
   * A file another connection is uploading right now is waited for rather than needed.
   */
  async #have(entries: readonly HaveEntry[]): Promise<void> {
    const cache = this.#ctx.cache;
    if (cache === undefined) throw new Error('have without a cache');
    this.#setManaging(true);
    const dir = await this.#ensureDir(layoutOf(entries.map((e) => e.name)));
    this.#settleExpected();
    if (entries.length >= 64) this.#smallDir = false;
    const withMode = this.#ext.has('mode');
    const found = await Promise.all(
      entries.map(async (entry) => {
        const path = await prepareInside(dir, entry.name);
        const lease = await cache.lease(
          entry.sha256,
          entry.size,
          CACHE_WAIT_MS,
          this.#abort.signal,
        );
        if (lease === undefined) return false;
        try {
          await cache.materialize(lease, path, withMode ? entry.mode : undefined);
          return true;
        } catch (err) {
          this.#log.warn({ name: entry.name, err }, 'cannot copy a cached file: asking for it');
          return false;
        } finally {
          lease.release();
        }
      }),
    );
    if (this.#abort.signal.aborted)
      throw new ClientGone('client left while its inputs were copied');
    const need: string[] = [];
    entries.forEach((entry, i) => {
      if (found[i]) return;
      need.push(entry.name);
      this.#expected.set(entry.name, { entry, settle: cache.claim(entry.sha256) });
    });
    this.#log.debug(
      { listed: entries.length, cached: entries.length - need.length, need: need.length },
      'have',
    );
    await write(this.#socket, encodeExtension({ verb: 'need', names: need }));
  }

  /**
   * Extension `reuse`: a job ends with its reply. Its directory is given back and nothing of
   * it (`cwd`, `lookup`, a `have`'s claims) carries over; the next `have`, `!R` or `!C` on
   * this connection starts a new job in a new directory. Without `reuse`, a later command
   * runs in the same directory, as in base mode.
   */
  async #nextJob(): Promise<void> {
    if (!this.#ext.has('reuse')) return;
    this.#settleExpected();
    this.#cwd = undefined;
    this.#lookup = false;
    await this.#removeDir();
    this.#smallDir = true;
  }

  /** Ends the claims of a `have` whose uploads did not all arrive. */
  #settleExpected(): void {
    for (const { settle } of this.#expected.values()) settle?.();
    this.#expected.clear();
  }

  async #requirements(length: number): Promise<void> {
    const limits = this.#ctx.limits;
    // `!R` carries no payload in base mode; tolerate one (bounded) and ignore it.
    await this.#reader.readPayload(length, limits.maxCommandBytes, '!R payload', {
      deadlineMs: this.#payloadDeadline(length),
    });
    this.#setManaging(true);
    const dir = await this.#ensureDir();
    const files = await receiveFilestream(this.#reader, this.#socket, {
      resolve: (name) => prepareInside(dir, name),
      limits,
      modes: this.#ext.has('mode'),
      push: this.#ext.has('push'),
    });
    if (files.length + this.#expected.size >= 64) this.#smallDir = false;
    this.#log.debug(
      { files: files.length, bytes: files.reduce((n, f) => n + f.size, 0) },
      'requirements received',
    );
    await this.#cacheUploads(files);
  }

  /**
   * Caches the uploads a `have` announced, each only if the server's own hash of the bytes
   * matches the client's claim; then lets waiting connections go on.
   */
  async #cacheUploads(
    files: readonly { name: string; path: string; size: number }[],
  ): Promise<void> {
    const cache = this.#ctx.cache;
    if (cache === undefined || this.#expected.size === 0) return;
    for (const file of files) {
      const expected = this.#expected.get(file.name);
      if (expected === undefined) continue;
      this.#expected.delete(file.name);
      try {
        const result = await cache.insert(expected.entry.sha256, expected.entry.size, file.path);
        if (result === 'mismatch' || result === 'wrong-size') {
          this.#log.warn(
            { name: file.name, claimed: expected.entry.sha256, result },
            'upload does not match its announced hash: not cached',
          );
        }
      } catch (err) {
        this.#log.warn({ name: file.name, err }, 'cannot cache an upload');
      } finally {
        expected.settle?.();
      }
    }
    this.#settleExpected();
  }

  async #command(length: number): Promise<void> {
    const limits = this.#ctx.limits;
    const command = (
      await this.#reader.readPayload(length, limits.maxCommandBytes, 'command', {
        deadlineMs: this.#payloadDeadline(length),
      })
    ).toString('utf8');
    this.#commands++;
    this.#setManaging(true);
    const dir = await this.#ensureDir();
    const resultKey = await this.#resultKey(dir, command);
    if (resultKey !== undefined && (await this.#answerFromResults(resultKey, dir, command))) return;
    this.#setIdleTimeout(false);
    // Extension `beat`: from here to the reply, the client hears from us every interval.
    const stopBeats = this.#heartbeat();
    let release: (() => void) | undefined;
    // Extension `queue`: a command that must wait for a slot is announced, and so is its start.
    const queued = this.#ext.has('queue') && !this.#ctx.slots.available;
    try {
      if (queued) await write(this.#socket, encodeExtension({ verb: 'queued' }));
      release = await this.#ctx.slots.acquire(this.#abort.signal);
    } catch (err) {
      stopBeats();
      if (err instanceof SlotWaitAborted) throw new ClientGone('client left while queued');
      throw err;
    }
    let outcome: JobOutcome;
    let before: Awaited<ReturnType<typeof listRegularFiles>>;
    // Stdout past 256 KiB goes to a file, not the heap: a client that never reads its reply
    // must not make the server hold a finished job's 64 MiB (issue 17, defect 7).
    const spool = new StdoutSpool(join(this.#ctx.spoolDir, `${this.id}-${this.#commands}`));
    this.#spool = spool;
    try {
      if (queued) await write(this.#socket, encodeExtension({ verb: 'started' }));
      before = await listRegularFiles(dir, limits.maxFiles);
      // Until the listing after the job, the directory may hold anything.
      this.#smallDir = false;
      this.#log.info({ command }, 'job start');
      outcome = await runJob(
        {
          command,
          // Made here, with its parents, refusing symlinks and files on the way.
          cwd: this.#cwd === undefined ? dir : dirname(prepareInside(dir, `${this.#cwd}/.cwd`)),
          signal: this.#abort.signal,
          timeoutMs: this.#ctx.jobTimeoutMs,
          maxOutputBytes: limits.maxOutputBytes,
          stdoutSpool: spool,
        },
        this.#ctx.launcher,
      );
    } finally {
      release();
      stopBeats();
    }
    this.#setIdleTimeout(true);
    const end = { command, reason: outcome.reason, durationMs: outcome.durationMs };
    if (outcome.reason === 'aborted') {
      this.#log.info({ ...end, exitStatus: null }, 'job end');
      throw new ClientGone('client left during its job');
    }
    const reply = await this.#reply(outcome, dir, before.ok ? before.files : new Map(), spool);
    if (resultKey !== undefined && reply.exitCode === 0) {
      await this.#storeResult(resultKey, dir, spool, outcome, reply.outputs);
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

  /** Sends the reply for a finished job; returns what the log line needs. */
  async #reply(
    outcome: Exclude<JobOutcome, { reason: 'aborted' }>,
    dir: string,
    before: Parameters<typeof changedFiles>[0],
    spool: StdoutSpool,
  ): Promise<{ exitCode: number; files: number; outputs?: readonly string[] }> {
    const limits = this.#ctx.limits;
    switch (outcome.reason) {
      case 'spawn-error':
        return this.#failure(
          `rakeserver: cannot start /bin/sh: ${withoutPaths(outcome.error.message, this.#ctx.workdir)}\n`,
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
      case 'refused':
        return this.#failure(`rakeserver: refused: ${outcome.message}\n`, REFUSAL_EXIT_CODE);
      case 'lost':
        throw new JobLost(outcome.message);
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
    this.#smallDir = isSmallListing(after);
    if (!after.ok) {
      return this.#failure(
        `rakeserver: refused: the job left more than ${after.limit} files\n`,
        REFUSAL_EXIT_CODE,
      );
    }
    if (after.notUtf8.length > 0) {
      // The wire carries UTF-8 names: say so rather than leave the files behind unsaid.
      const shown = after.notUtf8.slice(0, 10).join(', ');
      return this.#failure(
        `rakeserver: refused: the command wrote ${after.notUtf8.length} file name(s) that are not UTF-8, which the protocol cannot carry: ${shown}${after.notUtf8.length > 10 ? ', …' : ''}; give them UTF-8 names\n`,
        REFUSAL_EXIT_CODE,
      );
    }
    const outputs = changedFiles(before, after.files);
    const flags = outputs.length > 0 ? FLAGS.stdoutAndFiles : FLAGS.stdout;
    // Extension `stderr`: a successful job's warnings travel just before its reply.
    const warnings =
      this.#ext.has('stderr') && outcome.stderr.length > 0
        ? [encodeExtension({ verb: 'stderr', bytes: outcome.stderr })]
        : [];
    await this.#writeAll([
      ...warnings,
      encodeHeader({ kind: 'flagged', flags, length: outcome.stdoutBytes }),
    ]);
    // From memory in the same tick (one write with the header), or read back from the spool
    // file 256 KiB at a time, each read waiting until the socket has taken the last.
    for await (const chunk of spool.read()) await write(this.#socket, chunk);
    if (outputs.length > 0) {
      await sendFilestream(
        this.#socket,
        this.#reader,
        outputs.map((name) => ({ name, path: join(dir, ...name.split('/')) })),
        { noFollow: true, modes: this.#ext.has('mode'), push: this.#ext.has('push') },
      );
    }
    return { exitCode: 0, files: outputs.length, outputs };
  }

  /**
   * Extension `results`: the server's key of the command about to run, when the client
   * asked (`!X lookup` just before it) and this server keeps results; else `undefined`.
   * Computed before the command runs, from what the job directory holds then.
   */
  async #resultKey(dir: string, command: string): Promise<string | undefined> {
    const asked = this.#lookup;
    this.#lookup = false;
    const results = this.#ctx.results;
    const platform = this.#ctx.platform;
    if (!asked || results === undefined || platform === undefined) return undefined;
    const listing = await listRegularFiles(dir, this.#ctx.limits.maxFiles);
    if (!listing.ok || listing.notUtf8.length > 0) return undefined;
    return serverResultKey(dir, listing.files.keys(), command, this.#cwd, platform);
  }

  /**
   * A stored result of `key`, if any, landed in the job directory and sent as the job's
   * reply behind `!X hit <key>`: nothing runs, no slot is taken. False on a miss (or when
   * the entry cannot be landed: the job then runs).
   */
  async #answerFromResults(key: string, dir: string, command: string): Promise<boolean> {
    const entry = this.#ctx.results?.get(key);
    if (entry === undefined) {
      this.#log.debug({ key }, 'result miss');
      return false;
    }
    if (entry.files.length >= 64) this.#smallDir = false;
    try {
      await landResult(dir, entry);
    } catch (err) {
      this.#log.warn({ key, err }, 'cannot land a stored result: running the job');
      return false;
    }
    const names = entry.files.map((f) => f.name);
    const flags = names.length > 0 ? FLAGS.stdoutAndFiles : FLAGS.stdout;
    await this.#writeAll([
      encodeExtension({ verb: 'hit', key }),
      encodeHeader({ kind: 'flagged', flags, length: entry.stdout.length }),
      entry.stdout,
    ]);
    if (names.length > 0) {
      await sendFilestream(
        this.#socket,
        this.#reader,
        names.map((name) => ({ name, path: join(dir, ...name.split('/')) })),
        { noFollow: true, modes: this.#ext.has('mode'), push: this.#ext.has('push') },
      );
    }
    this.#setManaging(false);
    this.#log.info({ command, key, files: names.length }, 'result hit');
    return true;
  }

  /** A successful job's stdout and output files stored under the server's key. */
  async #storeResult(
    key: string,
    dir: string,
    spool: StdoutSpool,
    outcome: Exclude<JobOutcome, { reason: 'aborted' }>,
    outputs: readonly string[] | undefined,
  ): Promise<void> {
    const results = this.#ctx.results;
    if (results === undefined || outcome.reason !== 'exited') return;
    if (outcome.stdoutBytes > MAX_RESULT_STDOUT_BYTES) return;
    const chunks: Buffer[] = [];
    for await (const chunk of spool.read()) chunks.push(Buffer.from(chunk));
    const entry = entryOf(dir, Buffer.concat(chunks), outputs ?? []);
    if (entry !== undefined && results.put(key, entry)) {
      this.#log.debug({ key, files: entry.files.length }, 'result stored');
    }
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

  /**
   * Writes `buffers` in one system call with whatever else is written in the same tick: a
   * reply's header, its stdout and (with `push`) its output files go out together.
   */
  async #writeAll(buffers: readonly Uint8Array[]): Promise<void> {
    for (const b of buffers) await write(this.#socket, b);
  }

  /**
   * The connection's job directory, taken on first use. `layout`: the subdirectories its
   * files will need, when known up front (a `have` list), so a spare directory that already
   * has them can be used.
   */
  async #ensureDir(layout?: readonly string[]): Promise<string> {
    this.#hadDir = true;
    this.#dir ??= this.#ctx.jobDirs.take(this.id, layout);
    return this.#dir;
  }

  async #removeDir(): Promise<void> {
    const dir = this.#dir;
    if (dir === undefined) return;
    this.#dir = undefined;
    try {
      await this.#ctx.jobDirs.give(dir, { small: this.#smallDir });
    } catch (err) {
      this.#log.error({ dir, err }, 'cannot remove job directory');
    }
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
