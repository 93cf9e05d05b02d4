import { lookup as dnsLookup } from 'node:dns/promises';
import type { Socket } from 'node:net';
import {
  catchError,
  concat,
  defaultIfEmpty,
  defer,
  EMPTY,
  filter,
  from,
  ignoreElements,
  map,
  merge,
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
import { isProtocolError } from '../protocol/errors.js';
import { type Extension, OFFER_ANNEX } from '../protocol/extensions.js';
import type { OutgoingFile } from '../protocol/filestream.js';
import { encodeHeader, expectPlain, parseDecimal } from '../protocol/header.js';
import { DEFAULT_LIMITS, type ProtocolLimits } from '../protocol/limits.js';
import type { FramedReader } from '../protocol/reader.js';
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
import { trackCleanup } from './cleanup.js';
import {
  type Connection,
  connected,
  conversation,
  type Dialing,
  progressOnly,
  step,
  type Told,
  then,
} from './conversation.js';
import type { EarlyDials } from './early-dial.js';
import { type Endpoint, endpointIdentity, hostKey } from './endpoint.js';
import { describeError, HelloRefused, isConnectionError, JobError } from './errors.js';
import type { LookupAddresses } from './hosts.js';
import { type JobPlan, planJob, staleFor } from './job-plan.js';
import { discardStaged, landStaged, outputRefusal } from './landing.js';
import { type LoadProbe, tcpWatchLoad } from './load-stream.js';
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
} from './negotiate.js';
import { AfterReply, type DownloadSpec, download } from './ops/download.js';
import { awaitReply, execute, type Replied } from './ops/execute.js';
import { sendUpload, type Uploaded, type UploadSpec, upload } from './ops/upload.js';
import { ActionOutput, OutputSpool } from './output.js';
import type { CostProbe } from './poll.js';
import { ConnectionPool, type PooledConnection } from './pool.js';
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
  /**
   * How long a connection may take (`--connect-timeout`): bounds the job's own connection
   * when asking the other hosts' stored results came first (`peeking`).
   */
  readonly connectTimeoutMs?: number;
}

/**
 * A job's progress, as its connection goes: connected, requirements sent, the reply, the
 * output files received. Ends after `replied` (failure or no files) or `downloaded`.
 */
export type JobProgress =
  /**
   * With `--cache`, after a local miss: the other hosts of the run that keep results are
   * asked for this job's (`!X lookup only`) before it is sent to the chosen host.
   */
  | { readonly type: 'peeking' }
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
      /** With `serverHit`: the host that answered, when not the chosen one (a peek's). */
      readonly hitFrom?: string;
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
   * The host's load stream (extension `load`, `load-stream.ts`): one long-lived connection
   * that starts with a cost query (whose answer is recorded as a poll's would be). Absent:
   * every action polls.
   */
  watchLoad?(endpoint: Endpoint, connectTimeoutMs: number): Observable<LoadProbe>;
  /** Ends the job connections kept for later jobs (extension `reuse`), if any. */
  closeIdle?(): void;
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
  /**
   * Keep job connections to our servers for later jobs (extension `reuse`, `pool.ts`): the
   * hello asks for it, and a connection whose job ended well goes back to a per-host pool.
   * Close the pool at the end with {@link TcpTransport.closeIdle}.
   */
  readonly reuse?: boolean;
  /**
   * Connections dialed while the Rakefile was parsed (`early-dial.ts`): a host's load stream
   * opens on its own instead of dialing one.
   */
  readonly early?: EarlyDials;
}

/** The TCP transport, and what its TLS connections learnt (`rake-ts hosts`, benchmarks). */
export interface TcpTransport extends Transport {
  /** The certificate a TLS host presented on its last handshake. */
  certificate(endpoint: Endpoint): CertificateInfo | undefined;
  /** TLS handshakes completed, and how many resumed a session. */
  readonly tlsStats: { readonly handshakes: number; readonly resumed: number };
  /** Ends the pooled job connections (option `reuse`); later jobs dial again. */
  closeIdle(): void;
  /** Jobs that took a pooled connection instead of dialing. */
  readonly reusedConnections: () => number;
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
  /** Hosts whose hello (the one asking the platform) granted `results`. */
  readonly keepsResults: Set<string>;
  /** Job connections kept for later jobs (option `reuse`). */
  readonly pool: ConnectionPool | undefined;
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
    keepsResults: new Set(),
    pool: options.reuse === true ? new ConnectionPool(options.meter) : undefined,
  };
  return {
    queryCost: (endpoint) => queryCost(endpoint, state),
    sendJob: (endpoint, job) => sendJob(endpoint, job, state),
    watchLoad: (endpoint, connectTimeoutMs) =>
      tcpWatchLoad({
        limits: state.limits,
        connectTimeoutMs,
        tokenFor: (e) => state.trusted.get(endpointIdentity(e)) ?? state.token,
        onAnswer: (e, annex) => {
          state.asked.add(hostKey(e));
          state.peers.record(e, peerFromAnnex(annex));
        },
        // The jobs' own way to a host: TLS (and its session cache) for a `rakes://` host; for
        // another, the connection dialed while the Rakefile was parsed, if any (once).
        dial: (e) => {
          if (e.tls !== true) return options.early?.take(e);
          const tls = state.dialer.dial(e.host, e.port, hostKey(e));
          return { socket: tls.socket, ready: tls.ready, explain: (err) => tls.explain(err) };
        },
        // A strict base server refused the offer: polls ask it without from now on.
        refused: async (reader, length, e) => {
          await refusedForTls(reader, length, e);
          state.plainOnly.add(hostKey(e));
        },
        // Our host: the stream's opening connection, its cost query done, waits in the pool
        // for the host's first job (docs/protocol.md, "A warm connection").
        handOver: (e, conn, peer) => {
          if (state.pool === undefined) return false;
          state.pool.give(hostKey(e), { ...conn, peer, granted: new Set(), annexed: true });
          return true;
        },
      })(endpoint),
    lookup: async (host) => (await dnsLookup(host, { all: true })).map((a) => a.address),
    trust: (endpoint, token) => {
      state.trusted.set(endpointIdentity(endpoint), token);
    },
    certificate: (endpoint) => state.dialer.certificate(hostKey(endpoint)),
    tlsStats: state.dialer.stats,
    closeIdle: () => state.pool?.close(),
    reusedConnections: () => state.pool?.reused ?? 0,
  };
}

/**
 * A conversation whose talk is one async function over the socket (a cost query, a hello
 * asking the platform): `conversation` with a single step.
 */
function converse<T>(
  endpoint: Endpoint,
  talk: (socket: Socket, reader: FramedReader, emit: (value: T) => void) => Promise<void>,
  classify: (err: unknown) => unknown,
  track: TrackCleanup,
  dialing: Dialing,
): Observable<T> {
  return conversation(endpoint, dialing, classify, ({ socket, reader }) =>
    step<T, void>(track, (emit) => talk(socket, reader, emit)).pipe(progressOnly()),
  );
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
      state,
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
 * with the job (unsubscribed with it). Never a hello to a host that did not answer the offer.
 */
/** `peerOf` as a job's step (a host already described: at once, with no `map`). */
function peerStep(
  endpoint: Endpoint,
  state: TransportState,
): Observable<Told<JobProgress, PeerInfo>> {
  const known = state.peers.get(endpoint);
  return known !== undefined ? of(told(known)) : peerOf(endpoint, state).pipe(map(told));
}

function peerOf(endpoint: Endpoint, state: TransportState): Observable<PeerInfo> {
  const base: PeerInfo = { kind: 'base' };
  const known = state.peers.get(endpoint);
  if (known !== undefined) return of(known);
  // A server this run started (an embedded one) is ours and requires its secret: never
  // taken for a base server while its cost answer is still on its way.
  const ours = state.trusted.has(endpointIdentity(endpoint));
  if (state.asked.has(hostKey(endpoint)) && !ours) return of(base);
  return queryCost(endpoint, state).pipe(
    filter((p): p is Extract<CostProbe, { type: 'cost' }> => p.type === 'cost'),
    take(1),
    timeout(LOOKUP_TIMEOUT_MS),
    map((p) => p.peer ?? base),
    // A certificate or CA the host or this client refuses fails the job with the reason.
    catchError((err: unknown) => (err instanceof TlsError ? throwError(() => err) : of(base))),
    defaultIfEmpty(base),
  );
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
        const granted = await negotiate(socket, reader, {
          endpoint,
          token,
          limits: state.limits,
          onPlatform: (p) => {
            said = p;
          },
        });
        if (granted.has('results')) state.keepsResults.add(hostKey(endpoint));
      },
      (err) => err,
      state.track,
      state,
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
      // A result another host of the run answered is stored under that host's key (its
      // platform may not be the chosen host's).
      let storeKey: Promise<string | undefined> = Promise.resolve(key);
      const answeredBy = (other: Endpoint) => {
        storeKey = cacheKey(other, job, state);
      };
      const job$ = askOthersFirst(endpoint, job, state, answeredBy).pipe(
        tap((p) => {
          if (p.type === 'replied' && p.ok) {
            stdout = p.stdout;
            stderr = p.stderr;
          }
          if (p.type === 'downloaded') names = p.files;
        }),
      );
      // Only a success (exit 0) is stored, once the job has ended, with what landed (and its
      // warnings, which a hit shows again as a run would). The job ends when it is stored;
      // the writing is off the event loop (written synchronously, thousands of stores held up
      // the sockets long enough for cost queries to time out on a loaded machine).
      const store$ = defer(() => from(storeKey)).pipe(
        mergeMap((storeAs) => {
          if (stdout === undefined || storeAs === undefined) return EMPTY;
          const entry = entryOf(
            job.outputDir,
            stdout.buffer(),
            names,
            stderr === undefined ? undefined : Buffer.from(stderr, 'utf8'),
          );
          if (entry === undefined) return EMPTY;
          const stored = cache.putAsync(storeAs, entry);
          trackCleanup(stored); // an interrupted run still finishes the write before exiting
          return from(stored).pipe(ignoreElements());
        }),
      );
      return concat(job$, store$);
    }),
  );
}

/**
 * How long asking another host for a stored result (`!X lookup only`) may take until it
 * answers (a hit's reply header, or `miss`): a host slower than that counts as a miss, and
 * the action runs as planned. A hit's output files then take as long as they take.
 */
const PEEK_ANSWER_MS = 5000;

/**
 * With `--cache`, after a local miss: each other host of the run that is ours and keeps
 * results (its hello granted `results`, learnt once per run with its platform) is asked, in
 * parallel, whether it stores this job's result (`peekJob`); the first hit is the action's
 * (`replied` with `serverHit`, then its files), and `answeredBy` names its host. Without such
 * a hit the job goes to `endpoint` as planned (where its own `!X lookup` still applies). A
 * run with one such host, a base host, and a job without `--cache` never get here or ask.
 */
function askOthersFirst(
  endpoint: Endpoint,
  job: JobRequest,
  state: TransportState,
  answeredBy: (other: Endpoint) => void,
): Observable<JobProgress> {
  return defer(() => from(othersWithResults(endpoint, state))).pipe(
    mergeMap((others) => {
      if (others.length === 0) return sendJobRetrying(endpoint, job, state);
      let taken: Endpoint | undefined;
      const peeks = others.map((other) =>
        peekJob(other, job, state, () => {
          if (taken !== undefined) return false;
          taken = other;
          answeredBy(other);
          return true;
        }),
      );
      const ms = job.connectTimeoutMs;
      const planned$ = defer(() => {
        if (taken !== undefined) return EMPTY;
        const job$ = sendJobRetrying(endpoint, job, state);
        // `peeking` was the job's first sign of life: its own connection is bounded here.
        return ms === undefined
          ? job$
          : job$.pipe(
              timeout({
                first: ms,
                with: () =>
                  throwError(
                    () => new JobError('host-lost', `no connection within ${ms} ms`, true),
                  ),
              }),
            );
      });
      return concat(of<JobProgress>({ type: 'peeking' }), merge(...peeks), planned$);
    }),
  );
}

/**
 * The hosts besides `endpoint` to ask for a stored result: ours (rake/1, not an embedded
 * server of this run), whose platform hello granted `results`.
 */
async function othersWithResults(endpoint: Endpoint, state: TransportState): Promise<Endpoint[]> {
  const chosen = hostKey(endpoint);
  const others = state.peers
    .endpoints()
    .filter(
      (e) =>
        hostKey(e) !== chosen &&
        state.peers.get(e)?.kind === 'rake' &&
        !state.trusted.has(endpointIdentity(e)),
    );
  if (others.length === 0) return [];
  await Promise.all(others.map((e) => hostPlatform(e, state)));
  return others.filter((e) => state.keepsResults.has(hostKey(e)));
}

/** A peek that cannot hit: the host lacks an input (its `need`), or a grant it needs. */
class PeekMissed extends Error {}

/**
 * Asks the host at `endpoint` for this job's stored result without letting it run the job:
 * a hello, the input cache's `have` for every requirement (a host that `need`s any never saw
 * these inputs, so it stores no result of them: a miss at once, nothing uploaded), then
 * `!X lookup only` and the command. On a hit that `claim` accepts: `replied` (a server hit)
 * and the output files, landed as a job's. Completes empty on a miss, a failure before the
 * hit was claimed, or no answer within {@link PEEK_ANSWER_MS}; after the claim, errors as a
 * job would.
 */
function peekJob(
  endpoint: Endpoint,
  job: JobRequest,
  state: TransportState,
  claim: () => boolean,
): Observable<JobProgress> {
  const { limits, track } = state;
  const host = hostKey(endpoint);
  const peer = state.peers.get(endpoint);
  if (peer === undefined || peer.kind !== 'rake') return EMPTY;
  const layout = jobLayout(job.outputDir, job.files, peer.extensions.includes('cwd'), host);
  if (!layout.ok) return EMPTY;
  const token = state.trusted.get(endpointIdentity(endpoint)) ?? state.token;
  let mine = false;
  const claimHit = () => {
    mine = claim();
    return mine;
  };
  return conversation(
    endpoint,
    state,
    (err) => err,
    (conn) =>
      step<JobProgress, ReadonlySet<Extension>>(track, async () => {
        const { socket, reader } = conn;
        await connected(socket);
        const files = layout.files;
        const offer = files.length > 0 ? await haveOffer(files, state.hasher, 0) : undefined;
        // A `have` too long for one message cannot name every input: the host cannot say.
        if (files.length > 0 && (offer === undefined || offer.entries.length < files.length)) {
          throw new PeekMissed();
        }
        const early =
          offer !== undefined &&
          !peer.authRequired &&
          token === undefined &&
          peer.extensions.includes('cache');
        const granted = await negotiate(socket, reader, {
          endpoint,
          token,
          limits,
          ...(early ? { followUp: offer.message } : {}),
        });
        if (
          !granted.has('results') ||
          (offer !== undefined && !granted.has('cache')) ||
          (layout.cwd !== undefined && !granted.has('cwd'))
        ) {
          throw new PeekMissed();
        }
        let lacking: OutgoingFile[] = [];
        if (offer !== undefined) {
          if (!early) await write(socket, offer.message);
          lacking = await readNeed(reader, files, offer, { endpoint, limits });
          // A file of CACHE_MIN_BYTES or more reaches a server through its input cache (our
          // client offers it first), so a server that needs one never ran a job on these
          // inputs: a miss, and nothing is uploaded. Smaller files are pushed without an
          // offer and not cached: a server that stores the result may lack them; sent.
          const sizes = new Map(offer.entries.map((e) => [e.name, e.size]));
          if (lacking.some((f) => (sizes.get(f.name) ?? Infinity) >= CACHE_MIN_BYTES)) {
            throw new PeekMissed();
          }
        }
        await sendUpload(
          conn,
          {
            command: job.command,
            files: lacking,
            modes: granted.has('mode'),
            push: granted.has('push'),
            startReported: granted.has('queue'),
            cwd: layout.cwd,
            lookup: 'only',
          },
          () => {},
        );
        return granted;
      }).pipe(
        then((granted) =>
          execute(
            conn,
            { writeFailed: undefined },
            { granted, limits, spool: state.spool, host, claimHit },
            track,
          ).pipe(
            then((replied) =>
              download(conn, replied, downloadSpec(job, layout.cwd, granted, limits, host), track),
            ),
          ),
        ),
        progressOnly(),
      ),
  ).pipe(
    timeout({ first: PEEK_ANSWER_MS }),
    catchError((err: unknown) =>
      mine
        ? throwError(() =>
            err instanceof AfterReply
              ? classifyJobError(err.error, true)
              : classifyJobError(err, true),
          )
        : EMPTY,
    ),
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
  const pooled = state.pool?.take(hostKey(endpoint));
  // Made only when used: most jobs of a run with load streams take a kept connection.
  const fresh = () =>
    sendJobOnce(endpoint, job, state, true).pipe(
      catchError((err: unknown) =>
        err instanceof StaleOffer
          ? sendJobOnce(endpoint, job, state, false)
          : throwError(() => err),
      ),
    );
  if (pooled === undefined) return fresh();
  if (pooled.annexed === true) {
    // A warm connection whose cost query is done: the job's hello and the job go out on it as
    // on a new connection. Its hello refused (a rake-ts server from before `load` takes no
    // hello after a cost query; nothing ran): the job dials, no retry used. A connection lost
    // later is the job's failure, as on a new connection: the command may have run. (One the
    // server closed while it waited is not taken: `ConnectionPool.take`.)
    return sendJobOnce(endpoint, job, state, true, pooled).pipe(
      catchError((err: unknown) =>
        err instanceof StaleOffer
          ? sendJobOnce(endpoint, job, state, false)
          : err instanceof HelloRefused
            ? fresh()
            : throwError(() => err),
      ),
    );
  }
  return sendJobPooled(endpoint, job, state, pooled, fresh);
}

/**
 * One job over a connection kept from an earlier job (extension `reuse`): no dial, no hello,
 * no proof; the cache's `have` → `need` when granted, then `upload`, `execute`, `download`
 * as on a new connection, and the connection goes back to the pool after its files. A kept
 * connection the server closed meanwhile (its idle timeout, a restart) fails before any
 * reply: the job then goes on as `fresh`, on a new connection, with no retry used.
 */
function sendJobPooled(
  endpoint: Endpoint,
  job: JobRequest,
  state: TransportState,
  conn: PooledConnection,
  fresh: () => Observable<JobProgress>,
): Observable<JobProgress> {
  const { limits, track } = state;
  const host = hostKey(endpoint);
  const { peer, granted } = conn;
  const pool = state.pool as ConnectionPool;
  let replied = false;
  return new Observable<JobProgress>((sub) => {
    let kept = false;
    // One step from `connected` to the reply (planned, uploaded, replied: every job of a run
    // with load streams takes this way), then the download only when output files follow:
    // a kept connection's job with none has nothing left to do (no `!D`).
    let planned: JobPlan | undefined;
    const inner = step<JobProgress, Replied>(track, async (emit) => {
      emit({ type: 'connected' });
      const carriesPaths = granted.has('cwd');
      const layout = jobLayout(job.outputDir, job.files, carriesPaths, host);
      if (!layout.ok) throw new JobError('requirement-collision', layout.message, true);
      const plan = await planJob(peer, {
        files: layout.files,
        cwd: layout.cwd,
        token: undefined,
        cacheable: job.cache !== undefined,
        mayOfferEarly: false,
        hasher: state.hasher,
      });
      const files =
        granted.has('cache') && plan.files.length > 0
          ? await offerCached(conn.socket, conn.reader, plan.files, {
              hasher: state.hasher,
              endpoint,
              limits,
              minBytes: granted.has('push') ? CACHE_MIN_BYTES : 0,
            })
          : plan.files;
      planned = files === plan.files ? plan : { ...plan, files };
      const u = await sendUpload(conn, uploadSpec(job, planned, granted), emit);
      return awaitReply(conn, u, { granted, limits, spool: state.spool, host }, emit);
    })
      .pipe(
        then((r) => {
          replied = true;
          return r.outputs
            ? download(
                conn,
                r,
                downloadSpec(job, planCwd(planned as JobPlan), granted, limits, host, true),
                track,
              )
            : NOTHING_TO_DOWNLOAD;
        }),
      )
      // The chain's progress passes, its results are dropped (progressOnly's work, and the
      // catchError that moved a gone connection's job to a new one, in this subscriber: every
      // job of a run with load streams comes here).
      .subscribe({
        next: (t) => {
          if ('progress' in t) sub.next(t.progress);
        },
        error: (err: unknown) => {
          conn.reader.dispose();
          conn.socket.destroy();
          if (!replied && (isConnectionError(err) || isProtocolError(err, 'short-read'))) {
            sub.add(
              fresh().subscribe({
                next: (p) => sub.next(p),
                error: (e: unknown) => sub.error(e),
                complete: () => sub.complete(),
              }),
            );
          } else {
            sub.error(
              err instanceof AfterReply
                ? classifyJobError(err.error, true)
                : classifyJobError(err, replied),
            );
          }
        },
        complete: () => {
          kept = true;
          pool.give(host, conn);
          sub.complete();
        },
      });
    return () => {
      inner.unsubscribe();
      if (!kept) {
        conn.reader.dispose();
        conn.socket.destroy();
      }
    };
  });
}

/**
 * One job over one connection: connect, learn what the host is, plan the talk (`planJob`,
 * a {@link JobPlan}), shake hands as planned, then `upload`, `execute`, `download`
 * (src/client/ops/), each an Observable step over the socket. A host that grants less than
 * the plan assumed ends it with a {@link StaleOffer} (see `sendJobRetrying`).
 */
function sendJobOnce(
  endpoint: Endpoint,
  job: JobRequest,
  state: TransportState,
  mayOfferEarly: boolean,
  /** A warm connection whose cost query is done (`annexed`), instead of dialing. */
  opened?: PooledConnection,
): Observable<JobProgress> {
  const { limits, track } = state;
  const host = hostKey(endpoint);
  const token = state.trusted.get(endpointIdentity(endpoint)) ?? state.token;
  const classify = (err: unknown) =>
    err instanceof StaleOffer
      ? err
      : err instanceof AfterReply
        ? classifyJobError(err.error, true)
        : classifyJobError(err, false);
  const dialing = opened === undefined ? state : { ...state, opened };
  return conversation(endpoint, dialing, classify, (conn) => {
    /** The handshake's outcome, for the steps after it. */
    let shaken: Shaken | undefined;
    return step<JobProgress, void>(track, async (emit) => {
      await connected(conn.socket);
      emit({ type: 'connected' });
    }).pipe(
      // A warm connection's host is what its own cost reply said.
      then(() => (opened === undefined ? peerStep(endpoint, state) : of(told(opened.peer)))),
      then((peer) =>
        step(track, async () => {
          // Where each file lands: with `cwd`, a requirement above the Rakefile's directory
          // keeps its place; elsewhere two files under one base name are refused before
          // anything is sent.
          const carriesPaths = peer.kind === 'rake' && peer.extensions.includes('cwd');
          const layout = jobLayout(job.outputDir, job.files, carriesPaths, host);
          if (!layout.ok) throw new JobError('requirement-collision', layout.message, true);
          const plan = await planJob(peer, {
            files: layout.files,
            cwd: layout.cwd,
            token,
            cacheable: job.cache !== undefined,
            mayOfferEarly,
            hasher: state.hasher,
          });
          return { peer, plan };
        }),
      ),
      then(({ peer, plan }) => shakeHands(conn, endpoint, peer, plan, job, token, state)),
      // One chain to the end (no inner chain for upload → execute → download): every job on
      // a new connection takes this way.
      then((talk) => {
        shaken = talk;
        return talk.uploaded !== undefined
          ? of(told(talk.uploaded))
          : upload(conn, uploadSpec(job, talk.plan, talk.granted), track);
      }),
      then((u) => {
        const { granted } = shaken as Shaken;
        return execute(conn, u, { granted, limits, spool: state.spool, host }, track);
      }),
      then((replied) => {
        const { plan, granted, peer } = shaken as Shaken;
        const keep = state.pool !== undefined && granted.has('reuse');
        const download$ = download(
          conn,
          replied,
          downloadSpec(job, planCwd(plan), granted, limits, host, keep),
          track,
        );
        if (!keep) return download$;
        return download$.pipe(
          tap<Told<JobProgress, void>>({
            complete: () => {
              if (state.pool === undefined || conn.detach === undefined) return;
              conn.detach();
              state.pool.give(host, { socket: conn.socket, reader: conn.reader, peer, granted });
            },
          }),
        );
      }),
      progressOnly(),
    );
  });
}

/** A job step's result. */
function told<T>(value: T): Told<JobProgress, T> {
  return { result: value };
}

/** The download of a kept connection's job whose reply said no files follow: none. */
const NOTHING_TO_DOWNLOAD: Observable<Told<JobProgress, void>> = of(told(undefined));

/** What the handshake leaves: the extensions granted, the files to send (after `need`). */
interface Shaken {
  /** The host, as it described itself. */
  readonly peer: PeerInfo;
  readonly plan: JobPlan;
  readonly granted: ReadonlySet<Extension>;
  /** A pushed plan's upload, already sent behind the hello. */
  readonly uploaded?: Uploaded;
}

/**
 * The handshake a plan calls for: none for `base`; a hello (and a challenge) for the others,
 * with the `have` or the whole job behind it when planned; then the cache's `have` → `need`
 * when granted. A host that grants less than the plan sent on its promise is believed from
 * now on (its self-description narrowed) and the job starts again: {@link StaleOffer}.
 */
function shakeHands(
  conn: Connection,
  endpoint: Endpoint,
  peer: PeerInfo,
  plan: JobPlan,
  job: JobRequest,
  token: Token | undefined,
  state: TransportState,
): Observable<Told<JobProgress, Shaken>> {
  if (plan.kind === 'base') return of(told({ peer, plan, granted: new Set<Extension>() }));
  const { socket, reader } = conn;
  const { limits } = state;
  return step<JobProgress, Shaken>(state.track, async (emit) => {
    let uploaded: Uploaded | undefined;
    const granted = await negotiate(socket, reader, {
      endpoint,
      token,
      limits,
      reuse: state.pool !== undefined,
      ...(plan.kind === 'pushed'
        ? {
            followUp: async () => {
              uploaded = await sendUpload(
                conn,
                {
                  command: job.command,
                  files: plan.files,
                  modes: true,
                  push: true,
                  startReported: plan.queue,
                  cwd: plan.cwd,
                  lookup: false,
                },
                emit,
              );
            },
            okWithReply: true,
            okWithinBeats: plan.beats,
          }
        : plan.kind === 'extended-cache'
          ? { followUp: plan.offer.message }
          : {}),
    });
    if (peer.kind === 'rake' && staleFor(plan, granted)) {
      // Believe the hello from now on: later jobs send nothing early to this host.
      state.peers.record(endpoint, {
        ...peer,
        extensions: peer.extensions.filter((e) => granted.has(e)),
      });
      throw new StaleOffer();
    }
    if (plan.kind === 'pushed') return { peer, plan, granted, ...(uploaded ? { uploaded } : {}) };
    const files =
      plan.kind === 'extended-cache'
        ? await readNeed(reader, plan.files, plan.offer, { endpoint, limits })
        : granted.has('cache') && plan.files.length > 0
          ? await offerCached(socket, reader, plan.files, {
              hasher: state.hasher,
              endpoint,
              limits,
              minBytes: granted.has('push') ? CACHE_MIN_BYTES : 0,
            })
          : plan.files;
    return { peer, plan: { ...plan, files }, granted };
  });
}

/** Where a plan's paths are relative to on the server (`cwd`); a base plan has none. */
function planCwd(plan: JobPlan): string | undefined {
  return plan.kind === 'base' ? undefined : plan.cwd;
}

/** How a job's reply is read, from what was granted; `keep` leaves the connection for reuse. */
function downloadSpec(
  job: JobRequest,
  cwd: string | undefined,
  granted: ReadonlySet<Extension>,
  limits: TransportLimits,
  host: string,
  keep?: boolean,
): DownloadSpec {
  return {
    job,
    cwd,
    limits,
    modes: granted.has('mode'),
    push: granted.has('push'),
    host,
    ...(keep === undefined ? {} : { keep }),
  };
}

/** The upload a plan and its grant call for (all but a pushed plan's, sent with the hello). */
function uploadSpec(job: JobRequest, plan: JobPlan, granted: ReadonlySet<Extension>): UploadSpec {
  return {
    command: job.command,
    files: plan.files,
    modes: granted.has('mode'),
    push: granted.has('push'),
    startReported: plan.kind === 'base' ? undefined : granted.has('queue'),
    cwd: planCwd(plan),
    lookup: plan.kind !== 'base' && plan.kind !== 'pushed' && plan.lookup && granted.has('results'),
  };
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
