// What a connection shares with its server (`ConnectionContext`), and what the connection's
// concerns — job intake (intake.ts) and the reply (reply.ts) — share with it (`Wire`).
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { LocalCache } from '../cache/store.js';
import type { Extension, FramedReader, ProtocolLimits, Token } from '../protocol/index.js';
import type { InputCache } from './cache.js';
import type { JobDirs } from './jobdirs.js';
import type { Launcher } from './launcher.js';
import type { LoadFeed } from './load.js';
import type { JobSlots } from './slots.js';

/** Limits the server enforces: the wire limits plus the cap on captured output. */
export interface ServerLimits extends ProtocolLimits {
  /** Cap on a job's captured stdout, and separately on its stderr, in bytes. */
  readonly maxOutputBytes: number;
}

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

/**
 * One connection as its concerns see it: the socket and its reader, the log, and what the
 * handshake granted. The connection (connection.ts) makes it; intake and reply only use it.
 */
export interface Wire {
  readonly id: number;
  readonly ctx: ConnectionContext;
  readonly socket: Socket;
  readonly reader: FramedReader;
  readonly log: Logger;
  /** Aborted when the connection ends (the client left, eviction, shutdown). */
  readonly signal: AbortSignal;
  /** The extensions the handshake granted (none in base mode). */
  granted(): ReadonlySet<Extension>;
  /** Counts the connection into (`true`) or out of the jobs being managed (the cost). */
  manage(on: boolean): void;
  /**
   * How long a message's payload may take once its header is in: the message timeout, plus
   * a second per 64 KiB (a 1 MiB command on a 64 KiB/s link). Trickling does not extend it.
   */
  payloadDeadline(length: number): number | undefined;
}

/** A connection's job directory while it has one. */
export interface JobDir {
  readonly path: string;
  /** Known to hold few files: it can be removed synchronously when given back. */
  small: boolean;
  /**
   * Known to hold no regular file a listing would find (as taken, or as the listing after
   * the last job found it, and nothing received since): the listing before a command is
   * skipped, it would find nothing.
   */
  noFiles: boolean;
  /**
   * Known to hold nothing at all (the listing after the last job read it empty, and nothing
   * was received or made in it since): with `reuse` the connection keeps it for its next
   * job, and giving it back needs no walk.
   */
  bare: boolean;
}

/** The client went away while we were waiting on it or running its job. */
export class ClientGone extends Error {
  override readonly name = 'ClientGone';
}

/** The server lost a job (its spawner died): the connection is dropped, and the client retries. */
export class JobLost extends Error {
  override readonly name = 'JobLost';
}
