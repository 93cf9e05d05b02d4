import { createHash } from 'node:crypto';
import { createReadStream, readFileSync, statSync } from 'node:fs';
import type { Socket } from 'node:net';
import {
  type Extension,
  encodeExtension,
  FIRST_BEAT_WITHIN_MS,
  type HaveEntry,
  PROTOCOL_TAG,
  parseExtension,
  parseServerDescription,
} from '../protocol/extensions.js';
import type { OutgoingFile } from '../protocol/filestream.js';
import { describeHeader, type Header } from '../protocol/header.js';
import type { ProtocolLimits } from '../protocol/limits.js';
import type { FramedReader } from '../protocol/reader.js';
import { write } from '../protocol/socket-writes.js';
import type { Token } from '../protocol/token.js';
import { type Endpoint, hostKey } from './endpoint.js';
import { HelloRefused, JobError, TokenRefused } from './errors.js';

/**
 * What a host said about itself in its last cost reply: a base-mode server (the reference
 * `rakeserver`, or anything that did not answer our offer), or one of ours with its
 * version and the extensions it has on. `rake-ts hosts` shows it; jobs use it to decide
 * whether to say hello.
 */
export type PeerInfo =
  | { readonly kind: 'base' }
  | {
      readonly kind: 'rake';
      readonly protocol: string;
      readonly version?: string;
      /** Extensions the server has on (`auth` included when it requires a token). */
      readonly extensions: readonly Extension[];
      readonly authRequired: boolean;
      /** The jobs the server runs at once, when it said (`slots=`). */
      readonly slots?: number;
    };

/** Reads the annex of a cost reply (docs/protocol.md, "Offer and self-description"). */
export function peerFromAnnex(annex: string | undefined): PeerInfo {
  const d = parseServerDescription(annex);
  if (d === undefined) return { kind: 'base' };
  return {
    kind: 'rake',
    protocol: d.protocol,
    ...(d.version === undefined ? {} : { version: d.version }),
    extensions: d.extensions,
    authRequired: d.extensions.includes('auth'),
    ...(d.slots === undefined ? {} : { slots: d.slots }),
  };
}

/** `base`, or `rake/1 0.1.0 slots=2 stderr,mode,cache,auth`: one line for logs and `hosts`. */
export function describePeer(peer: PeerInfo): string {
  if (peer.kind === 'base') return 'base protocol';
  const slots = peer.slots === undefined ? undefined : `slots=${peer.slots}`;
  return [peer.protocol, peer.version, slots, peer.extensions.join(',') || 'no extensions']
    .filter((s) => s !== undefined)
    .join(' ');
}

/**
 * What each endpoint said last, for one transport (one run): filled by every cost query,
 * read by every job.
 */
export class PeerDirectory {
  readonly #known = new Map<string, PeerInfo>();
  readonly #endpoints = new Map<string, Endpoint>();

  record(endpoint: Endpoint, peer: PeerInfo): void {
    this.#known.set(hostKey(endpoint), peer);
    this.#endpoints.set(hostKey(endpoint), endpoint);
  }

  get(endpoint: Endpoint): PeerInfo | undefined {
    return this.#known.get(hostKey(endpoint));
  }

  /** Every host that described itself in this run (answered a cost query). */
  endpoints(): Endpoint[] {
    return [...this.#endpoints.values()];
  }
}

/** The extensions this client implements (`auth` is added when it holds a token). */
export const CLIENT_EXTENSIONS: readonly Extension[] = [
  'stderr',
  'mode',
  'cache',
  'push',
  'cwd',
  'queue',
  'beat',
  'results',
];

/** Heartbeats a host may miss in a row before the client takes it as lost. */
export const MISSED_BEATS = 3;

/**
 * The interval assumed until the first beat says the real one: a server sends its first beat
 * within this of reading the command ({@link FIRST_BEAT_WITHIN_MS}).
 */
export const DEFAULT_BEAT_MS = FIRST_BEAT_WITHIN_MS;

/** How long a hello, a challenge or a `have` may go unanswered before the host counts as lost. */
export const HANDSHAKE_TIMEOUT_MS = 30_000;

/**
 * The hello on a fresh job connection to a rake/1 host, and the challenge if the server
 * has a token. Resolves the extensions granted. A refusal is a `protocol-error` JobError
 * with a message that says what to do ("… requires a token: pass --token-file …").
 */
export async function negotiate(
  socket: Socket,
  reader: FramedReader,
  options: {
    readonly endpoint: Endpoint;
    readonly token: Token | undefined;
    readonly limits: ProtocolLimits;
    /**
     * What to send right behind the hello, without waiting for its answer: a `have` (to a
     * host whose cost reply said it has `cache` and wants no token), or with `push` the
     * whole job (`!R`, the files, `!C`): one round trip less per job. The caller reads the
     * answer to it after this resolves.
     */
    readonly followUp?: Uint8Array | (() => Promise<unknown>);
    /**
     * The follow-up is a whole job: a server may hold its `ok` back and send it with the
     * reply (docs/protocol.md, "push"), so the `ok` is not bounded by the handshake timeout.
     */
    readonly okWithReply?: boolean;
    /**
     * The host said it has `beat`: the held `ok` leaves with its first heartbeat at the
     * latest, so its wait is bounded as a heartbeat's is (a host that froze is lost).
     */
    readonly okWithinBeats?: boolean;
    /**
     * Ask for the server's platform (`platform?` in the hello) and hand over what its `ok`
     * says (`undefined`: it did not say; an older server).
     */
    readonly onPlatform?: (platform: Readonly<Record<string, string>> | undefined) => void;
    /** Ask for `reuse` too: the connection may carry more jobs (the client pools it). */
    readonly reuse?: boolean;
  },
): Promise<ReadonlySet<Extension>> {
  const host = hostKey(options.endpoint);
  const asked: Extension[] = [
    ...CLIENT_EXTENSIONS,
    ...(options.token ? (['auth'] as const) : []),
    ...(options.reuse === true ? (['reuse'] as const) : []),
  ];
  await write(
    socket,
    encodeExtension({
      verb: 'hello',
      protocol: PROTOCOL_TAG,
      extensions: asked,
      ...(options.onPlatform === undefined ? {} : { wantsPlatform: true }),
    }),
  );
  const followUp = options.followUp;
  if (typeof followUp === 'function') await followUp();
  else if (followUp !== undefined) await write(socket, followUp);
  const held = options.okWithReply === true;
  const first = readExtension(reader, options.limits, ['ok', 'challenge'], host, 'hello', !held);
  let reply = await (held && options.okWithinBeats === true
    ? silenceBound(first, host, DEFAULT_BEAT_MS)
    : first);
  if (reply.verb === 'challenge') {
    const token = options.token;
    if (token === undefined) {
      throw new TokenRefused(
        `rakeserver at ${host} requires a token (it sent a challenge): pass --token-file or set RAKE_TOKEN`,
      );
    }
    await write(socket, encodeExtension({ verb: 'auth', proof: token.proof(reply.nonce) }));
    reply = await readExtension(reader, options.limits, ['ok'], host, 'auth');
  }
  if (reply.verb !== 'ok') throw new Error('unreachable: ok expected');
  options.onPlatform?.(reply.platform);
  return new Set(reply.extensions.filter((e) => asked.includes(e)));
}

/** `!X miss`: the answer to `!X lookup only` when the host stores no result; nothing ran. */
export class ResultMissed extends Error {
  constructor(host: string) {
    super(`${host} stores no result of this command`);
  }
}

/** A refusal during the handshake, in words that say what to do about it. */
function refusalMessage(host: string, step: 'hello' | 'auth', message: string): string {
  if (/unauthenticated/.test(message)) {
    return step === 'hello'
      ? `rakeserver at ${host} requires a token: pass --token-file or set RAKE_TOKEN`
      : `rakeserver at ${host} refused the token: pass its token with --token-file or RAKE_TOKEN`;
  }
  return `rakeserver at ${host} refused the ${step}: ${message}`;
}

/** Reads an `!X` message due now; a `!F` refusal becomes a JobError with a clear message. */
async function readExtension<V extends 'ok' | 'challenge' | 'need'>(
  reader: FramedReader,
  limits: ProtocolLimits,
  verbs: readonly V[],
  host: string,
  step: 'hello' | 'auth' | 'have',
  bounded = true,
) {
  const h = await (bounded
    ? withTimeout(reader.readHeader(limits), host, step)
    : reader.readHeader(limits));
  if (h.kind === 'plain' && h.code === '!F') {
    const message = (await reader.readPayload(h.length, 64 * 1024, 'refusal'))
      .toString('utf8')
      .trim();
    if (step !== 'have' && /unauthenticated/.test(message)) {
      throw new TokenRefused(refusalMessage(host, step, message));
    }
    if (step === 'hello') throw new HelloRefused(refusalMessage(host, step, message));
    throw new JobError(
      'protocol-error',
      step === 'have'
        ? `rakeserver at ${host} refused the have: ${message}`
        : refusalMessage(host, step, message),
      true,
    );
  }
  if (!(h.kind === 'plain' && h.code === '!X')) {
    throw new JobError(
      'protocol-error',
      `rakeserver at ${host}: expected an !X ${verbs.join(' or ')}, received ${describeHeader(h)}`,
      true,
    );
  }
  const payload = await reader.readPayload(h.length, limits.maxCommandBytes, '!X message');
  return parseExtension(payload, verbs, limits) as Extract<
    ReturnType<typeof parseExtension>,
    { verb: V }
  >;
}

function withTimeout<T>(work: Promise<T>, host: string, step: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(
      () =>
        reject(
          new JobError(
            'host-lost',
            `rakeserver at ${host} did not answer the ${step} within ${HANDSHAKE_TIMEOUT_MS} ms`,
            true,
          ),
        ),
      HANDSHAKE_TIMEOUT_MS,
    );
    timer.unref();
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** Files up to this size are hashed with one synchronous read; larger ones are streamed. */
const SYNC_HASH_MAX_BYTES = 1024 * 1024;

/**
 * Hashes requirement contents for `!X have`, once per file per run: keyed by path, size,
 * mtime, ctime and inode, so the 1 MiB header a hundred actions require is read once. The
 * `stat` and the read of a small file are synchronous: on the event loop they cost less
 * than the thread-pool handoffs of `fs/promises` and a read stream. A larger file is
 * streamed, so the event loop is never held for long.
 */
export class ContentHasher {
  readonly #memo = new Map<string, Promise<{ sha256: string; size: number }>>();

  /**
   * The `have` line of a file, or `undefined` for a name a line cannot carry or a file
   * under `minBytes` (not worth offering: see {@link CACHE_MIN_BYTES}).
   */
  async entry(file: OutgoingFile, minBytes = 0): Promise<HaveEntry | undefined> {
    if (file.name.includes('\n')) return undefined;
    const st = statSync(file.path, { bigint: true });
    if (st.size < BigInt(minBytes)) return undefined;
    const key = `${file.path}\0${st.size}\0${st.mtimeNs}\0${st.ctimeNs}\0${st.ino}`;
    let hashed = this.#memo.get(key);
    if (hashed === undefined) {
      hashed = st.size <= SYNC_HASH_MAX_BYTES ? hashSmallFile(file.path) : hashFile(file.path);
      this.#memo.set(key, hashed);
      hashed.catch(() => this.#memo.delete(key));
    }
    const { sha256, size } = await hashed;
    return { sha256, size, mode: Number(st.mode & 0o777n), name: file.name };
  }
}

function hashSmallFile(path: string): Promise<{ sha256: string; size: number }> {
  try {
    const bytes = readFileSync(path);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    return Promise.resolve({ sha256, size: bytes.length });
  } catch (err) {
    return Promise.reject(err);
  }
}

async function hashFile(path: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 256 * 1024 })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), size };
}

/** A `have` list stays well under the server's default 1 MiB message limit. */
const MAX_HAVE_BYTES = 512 * 1024;

/** A `have` message and the entries it lists; undefined when no file can be listed. */
export interface HaveOffer {
  readonly entries: readonly HaveEntry[];
  readonly message: Uint8Array;
}

/**
 * With `push`, the smallest requirement the client asks the cache about: a smaller one costs
 * less to send than the round trip of `have` → `need` (64 KiB is half a millisecond at
 * 1 Gb/s, a round trip on most LANs), and leaving every file of a job out of the `have`
 * lets the job follow its hello at once (docs/protocol.md, "push").
 */
export const CACHE_MIN_BYTES = 64 * 1024;

/**
 * Names each file by content for `!X have` (as many as fit in one message), leaving out
 * files under `minBytes`: they are uploaded, unlisted, as the server lacked them.
 */
export async function haveOffer(
  files: readonly OutgoingFile[],
  hasher: ContentHasher,
  minBytes = 0,
): Promise<HaveOffer | undefined> {
  const entries: HaveEntry[] = [];
  let bytes = 4;
  for (const file of files) {
    const entry = await hasher.entry(file, minBytes);
    if (entry === undefined) continue;
    const line = 64 + 1 + 20 + 1 + 3 + 1 + Buffer.byteLength(entry.name) + 1;
    if (bytes + line > MAX_HAVE_BYTES) break;
    bytes += line;
    entries.push(entry);
  }
  if (entries.length === 0) return undefined;
  return { entries, message: encodeExtension({ verb: 'have', entries }) };
}

/**
 * Reads the `!X need` that answers `offer` and resolves the files the server lacks (plus
 * any the offer could not list), in their original order.
 */
export async function readNeed(
  reader: FramedReader,
  files: readonly OutgoingFile[],
  offer: HaveOffer,
  options: { readonly endpoint: Endpoint; readonly limits: ProtocolLimits },
): Promise<OutgoingFile[]> {
  const host = hostKey(options.endpoint);
  const reply = await readExtension(reader, options.limits, ['need'], host, 'have');
  const listed = new Set(offer.entries.map((e) => e.name));
  const needed = new Set(reply.names);
  return files.filter((f) => !listed.has(f.name) || needed.has(f.name));
}

/**
 * `!X have` → `!X need`: names each file by content and resolves the files the server
 * lacks (plus any that could not be listed), in their original order.
 */
export async function offerCached(
  socket: Socket,
  reader: FramedReader,
  files: readonly OutgoingFile[],
  options: {
    readonly hasher: ContentHasher;
    readonly endpoint: Endpoint;
    readonly limits: ProtocolLimits;
    /** See {@link haveOffer}. */
    readonly minBytes?: number;
  },
): Promise<OutgoingFile[]> {
  const offer = await haveOffer(files, options.hasher, options.minBytes);
  if (offer === undefined) return [...files];
  await write(socket, offer.message);
  return readNeed(reader, files, offer, options);
}

/**
 * Reads the reply header, and the `!X` messages the negotiated extensions put before it:
 * `queued` and `started` (extension `queue`, reported through `onQueue` as they come), a
 * successful command's `stderr`, and with `beat` the heartbeats the server sends while the
 * command waits or runs: a host silent for {@link MISSED_BEATS} of its intervals is lost, a
 * `host-lost` JobError before the reply, which the client retries on another host. Long
 * jobs stay unlimited as long as the host beats.
 */
export async function readReply(
  reader: FramedReader,
  limits: ProtocolLimits & { readonly maxOutputBytes: number },
  extensions: ReadonlySet<Extension>,
  onQueue?: (verb: 'queued' | 'started') => void,
  host = 'the host',
  lookupOnly = false,
): Promise<{ header: Header; stderr: Buffer | undefined; hit?: string }> {
  const beats = extensions.has('beat');
  const verbs = [
    ...(extensions.has('queue') ? (['queued', 'started'] as const) : []),
    ...(extensions.has('stderr') ? (['stderr'] as const) : []),
    ...(extensions.has('results') ? (['hit'] as const) : []),
    ...(lookupOnly && extensions.has('results') ? (['miss'] as const) : []),
    ...(beats ? (['beat'] as const) : []),
  ];
  let intervalMs = DEFAULT_BEAT_MS;
  let stderr: Buffer | undefined;
  let hit: string | undefined;
  // One timer for the connection, set again at each read (not one per message or per job).
  const silence = beats ? watchOf(reader, host) : undefined;
  try {
    for (;;) {
      const h = await (silence === undefined
        ? reader.readHeader(limits)
        : silence.bound(reader.readHeader(limits), intervalMs));
      // After `stderr` or `hit` only the reply comes (as before `beat` and `queue`).
      if (
        verbs.length === 0 ||
        stderr !== undefined ||
        hit !== undefined ||
        !(h.kind === 'plain' && h.code === '!X')
      ) {
        return hit === undefined ? { header: h, stderr } : { header: h, stderr, hit };
      }
      const payload = await reader.readPayload(h.length, limits.maxOutputBytes + 16, '!X message');
      const msg = parseExtension(payload, verbs);
      if (msg.verb === 'beat') intervalMs = msg.intervalMs;
      else if (msg.verb === 'stderr') stderr = msg.bytes;
      else if (msg.verb === 'hit') hit = msg.key;
      else if (msg.verb === 'miss') throw new ResultMissed(host);
      else if (msg.verb === 'queued' || msg.verb === 'started') onQueue?.(msg.verb);
    }
  } finally {
    silence?.rest();
  }
}

/** `work`, or a `host-lost` JobError once {@link MISSED_BEATS} intervals pass first. */
function silenceBound<T>(work: Promise<T>, host: string, intervalMs: number): Promise<T> {
  const watch = new SilenceWatch(host);
  return watch.bound(work, intervalMs).finally(() => watch.stop());
}

/** Each connection's heartbeat bound on its replies (a kept connection's jobs share one). */
const watches = new WeakMap<FramedReader, SilenceWatch>();

function watchOf(reader: FramedReader, host: string): SilenceWatch {
  let watch = watches.get(reader);
  if (watch === undefined) {
    watch = new SilenceWatch(host, true);
    watches.set(reader, watch);
  }
  return watch;
}

/**
 * The heartbeat bound on the reads of replies: each read ({@link bound}) fails with a
 * `host-lost` JobError once {@link MISSED_BEATS} intervals pass before it is done. One timer
 * serves every read: set again when a read starts (Node's `refresh`), set anew only when the
 * interval changes, cleared by {@link stop}. A job on a queued host reads up to three
 * messages (`queued`, `started`, the reply), which were three timers set and cleared; a
 * connection's watch (`watchOf`) serves all its jobs, its timer left to run out between
 * them ({@link rest}), unref'd: a pending read, not the timer, keeps the process running.
 */
class SilenceWatch {
  readonly #host: string;
  #timer: NodeJS.Timeout | undefined;
  #ms = 0;
  #intervalMs = 0;
  /** The read in progress: failed when the timer fires. */
  #fail: ((err: JobError) => void) | undefined;

  readonly #unref: boolean;

  constructor(host: string, unref = false) {
    this.#host = host;
    this.#unref = unref;
  }

  bound<T>(work: Promise<T>, intervalMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#fail = reject;
      const ms = MISSED_BEATS * intervalMs;
      if (this.#timer !== undefined && ms === this.#ms) this.#timer.refresh();
      else {
        clearTimeout(this.#timer);
        this.#ms = ms;
        this.#intervalMs = intervalMs;
        this.#timer = setTimeout(this.#fire, ms);
        if (this.#unref) this.#timer.unref();
      }
      work.then(
        (value) => {
          this.#fail = undefined;
          resolve(value);
        },
        (err: unknown) => {
          this.#fail = undefined;
          reject(err);
        },
      );
    });
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#fail = undefined;
  }

  /** No read is bounded until the next: the timer may run out meanwhile, failing nothing. */
  rest(): void {
    this.#fail = undefined;
  }

  readonly #fire = () => {
    const fail = this.#fail;
    this.#fail = undefined;
    fail?.(
      new JobError(
        'host-lost',
        `rakeserver at ${this.#host} went silent: no heartbeat for ${this.#ms / 1000} s (it beats every ${this.#intervalMs / 1000} s while a job runs); taking the host as lost`,
        true,
      ),
    );
  };
}
