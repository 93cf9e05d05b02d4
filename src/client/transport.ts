import { lookup as dnsLookup } from 'node:dns/promises';
import { connect, type Socket } from 'node:net';
import { relative, sep } from 'node:path';
import {
  catchError,
  defer,
  filter,
  from,
  mergeMap,
  Observable,
  of,
  take,
  tap,
  throwError,
  timeout,
} from 'rxjs';
import { entryOf, jobKey, stageCached } from '../cache/job.js';
import { ownPlatform, type PlatformIdentity } from '../cache/key.js';
import type { CacheEntry, LocalCache } from '../cache/store.js';
import { isProtocolError, ProtocolError } from '../protocol/errors.js';
import { type Extension, encodeExtension, OFFER_ANNEX } from '../protocol/extensions.js';
import { type OutgoingFile, receiveFilestream, sendFilestream } from '../protocol/filestream.js';
import {
  describeHeader,
  encodeHeader,
  encodePacket,
  expectPlain,
  type Header,
  parseDecimal,
} from '../protocol/header.js';
import { DEFAULT_LIMITS, type ProtocolLimits } from '../protocol/limits.js';
import { wireNameSegments } from '../protocol/names.js';
import { FramedReader } from '../protocol/reader.js';
import { write } from '../protocol/socket-writes.js';
import type { Token } from '../protocol/token.js';
import { TlsDialer } from '../tls/client.js';
import {
  type CertificateInfo,
  CLIENT_CERT_REFUSED,
  type ClientTls,
  PLAIN_ON_TLS_PORT,
  TlsError,
} from '../tls/index.js';
import { type Endpoint, endpointIdentity, hostKey } from './endpoint.js';
import { describeError, isConnectionError, JobError } from './errors.js';
import type { LookupAddresses } from './hosts.js';
import { discardStaged, landStaged, MadeDirectories, outputRefusal } from './landing.js';
import {
  CACHE_MIN_BYTES,
  ContentHasher,
  haveOffer,
  negotiate,
  offerCached,
  PeerDirectory,
  type PeerInfo,
  peerFromAnnex,
  readNeed,
  readReply,
} from './negotiate.js';
import { ActionOutput, OutputSpool } from './output.js';
import type { CostProbe } from './poll.js';
import { jobLayout, type RequiredFile } from './requirements.js';

/** What one job needs on the wire: the command, the files to send, where outputs go. */
export interface JobRequest {
  readonly command: string;
  /**
   * Requirements, each with its base-mode wire name and, when it was written relative, its
   * path from the Rakefile's directory (see `requirements.ts`, `jobLayout`).
   */
  readonly files: readonly RequiredFile[];
  /** The Rakefile's directory: output files are written inside it and nowhere else. */
  readonly outputDir: string;
  /** Absolute paths no output may replace (the Rakefile); see `landing.ts`. */
  readonly refusedFiles?: readonly string[];
  /**
   * Called with the output names (relative, `/`-separated) once all have arrived, before
   * they land: a message refuses them all (another action of the actionset wrote one).
   */
  readonly claim?: (names: readonly string[]) => string | undefined;
  /**
   * The local action cache (`--cache`, issue 21): a job whose key is stored is not sent, its
   * outputs are restored (`cached`); a success is stored. Only for a host whose platform is
   * known (see {@link hostPlatform}).
   */
  readonly cache?: LocalCache;
}

/**
 * A job's progress, as its connection goes: connected, requirements sent, the reply, the
 * output files received. Ends after `replied` (failure or no files) or `downloaded`.
 */
export type JobProgress =
  | { readonly type: 'connected' }
  | {
      readonly type: 'uploaded';
      readonly files: number;
      readonly bytes: number;
      /**
       * The host says when a job that waits for a slot starts (extension `queue`): without a
       * `queued` before the reply, the job ran at once. Absent: it cannot tell (base mode).
       */
      readonly startReported?: boolean;
    }
  /** Extension `queue`: the host holds the job until a slot frees. */
  | { readonly type: 'queued' }
  /** Extension `queue`: the queued job starts now. */
  | { readonly type: 'started' }
  | {
      readonly type: 'replied';
      readonly ok: true;
      /** The command's stdout, byte for byte (spooled to a file when large). */
      readonly stdout: ActionOutput;
      readonly files: boolean;
      /** The command's stderr, when the host carries it (extension `stderr`) and it wrote any. */
      readonly stderr?: string;
      /**
       * Extension `results`: the host answered from the results of a job it ran before, under
       * its own key; the command did not run now.
       */
      readonly serverHit?: string;
    }
  | {
      readonly type: 'replied';
      readonly ok: false;
      readonly stderr: string;
      readonly exitStatus: number | undefined;
    }
  /** Output files written, as paths relative to the output directory (`/`-separated). */
  | { readonly type: 'downloaded'; readonly files: readonly string[]; readonly bytes: number }
  /**
   * The action cache had the job's key: nothing was sent, the stored stdout and output files
   * (landed like downloaded ones) stand for the run. The only progress of such a job.
   */
  | {
      readonly type: 'cached';
      readonly key: string;
      readonly stdout: ActionOutput;
      /** The stored stderr of the command (its warnings), when it wrote any. */
      readonly stderr?: string;
      readonly files: readonly string[];
      readonly bytes: number;
    };

/**
 * The two conversations a client has with a server. The TCP implementation is
 * {@link tcpTransport}; marble tests substitute scripted Observables.
 */
export interface Transport {
  queryCost(endpoint: Endpoint): Observable<CostProbe>;
  /** Errors are {@link JobError}s. Unsubscribing closes the connection at once. */
  sendJob(endpoint: Endpoint, job: JobRequest): Observable<JobProgress>;
  /**
   * The addresses a host name reaches, so that one server listed under two names is one
   * host (`hosts.ts`). Without it, names are compared as spelled.
   */
  readonly lookup?: LookupAddresses;
  /**
   * From now on, prove this client to the server at `endpoint` with `token` (not the run's
   * token): an embedded server's per-run secret (`embedded.ts`).
   */
  trust?(endpoint: Endpoint, token: Token): void;
}

/** Limits on what a server may make the client take: stdout (spooled when large) and stderr. */
export interface TransportLimits extends ProtocolLimits {
  readonly maxOutputBytes: number;
}

const DEFAULT_TRANSPORT_LIMITS: TransportLimits = {
  ...DEFAULT_LIMITS,
  maxOutputBytes: 256 * 1024 * 1024,
};

/**
 * Called with every promise that keeps working after an unsubscribe (removing a partial
 * output file); the CLI waits for them before it exits (see `cleanup.ts`).
 */
export type TrackCleanup = (work: Promise<unknown>) => void;

/** Bytes a transport moved, every connection counted when it closes (benchmarks, tests). */
export interface TransferMeter {
  sent: number;
  received: number;
  connections: number;
}

/** Options of {@link tcpTransport}. */
export interface TransportOptions {
  readonly limits?: Partial<TransportLimits>;
  readonly track?: TrackCleanup;
  /** Proves this client to servers that require a token (extension `auth`). */
  readonly token?: Token | undefined;
  /** Counts the bytes of every connection. */
  readonly meter?: TransferMeter;
  /** Where large stdout goes (default: a spool of this transport's own, never removed). */
  readonly spool?: OutputSpool;
  /** CA, certificate and key for hosts written `rakes://` (default: the system's CAs, no certificate). */
  readonly tls?: ClientTls | undefined;
}

/** The TCP transport, and what its TLS connections learnt (`rake-ts hosts`, benchmarks). */
export interface TcpTransport extends Transport {
  /** The certificate a TLS host presented on its last handshake. */
  certificate(endpoint: Endpoint): CertificateInfo | undefined;
  /** TLS handshakes completed, and how many resumed a session. */
  readonly tlsStats: { readonly handshakes: number; readonly resumed: number };
}

/**
 * What one transport (one run) shares between its connections: what each host said about
 * itself, the hashes of requirements, the token.
 */
interface TransportState {
  readonly limits: TransportLimits;
  readonly track: TrackCleanup;
  readonly token: Token | undefined;
  /** Tokens for particular servers (embedded servers' per-run secrets), by endpoint identity. */
  readonly trusted: Map<string, Token>;
  readonly meter: TransferMeter | undefined;
  readonly spool: OutputSpool;
  readonly peers: PeerDirectory;
  readonly hasher: ContentHasher;
  /** Hosts that refused the offer in the `!E0` padding (a stricter base server than the reference). */
  readonly plainOnly: Set<string>;
  /**
   * Hosts a cost query reached (connected), answered or not. A refused query does not count:
   * nothing listened then, and an embedded server may listen there now.
   */
  readonly asked: Set<string>;
  /** Opens the connections to hosts written `rakes://`. */
  readonly dialer: TlsDialer;
  /** Each host's platform as its server announced it (action cache), asked once per run. */
  readonly platforms: Map<string, Promise<PlatformIdentity | undefined>>;
}

/**
 * The real transport: one TCP connection per cost query and per job (PROTOCOL.md). Cost
 * queries carry the extension offer; a job on a host that answered it negotiates the
 * extensions (docs/protocol.md, "Extensions"), on any other host it is pure base mode.
 */
export function tcpTransport(options: TransportOptions = {}): TcpTransport {
  const state: TransportState = {
    limits: { ...DEFAULT_TRANSPORT_LIMITS, ...options.limits },
    track: options.track ?? (() => {}),
    token: options.token,
    trusted: new Map(),
    meter: options.meter,
    spool: options.spool ?? new OutputSpool(),
    peers: new PeerDirectory(),
    hasher: new ContentHasher(),
    plainOnly: new Set(),
    asked: new Set(),
    dialer: new TlsDialer(options.tls),
    platforms: new Map(),
  };
  return {
    queryCost: (endpoint) => queryCost(endpoint, state),
    sendJob: (endpoint, job) => sendJob(endpoint, job, state),
    lookup: async (host) => (await dnsLookup(host, { all: true })).map((a) => a.address),
    trust: (endpoint, token) => {
      state.trusted.set(endpointIdentity(endpoint), token);
    },
    certificate: (endpoint) => state.dialer.certificate(hostKey(endpoint)),
    tlsStats: state.dialer.stats,
  };
}

/**
 * Tells work `talk` does beside the socket (a cost query of its own) that the conversation
 * was cancelled. Lighter than an `AbortController`, which builds a `DOMException` (with its
 * stack) on every abort.
 */
class Cancellation {
  #callbacks: (() => void)[] | undefined;
  #cancelled = false;

  /** Calls `callback` once when the conversation is cancelled; at once if it was. */
  onCancel(callback: () => void): void {
    if (this.#cancelled) {
      callback();
      return;
    }
    if (this.#callbacks === undefined) this.#callbacks = [callback];
    else this.#callbacks.push(callback);
  }

  cancel(): void {
    if (this.#cancelled) return;
    this.#cancelled = true;
    const callbacks = this.#callbacks;
    this.#callbacks = undefined;
    for (const callback of callbacks ?? []) callback();
  }
}

/**
 * Opens a connection and runs `talk` over it; unsubscribing before `talk` is over destroys
 * the socket and cancels `cancel` (for work `talk` does beside the socket).
 */
function converse<T>(
  endpoint: Endpoint,
  talk: (
    socket: Socket,
    reader: FramedReader,
    emit: (value: T) => void,
    cancel: Cancellation,
  ) => Promise<void>,
  classify: (err: unknown) => unknown,
  track: TrackCleanup,
  meter: TransferMeter | undefined,
  dialer: TlsDialer,
): Observable<T> {
  return new Observable<T>((sub) => {
    const tls =
      endpoint.tls === true
        ? dialer.dial(endpoint.host, endpoint.port, hostKey(endpoint))
        : undefined;
    const socket = tls?.socket ?? connect({ host: endpoint.host, port: endpoint.port });
    if (tls !== undefined) handshakes.set(socket, tls.ready);
    socket.setNoDelay(true);
    // A base-mode host has no heartbeat: the kernel's keepalive notices a dead host or link.
    socket.setKeepAlive(true, 30_000);
    let counted = meter === undefined;
    // Counted once the conversation is over, so a caller that awaited it sees the bytes.
    const count = () => {
      if (counted || meter === undefined) return;
      counted = true;
      meter.sent += socket.bytesWritten;
      meter.received += socket.bytesRead;
      meter.connections++;
    };
    const reader = new FramedReader(socket);
    let closed = false;
    const cancel = new Cancellation();
    const work = talk(
      socket,
      reader,
      (v) => {
        if (!closed) sub.next(v);
      },
      cancel,
    ).then(
      () => {
        closed = true;
        count();
        socket.end();
        sub.complete();
      },
      (err: unknown) => {
        const wasClosed = closed;
        closed = true;
        count();
        socket.destroy();
        // A certificate, CA or plain-vs-TLS failure is told as such, naming the host.
        if (!wasClosed) sub.error(classify(tls?.explain(err) ?? err));
      },
    );
    track(work);
    return () => {
      if (!closed) {
        // Cancelled while talking: stop the reader and any work beside the socket.
        closed = true;
        reader.dispose();
        cancel.cancel();
      }
      count();
      socket.destroy();
    };
  });
}

/** TLS sockets and their handshakes: such a socket is connected once the handshake is over. */
const handshakes = new WeakMap<Socket, Promise<void>>();

function connected(socket: Socket): Promise<void> {
  const handshake = handshakes.get(socket);
  if (handshake !== undefined) return handshake;
  return new Promise((resolve, reject) => {
    if (!socket.connecting) {
      if (socket.destroyed) reject(new Error('connection closed'));
      else resolve();
      return;
    }
    const onConnect = () => {
      socket.off('error', onError);
      resolve();
    };
    const onError = (err: Error) => {
      socket.off('connect', onConnect);
      reject(err);
    };
    socket.once('connect', onConnect);
    socket.once('error', onError);
  });
}

/** A server that answered the offer with `!F` (it parses the whole `!E0` header). */
class OfferRefused extends Error {}

/**
 * `!E0` with the offer in its padding → `!E<len>` + cost, and in the reply's padding the
 * server's self-description if it is ours. A server that refuses the offer is asked again
 * without it, and never offered again in this run.
 */
function queryCost(endpoint: Endpoint, state: TransportState): Observable<CostProbe> {
  const { limits } = state;
  const ask = (offer: boolean) =>
    converse<CostProbe>(
      endpoint,
      async (socket, reader, emit) => {
        await connected(socket);
        state.asked.add(hostKey(endpoint));
        emit({ type: 'connected' });
        await write(
          socket,
          encodeHeader({
            kind: 'plain',
            code: '!E',
            length: 0,
            ...(offer ? { annex: OFFER_ANNEX } : {}),
          }),
        );
        const reply = await reader.readHeader(limits);
        if (reply.kind === 'plain' && reply.code === '!F') {
          await refusedForTls(reader, reply.length, endpoint);
          if (offer) throw new OfferRefused();
        }
        const h = expectPlain(reply, '!E');
        const payload = await reader.readPayload(h.length, 64, 'cost');
        const cost = parseDecimal(payload, 'cost');
        const peer = peerFromAnnex(h.annex);
        state.peers.record(endpoint, peer);
        emit({ type: 'cost', cost, peer });
      },
      (err) => err,
      () => {},
      state.meter,
      state.dialer,
    );
  if (state.plainOnly.has(hostKey(endpoint))) return ask(false);
  return ask(true).pipe(
    catchError((err: unknown) => {
      if (!(err instanceof OfferRefused)) throw err;
      state.plainOnly.add(hostKey(endpoint));
      return ask(false).pipe(filter((p) => p.type !== 'connected'));
    }),
  );
}

/**
 * A `!F` cost reply from our server's TLS port says why in its payload: a plain query on
 * the TLS port ({@link PLAIN_ON_TLS_PORT}), or a client certificate refused
 * ({@link CLIENT_CERT_REFUSED}); either becomes a {@link TlsError} saying what to do. Any
 * other refusal is left to the caller (a short payload is read; the connection is dropped
 * after it either way).
 */
async function refusedForTls(reader: FramedReader, length: number, endpoint: Endpoint) {
  if (length === 0 || length > 4096) return;
  const said = await reader.readPayload(length, 4096, 'refusal').then(
    (b) => b.toString('utf8'),
    () => '',
  );
  const host = hostKey(endpoint);
  if (said.startsWith(CLIENT_CERT_REFUSED)) {
    throw new TlsError(
      'client-cert-refused',
      `${host} refused this client's certificate: ${said.slice(CLIENT_CERT_REFUSED.length).trim()}`,
    );
  }
  if (!said.startsWith(PLAIN_ON_TLS_PORT)) return;
  throw new TlsError(
    'tls-required',
    `${host} is a TLS port and this client spoke plain text to it: write the host as rakes://${host} (or pass --tls), or use the server's plain port`,
  );
}

/** How long a job waits to learn what a host it never asked is, before taking it as base. */
const LOOKUP_TIMEOUT_MS = 5000;

/**
 * What a host is: from its last cost answer; base mode for a host that was asked but did
 * not answer (a slow host chosen anyway); for a host never asked (the local server of a
 * local action with no embedded-server probe), from a cost query of its own, which ends
 * with the job (`cancel`). Never a hello to a host that did not answer the offer.
 */
function peerOf(
  endpoint: Endpoint,
  state: TransportState,
  cancel: Cancellation,
): Promise<PeerInfo> {
  const base: PeerInfo = { kind: 'base' };
  const known = state.peers.get(endpoint);
  if (known !== undefined) return Promise.resolve(known);
  // A server this run started (an embedded one) is ours and requires its secret: never
  // taken for a base server while its cost answer is still on its way.
  const ours = state.trusted.has(endpointIdentity(endpoint));
  if (state.asked.has(hostKey(endpoint)) && !ours) return Promise.resolve(base);
  return new Promise<PeerInfo>((resolve, reject) => {
    const subscription = queryCost(endpoint, state)
      .pipe(
        filter((p): p is Extract<CostProbe, { type: 'cost' }> => p.type === 'cost'),
        take(1),
        timeout(LOOKUP_TIMEOUT_MS),
      )
      .subscribe({
        next: (p) => resolve(p.peer ?? base),
        // A certificate or CA the host or this client refuses fails the job with the reason.
        error: (err: unknown) => (err instanceof TlsError ? reject(err) : resolve(base)),
        complete: () => resolve(base),
      });
    cancel.onCancel(() => {
      subscription.unsubscribe();
      resolve(base);
    });
  });
}

/**
 * The host granted less than its cost reply promised (no `cache`: it was restarted with
 * `--cache-size 0` since, or another server took its port), so it will refuse the `have`
 * already sent behind the hello. The job starts again on a new connection, without one.
 */
class StaleOffer extends Error {}

/**
 * The platform identity of the host at `endpoint`, for the action cache's key: an embedded
 * server (the only servers this transport is told to trust, with their per-run secret) is
 * this process; a rake-ts server says its own when asked (`platform?` in a hello of its own,
 * once per run and host); a base-protocol host, or a server that does not say, has none, so
 * it gets no hits and its results are not stored (docs/client.md, "The action cache").
 */
function hostPlatform(
  endpoint: Endpoint,
  state: TransportState,
): Promise<PlatformIdentity | undefined> {
  if (state.trusted.has(endpointIdentity(endpoint))) return Promise.resolve(ownPlatform());
  const peer = state.peers.get(endpoint);
  if (peer === undefined || peer.kind !== 'rake') return Promise.resolve(undefined);
  const key = hostKey(endpoint);
  let known = state.platforms.get(key);
  if (known === undefined) {
    known = askPlatform(endpoint, state);
    state.platforms.set(key, known);
  }
  return known;
}

/** A connection that only says hello asking for the platform; any failure: unknown. */
function askPlatform(
  endpoint: Endpoint,
  state: TransportState,
): Promise<PlatformIdentity | undefined> {
  const token = state.trusted.get(endpointIdentity(endpoint)) ?? state.token;
  let said: PlatformIdentity | undefined;
  return new Promise((resolve) => {
    converse<never>(
      endpoint,
      async (socket, reader) => {
        await connected(socket);
        await negotiate(socket, reader, {
          endpoint,
          token,
          limits: state.limits,
          onPlatform: (p) => {
            said = p;
          },
        });
      },
      (err) => err,
      state.track,
      state.meter,
      state.dialer,
    ).subscribe({
      complete: () => resolve(said),
      error: () => resolve(undefined),
    });
  });
}

function sendJob(
  endpoint: Endpoint,
  job: JobRequest,
  state: TransportState,
): Observable<JobProgress> {
  const cache = job.cache;
  if (cache === undefined) return sendJobRetrying(endpoint, job, state);
  return defer(() => from(cacheKey(endpoint, job, state))).pipe(
    mergeMap((key) => {
      if (key === undefined) return sendJobRetrying(endpoint, job, state);
      const hit = cache.get(key);
      if (hit !== undefined) return defer(() => of(restoreHit(job, key, hit)));
      let stdout: ActionOutput | undefined;
      let stderr: string | undefined;
      let names: readonly string[] = [];
      return sendJobRetrying(endpoint, job, state).pipe(
        tap({
          next: (p) => {
            if (p.type === 'replied' && p.ok) {
              stdout = p.stdout;
              stderr = p.stderr;
            }
            if (p.type === 'downloaded') names = p.files;
          },
          complete: () => {
            // Only a success (exit 0) is stored, with what landed (and its warnings, which a
            // hit shows again as a run would).
            if (stdout === undefined) return;
            const entry = entryOf(
              job.outputDir,
              stdout.buffer(),
              names,
              stderr === undefined ? undefined : Buffer.from(stderr, 'utf8'),
            );
            if (entry !== undefined) cache.put(key, entry);
          },
        }),
      );
    }),
  );
}

/** The job's key as the host at `endpoint` would receive it, or `undefined` (no caching). */
async function cacheKey(
  endpoint: Endpoint,
  job: JobRequest,
  state: TransportState,
): Promise<string | undefined> {
  const platform = await hostPlatform(endpoint, state);
  const peer = state.peers.get(endpoint);
  if (platform === undefined || peer === undefined) return undefined;
  const carriesPaths = peer.kind === 'rake' && peer.extensions.includes('cwd');
  const layout = jobLayout(job.outputDir, job.files, carriesPaths, hostKey(endpoint));
  if (!layout.ok) return undefined;
  return jobKey(job.command, layout.files, layout.cwd, platform, (f) => state.hasher.entry(f));
}

/** A hit's outputs landed as a job's would be: checked, staged, claimed, renamed together. */
function restoreHit(job: JobRequest, key: string, hit: CacheEntry): JobProgress {
  const staged = stageCached(job.outputDir, hit.files, (name) => {
    const why = outputRefusal(name, job.outputDir, job.refusedFiles ?? []);
    if (why !== undefined) {
      throw new JobError(
        'bad-output',
        `refused output file ${JSON.stringify(name)} from the action cache: ${why}; no output of this action was written`,
        false,
      );
    }
  });
  const names = hit.files.map((f) => f.name);
  const conflict = job.claim?.(names);
  if (conflict !== undefined) {
    discardStaged(staged);
    throw new JobError(
      'bad-output',
      `${conflict} (from the action cache); no output of this action was written`,
      false,
    );
  }
  landStaged(staged);
  return {
    type: 'cached',
    key,
    stdout: ActionOutput.of(hit.stdout),
    ...(hit.stderr === undefined ? {} : { stderr: hit.stderr.toString('utf8') }),
    files: names,
    bytes: staged.reduce((n, f) => n + f.size, 0),
  };
}

function sendJobRetrying(
  endpoint: Endpoint,
  job: JobRequest,
  state: TransportState,
): Observable<JobProgress> {
  return sendJobOnce(endpoint, job, state, true).pipe(
    catchError((err: unknown) =>
      err instanceof StaleOffer ? sendJobOnce(endpoint, job, state, false) : throwError(() => err),
    ),
  );
}

function sendJobOnce(
  endpoint: Endpoint,
  job: JobRequest,
  state: TransportState,
  mayOfferEarly: boolean,
): Observable<JobProgress> {
  const { limits, track } = state;
  const token = state.trusted.get(endpointIdentity(endpoint)) ?? state.token;
  let replied = false;
  return converse<JobProgress>(
    endpoint,
    async (socket, reader, emit, cancel) => {
      await connected(socket);
      emit({ type: 'connected' });
      const peer = await peerOf(endpoint, state, cancel);
      // Where each file lands: with `cwd`, a requirement above the Rakefile's directory keeps
      // its place; elsewhere two files under one base name are refused before anything is sent.
      const carriesPaths = peer.kind === 'rake' && peer.extensions.includes('cwd');
      const layout = jobLayout(job.outputDir, job.files, carriesPaths, hostKey(endpoint));
      if (!layout.ok) throw new JobError('requirement-collision', layout.message, true);
      const cwd = layout.cwd;
      // A base-mode host gets exactly the base protocol: no hello, no `!X`, no `!M`.
      let files = layout.files;
      // To a host that said it wants no token, what follows the hello is sent without
      // waiting for its `ok`: the server reads them in order.
      const ahead =
        mayOfferEarly && peer.kind === 'rake' && !peer.authRequired && token === undefined;
      // Pushed ahead, the files carry modes: only to a host that said it has both.
      const pushAhead =
        ahead && peer.extensions.includes('push') && peer.extensions.includes('mode');
      const early =
        ahead && peer.extensions.includes('cache') && files.length > 0
          ? await haveOffer(files, state.hasher, pushAhead ? CACHE_MIN_BYTES : 0)
          : undefined;
      // With `push` and nothing to ask the cache, the whole job follows the hello at once
      // (the server may send its `ok` with the reply): one round trip per job.
      // A job that may be cached waits for the `ok` instead: only its `ext=` says whether the
      // host keeps results (extension `results`, not in the offer's annex) for `!X lookup`.
      const blind = pushAhead && early === undefined && job.cache === undefined;
      // A pushed upload the server refuses part-way (a file over its limit) is answered with
      // `!F` while our bytes are still on their way; when it then closes, our write fails.
      // The refusal is what the user needs, so it is read before the write error is believed.
      let writeFailed: unknown;
      const sendCommand = async (
        modes: boolean,
        push: boolean,
        upload: readonly OutgoingFile[],
        startReported: boolean | undefined,
        lookup = false,
      ) => {
        const told = startReported === undefined ? {} : { startReported };
        try {
          if (upload.length > 0) {
            await write(socket, encodeHeader({ kind: 'plain', code: '!R', length: 0 }));
            const sent = await sendFilestream(socket, reader, upload, { modes, push });
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
          await write(
            socket,
            Buffer.concat([
              ...(lookup ? [encodeExtension({ verb: 'lookup' })] : []),
              ...(cwd === undefined ? [] : [encodeExtension({ verb: 'cwd', path: cwd })]),
              encodePacket({ code: '!C' }, job.command),
            ]),
          );
        } catch (err) {
          if (!push || !isConnectionError(err)) throw err;
          writeFailed = err;
        }
      };
      const ext: ReadonlySet<Extension> =
        peer.kind === 'rake'
          ? await negotiate(socket, reader, {
              endpoint,
              token,
              limits,
              ...(blind
                ? {
                    followUp: () =>
                      sendCommand(true, true, files, peer.extensions.includes('queue')),
                    okWithReply: true,
                    okWithinBeats: peer.extensions.includes('beat'),
                  }
                : early === undefined
                  ? {}
                  : { followUp: early.message }),
            })
          : new Set();
      const stale =
        peer.kind === 'rake' &&
        ((early !== undefined && !ext.has('cache')) ||
          (cwd !== undefined && !ext.has('cwd')) ||
          (blind && !(ext.has('push') && ext.has('mode'))));
      if (stale) {
        // Believe the hello from now on: later jobs send nothing early to this host.
        state.peers.record(endpoint, {
          ...peer,
          extensions: peer.extensions.filter((e) => ext.has(e)),
        });
        throw new StaleOffer();
      }
      const modes = ext.has('mode');
      // With `push`, `!R`, the files and `!C` leave in one write (write() corks for the tick),
      // and the reply comes back with its output files unasked.
      const push = ext.has('push');
      if (!blind) {
        if (early !== undefined) {
          files = await readNeed(reader, files, early, { endpoint, limits });
        } else if (ext.has('cache') && files.length > 0) {
          files = await offerCached(socket, reader, files, {
            hasher: state.hasher,
            endpoint,
            limits,
            minBytes: push ? CACHE_MIN_BYTES : 0,
          });
        }
        await sendCommand(
          modes,
          push,
          files,
          peer.kind === 'rake' ? ext.has('queue') : undefined,
          job.cache !== undefined && ext.has('results'),
        );
      }
      const {
        header: reply,
        stderr: warnings,
        hit: serverHit,
      } = await readReply(
        reader,
        limits,
        ext,
        (verb) => emit({ type: verb }),
        hostKey(endpoint),
      ).catch((err: unknown) => {
        throw writeFailed ?? err;
      });
      if (writeFailed !== undefined && reply.kind !== 'plain') throw writeFailed;
      checkReply(reply);
      if (reply.kind === 'plain') {
        // `!F<len>` + stderr, then `!F<len>` + exit status (PROTOCOL.md, "failure").
        const stderr = await reader.readPayload(reply.length, limits.maxOutputBytes, 'stderr');
        const exitStatus = await readExitStatus(reader, limits);
        replied = true;
        emit({ type: 'replied', ok: false, stderr: stderr.toString('utf8'), exitStatus });
      } else {
        if (reply.length > limits.maxOutputBytes) {
          throw new ProtocolError(
            'limit-exceeded',
            `command output of at most ${limits.maxOutputBytes} bytes`,
            `${reply.length} bytes`,
          );
        }
        const body = await state.spool.receive(reader, reply.length, 'command output');
        replied = true;
        const outputs = reply.flags[1] === 'I';
        const stderr = warnings === undefined ? undefined : warnings.toString('utf8');
        emit({
          type: 'replied',
          ok: true,
          stdout: body,
          files: outputs,
          ...(stderr === undefined ? {} : { stderr }),
          ...(serverHit === undefined ? {} : { serverHit }),
        });
        if (outputs) {
          // Every file is staged under a temporary name and they land together at the end:
          // a refused name or a broken connection leaves nothing of this action behind.
          const made = new MadeDirectories();
          const received = await receiveFilestream(reader, socket, {
            resolve: (name) => {
              const local = outputName(name, cwd);
              const why = outputRefusal(local, job.outputDir, job.refusedFiles ?? []);
              if (why !== undefined) {
                throw new JobError(
                  'bad-output',
                  `refused output file ${JSON.stringify(local)} from ${hostKey(endpoint)}: ${why}; no output of this action was written`,
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
              `${conflict} (from ${hostKey(endpoint)}); no output of this action was written`,
              false,
            );
          }
          landStaged(received);
          emit({
            type: 'downloaded',
            files: names,
            bytes: received.reduce((n, f) => n + f.size, 0),
          });
        }
      }
      // The reply and every file are in: a server that closed right after them (one shutting
      // down does, as may any base server) has lost us nothing, so `!D` is best effort.
      await write(socket, encodeHeader({ kind: 'plain', code: '!D', length: 0 })).catch(
        (err: unknown) => {
          if (!isConnectionError(err)) throw err;
        },
      );
    },
    (err) => (err instanceof StaleOffer ? err : classifyJobError(err, replied)),
    track,
    state.meter,
    state.dialer,
  );
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

function classifyJobError(err: unknown, replied: boolean): JobError {
  if (err instanceof JobError) return err;
  const message = describeError(err);
  if (isConnectionError(err)) {
    const what = replied ? 'connection lost after the reply' : 'connection lost before the reply';
    return new JobError('host-lost', `${what}: ${message}`, !replied, err);
  }
  if (isProtocolError(err)) {
    const kind = replied && isProtocolError(err, 'bad-name') ? 'bad-output' : 'protocol-error';
    return new JobError(kind, message, !replied, err);
  }
  // A file system error while writing an output file, or reading a requirement.
  return new JobError(replied ? 'bad-output' : 'protocol-error', message, !replied, err);
}
