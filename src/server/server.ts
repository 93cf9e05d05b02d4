import { mkdir, mkdtemp } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { type Logger, pino } from 'pino';
import { ownPlatform } from '../cache/key.js';
import { LocalCache } from '../cache/store.js';
import {
  DEFAULT_LIMITS,
  describeServer,
  EXTENSIONS,
  type Extension,
  Token,
} from '../protocol/index.js';
import type { ReapiServerHandle } from '../reapi/server.js';
import type { ServerTls } from '../tls/index.js';
import type { TlsListener } from '../tls/server.js';
import { packageVersion } from '../util/version.js';
import { InputCache } from './cache.js';
import { Connection } from './connection.js';
import type { ContainmentChoice } from './containment.js';
import type { ServerLimits } from './context.js';
import { DEFAULT_CACHE_SIZE, DEFAULT_PORT, DEFAULT_RESULTS_SIZE, isLoopback } from './defaults.js';
import { defaultMaxConnections, descriptorLimit } from './descriptors.js';
import { JobDirs } from './jobdirs.js';
import { createLauncher, type Launcher, OnDemandLauncher, type SpawnerChoice } from './launcher.js';
import { LoadFeed } from './load.js';
import { removeTree } from './outputs.js';
import { REFUSAL_EXIT_CODE } from './reply.js';
import { type ScratchRoot, scratchRoot } from './scratch.js';
import { JobSlots } from './slots.js';
import { OWNER_TAG, removeStale } from './stale.js';

export { DEFAULT_CACHE_SIZE, DEFAULT_PORT, DEFAULT_RESULTS_SIZE };

/** The server's limits when not configured: the wire defaults plus 64 MiB of output. */
export const DEFAULT_SERVER_LIMITS: ServerLimits = {
  ...DEFAULT_LIMITS,
  maxOutputBytes: 64 * 1024 * 1024,
};

/**
 * Emptied job directories a server keeps for reuse (src/server/jobdirs.ts). A client may
 * queue every action of an actionset on one server at once, so this is well above the
 * number of job slots; an empty directory costs an inode and a block.
 */
const SPARE_JOB_DIRS = 256;

/** See {@link ServeOptions.heartbeatIntervalSeconds}. */
export const DEFAULT_HEARTBEAT_SECONDS = 5;

/** See {@link ServeOptions.messageTimeoutSeconds}. */
export const DEFAULT_MESSAGE_TIMEOUT_SECONDS = 10;

/** Options for {@link serve}; the `rakeserver` flags map onto these one to one. */
export interface ServeOptions {
  /** Address to bind (default 127.0.0.1: the server runs any command it is sent). */
  readonly host?: string;
  /** Port to bind (default 6238; 0 = any free port). */
  readonly port?: number;
  /**
   * Labels of this host's kind (`--platform cc=gcc-12`), announced with its `os` and `arch`
   * to a client that asks, for its action cache's key (docs/server.md).
   */
  readonly platform?: Readonly<Record<string, string>>;
  /**
   * Parent of the job directories and the input cache (default: a fresh directory, removed
   * on close, in memory where it can be: see `scratchRoot` in scratch.ts).
   */
  readonly workdir?: string;
  /** Jobs run at once; more commands wait in a queue (default: available parallelism). */
  readonly maxJobs?: number;
  /** Added to the reported cost (e.g. a host that is slower or has a special library). */
  readonly costOffset?: number;
  /** Kill a job after this many seconds (default 0 = never). */
  readonly jobTimeoutSeconds?: number;
  /** Close a connection that sends nothing for this long while a request is due (default 300; 0 = never). */
  readonly idleTimeoutSeconds?: number;
  /**
   * A message (a header, a command, an `!X`) must be whole this many seconds after its first
   * byte, however slowly its bytes come (default 10; 0 = no deadline). A payload gets a
   * second more per 64 KiB. Against peers that trickle bytes to hold connections open.
   */
  readonly messageTimeoutSeconds?: number;
  /**
   * Connections open at once (`--max-connections`; default: derived from the descriptor
   * limit, see `defaultMaxConnections`). At the cap a new connection evicts the oldest one
   * that has no job; when every one has a job, the new one is closed, and that is logged.
   */
  readonly maxConnections?: number;
  /**
   * Seconds between the `!X beat` messages a client with extension `beat` gets while its
   * command is queued or runs (`--heartbeat-interval`, default 5; 0 = the extension is off).
   * A client takes a host silent for 3 intervals as lost.
   */
  readonly heartbeatIntervalSeconds?: number;
  /** On close, how long running jobs may finish before they are killed (default 10). */
  readonly graceSeconds?: number;
  /** pino logger; silent by default. */
  readonly logger?: Logger;
  readonly limits?: Partial<ServerLimits>;
  /**
   * Require clients to prove they know this token (extension `auth`); base-protocol
   * clients then get cost answers only. Never logged.
   */
  readonly token?: Token | string;
  /** Bytes of requirement contents kept by hash (extension `cache`); 0 = no cache. Default 512 MiB. */
  readonly cacheSize?: number;
  /**
   * Bytes of job results kept by action key (extension `results`, the shared action cache):
   * the stdout and output files of successful jobs this server ran for a client that asked
   * (`!X lookup`), under `<workdir>/results`, least recently used first out. 0 = off.
   * Default 256 MiB.
   */
  readonly resultsSize?: number;
  /**
   * Extensions granted to a client that asks (default: `stderr`, `mode`, `push`, `cwd`,
   * `queue`, `beat` unless `heartbeatIntervalSeconds` is 0, and `cache` when `cacheSize` > 0).
   * `auth` is not listed here: it follows from `token`.
   */
  readonly extensions?: readonly Extension[];
  /** Version announced to our clients (default: this package's). */
  readonly version?: string;
  /**
   * How jobs are started (`--spawner`): `python3` through the spawn helper, `node` with
   * `child_process.spawn`, `auto` (default) the helper when `python3` runs, else Node.
   */
  readonly spawner?: SpawnerChoice;
  /**
   * How every process of a job is found and killed when it ends (`RAKE_JOB_CONTAINMENT`):
   * `cgroup` (a cgroup v2 per job), `tag` (its environment), `auto` (default) the first when
   * the machine allows it. src/server/containment.ts.
   */
  readonly containment?: ContainmentChoice;
  /**
   * Make the launcher (spawn helper, containment probe) at the first job, not before
   * listening: the client's embedded servers, whose run may send them no job at all (every
   * action from the action cache). Default false: a rakeserver finds a broken spawner at once.
   */
  readonly launcherOnDemand?: boolean;
  /** Also serve REAPI v2 on this port (`--reapi-port`; 0 = any free port): docs/remote-execution.md. */
  readonly reapiPort?: number;
  /** Test-only: the REAPI endpoint refuses an output path `""` as Buildfarm does (ReapiContext). */
  readonly reapiRefuseEmptyOutputPath?: boolean;
  /**
   * Serve TLS too, on its own port (`--tls-port`, default 6239) beside the plain one: base
   * clients keep the plain port. With `clientCa`, only clients with a certificate it signed.
   */
  readonly tls?: ServerTls;
  /** Listen on the plain port (default true); false serves TLS only (`--no-plain`). */
  readonly plain?: boolean;
}

/** A running server: where it listens, its current cost, and how to stop it. */
export interface ServerHandle {
  readonly host: string;
  /** The plain port; the TLS port when the server serves TLS only. */
  readonly port: number;
  /** The TLS port, when the server serves TLS. */
  readonly tlsPort: number | undefined;
  /** The directory holding the job directories. */
  readonly workdir: string;
  /** The cost a query would report now. */
  cost(): number;
  /** What this server tells our clients about itself: `rake/1 v=… ext=…`. */
  readonly description: string;
  /** The input cache, when on (for tests and benchmarks). */
  readonly cache: InputCache | undefined;
  /**
   * What starts the jobs: the `python3` spawn helper or `node` (`on-demand`: chosen at the
   * first job, with `launcherOnDemand`).
   */
  readonly spawner: 'python3' | 'node' | 'on-demand';
  /** What holds every process of a job, to kill them all: `cgroup` or `tag` (or `on-demand`). */
  readonly containment: 'cgroup' | 'tag' | 'on-demand';
  /** The REAPI endpoint's port, when `reapiPort` asked for one. */
  readonly reapiPort: number | undefined;
  /**
   * Stops accepting, lets running jobs finish within the grace period, then kills what is
   * left and removes every job directory. Idempotent.
   */
  close(options?: { graceSeconds?: number }): Promise<void>;
}

/** A new workdir of this server's own, where {@link scratchRoot} says, and why there. */
async function freshWorkdir(): Promise<{ workdir: string; scratch: ScratchRoot }> {
  const scratch = scratchRoot();
  return { workdir: await mkdtemp(join(scratch.dir, `rakeserver-${OWNER_TAG}-`)), scratch };
}

/** Starts a rakeserver (docs/server.md). Resolves once it is listening. */
export async function serve(options: ServeOptions = {}): Promise<ServerHandle> {
  const parent = options.logger ?? pino({ level: 'silent' });
  // An embedder that names the component (the client's `embedded-server`) keeps its name:
  // a second `component` key would repeat it in every record.
  const log = 'component' in parent.bindings() ? parent : parent.child({ component: 'server' });
  const host = options.host ?? '127.0.0.1';
  const limits: ServerLimits = { ...DEFAULT_SERVER_LIMITS, ...options.limits };
  const { workdir, scratch } =
    options.workdir === undefined
      ? await freshWorkdir()
      : { workdir: resolve(options.workdir), scratch: undefined };
  const ownsWorkdir = scratch !== undefined;
  if (!ownsWorkdir) await mkdir(workdir, { recursive: true });
  const costOffset = options.costOffset ?? 0;
  const maxJobs = options.maxJobs ?? availableParallelism();
  const token =
    options.token === undefined || options.token instanceof Token
      ? options.token
      : new Token(options.token);
  const cacheSize = options.cacheSize ?? DEFAULT_CACHE_SIZE;
  const wanted = new Set(options.extensions ?? EXTENSIONS);
  let cache: InputCache | undefined;
  if (cacheSize > 0 && wanted.has('cache')) {
    cache = await InputCache.open(join(workdir, 'cache'), cacheSize, log.child({ part: 'cache' }));
  }
  const resultsSize = options.resultsSize ?? DEFAULT_RESULTS_SIZE;
  let results: LocalCache | undefined;
  if (resultsSize > 0 && wanted.has('results')) {
    const resultsLog = log.child({ part: 'results' });
    results = new LocalCache(join(workdir, 'results'), resultsSize, (message) =>
      resultsLog.warn(message),
    );
  }
  const heartbeatSeconds = options.heartbeatIntervalSeconds ?? DEFAULT_HEARTBEAT_SECONDS;
  const granted = new Set<Extension>(
    (['stderr', 'mode', 'push', 'cwd', 'queue'] as const).filter((e) => wanted.has(e)),
  );
  if (cache) granted.add('cache');
  if (results) granted.add('results');
  if (wanted.has('beat') && heartbeatSeconds > 0) granted.add('beat');
  // The load stream repeats itself at the heartbeat's interval (silence means lost): no
  // heartbeat, no load stream. Neither it nor `reuse` is listed in the annex (no room): a
  // client asks for them in its hello (docs/protocol.md, "load", "reuse").
  if (wanted.has('load') && heartbeatSeconds > 0) granted.add('load');
  if (wanted.has('reuse')) granted.add('reuse');
  const description = describeServer(
    options.version ?? packageVersion(),
    // `beat` is listed for clients that send a job behind their hello (so they bound the wait
    // for the `ok` it carries); with a token nobody does, and the annex's 59 bytes are few.
    [
      // `results` is only ever asked in a hello (the lookup follows the `ok`): not listed.
      ...[...granted].filter(
        (e) => !(token && e === 'beat') && e !== 'results' && e !== 'load' && e !== 'reuse',
      ),
      ...(token ? (['auth'] as const) : []),
    ],
    maxJobs,
  );
  let managing = 0;
  const slots: JobSlots = new JobSlots(maxJobs, () => load.changed());
  // Extension `load`: what every watching connection is told, whenever it changes.
  const load: LoadFeed = new LoadFeed(() => ({
    jobs: managing,
    running: slots.running,
    queued: slots.queued,
    slots: slots.max,
    ...(costOffset > 0 ? { offset: costOffset } : {}),
  }));
  const jobDirs = new JobDirs(workdir, SPARE_JOB_DIRS);
  const makeLauncher = () =>
    createLauncher(
      options.spawner ?? 'auto',
      log.child({ part: 'spawner' }),
      undefined,
      options.containment,
    );
  let launcher: Launcher;
  try {
    launcher =
      options.launcherOnDemand === true ? new OnDemandLauncher(makeLauncher) : await makeLauncher();
  } catch (err) {
    if (ownsWorkdir) await removeTree(workdir);
    throw err;
  }
  // Large stdout of finished jobs waits here for its reply (StdoutSpool), not in the heap.
  const spoolDir = await mkdtemp(join(workdir, `spool-${OWNER_TAG}-`));
  const descriptors = descriptorLimit();
  const maxConnections =
    options.maxConnections ?? defaultMaxConnections(descriptors.limit, maxJobs);
  const connections = new Set<Connection>();
  let nextId = 1;
  let closing: Promise<void> | undefined;

  const context = {
    logger: log,
    limits,
    workdir,
    spoolDir,
    jobTimeoutMs: (options.jobTimeoutSeconds ?? 0) * 1000,
    idleTimeoutMs: (options.idleTimeoutSeconds ?? 300) * 1000,
    heartbeatMs:
      heartbeatSeconds > 0 ? Math.max(1, Math.round(heartbeatSeconds * 1000)) : undefined,
    messageTimeoutMs:
      options.messageTimeoutSeconds === 0
        ? undefined
        : (options.messageTimeoutSeconds ?? DEFAULT_MESSAGE_TIMEOUT_SECONDS) * 1000,
    slots,
    launcher,
    jobDirs,
    cost: () => managing + costOffset,
    manage: (delta: 1 | -1) => {
      managing += delta;
      load.changed();
    },
    closing: () => closing !== undefined,
    token,
    cache,
    results,
    extensions: granted,
    load,
    description,
    platform: ownPlatform(options.platform),
  };

  let refusedSinceLog = 0;
  let lastRefusalLog = Number.NEGATIVE_INFINITY;
  /** At the cap: closes the oldest connection without a job (a Set iterates oldest first). */
  const evictIdle = (): boolean => {
    for (const conn of connections) {
      if (conn.managing || conn.evicted) continue;
      conn.evict(maxConnections);
      return true;
    }
    return false;
  };

  const onConnection = (socket: Socket) => {
    if (closing) {
      socket.destroy();
      return;
    }
    if (connections.size >= maxConnections && !evictIdle()) {
      // Every connection has a job: this one gets nothing but a close, which a client
      // takes as a lost host (it retries elsewhere). Logged at most once a second.
      socket.on('error', () => {});
      socket.destroy();
      refusedSinceLog++;
      const now = performance.now();
      if (now - lastRefusalLog >= 1000) {
        log.warn(
          {
            reason: 'max-connections',
            maxConnections,
            remote: `${socket.remoteAddress}:${socket.remotePort}`,
            refused: refusedSinceLog,
          },
          'connection refused: at --max-connections, every connection has a job',
        );
        lastRefusalLog = now;
        refusedSinceLog = 0;
      }
      return;
    }
    const conn = new Connection(nextId++, socket, context);
    connections.add(conn);
    void conn.done.finally(() => connections.delete(conn));
  };
  const server: Server = createServer({ allowHalfOpen: true }, onConnection);
  const plain = options.plain ?? true;
  let tlsListener: TlsListener | undefined;

  try {
    if (!plain && options.tls === undefined) {
      throw new Error('no port to serve: the plain port is off and no TLS certificate is given');
    }
    if (plain) {
      await new Promise<void>((ok, fail) => {
        server.once('error', fail);
        server.listen(options.port ?? DEFAULT_PORT, host, () => {
          server.off('error', fail);
          ok();
        });
      });
    }
    if (options.tls !== undefined) {
      // Loaded only for a server with a certificate (node:tls costs 15-20 ms to load).
      const { listenTls } = await import('../tls/server.js');
      const plainAddress = plain ? server.address() : null;
      tlsListener = await listenTls({
        tls: options.tls,
        host,
        idleTimeoutMs: context.idleTimeoutMs || 300_000,
        plainPort: typeof plainAddress === 'object' && plainAddress ? plainAddress.port : undefined,
        log,
        refusalExitCode: REFUSAL_EXIT_CODE,
        accept: onConnection,
      });
    }
  } catch (err) {
    if (server.listening) server.close();
    await launcher.close();
    await removeTree(spoolDir);
    if (ownsWorkdir) await removeTree(workdir);
    throw err;
  }
  server.on('error', (err) => log.error({ err }, 'listener error'));
  let reapi: ReapiServerHandle | undefined;
  if (options.reapiPort !== undefined) {
    try {
      // Loaded only when asked for: gRPC is a large module tree that no other server needs.
      const { startReapiServer } = await import('../reapi/server.js');
      reapi = await startReapiServer(
        {
          ...context,
          maxOutputBytes: limits.maxOutputBytes,
          casBytes: cacheSize > 0 ? cacheSize : DEFAULT_CACHE_SIZE,
          refuseEmptyOutputPath: options.reapiRefuseEmptyOutputPath === true,
        },
        { host, port: options.reapiPort },
      );
    } catch (err) {
      server.close();
      tlsListener?.server.close();
      await launcher.close();
      await removeTree(spoolDir);
      if (ownsWorkdir) await removeTree(workdir);
      throw err;
    }
  }
  const address = plain ? server.address() : null;
  const port =
    typeof address === 'object' && address
      ? address.port
      : (tlsListener?.port ?? options.port ?? 0);
  const tlsPort = tlsListener?.port;

  if (!isLoopback(host) && token === undefined && (plain || options.tls?.clientCa === undefined)) {
    log.warn(
      { host, port },
      'LISTENING BEYOND LOOPBACK WITHOUT A TOKEN: this server runs ANY command any peer sends it, as this user; set --token-file or RAKE_TOKEN',
    );
  }
  log.info(
    {
      host,
      port: plain ? port : undefined,
      ...(tlsPort === undefined ? {} : { tlsPort, mutualTls: options.tls?.clientCa !== undefined }),
      workdir,
      maxJobs,
      maxConnections,
      ...(options.maxConnections === undefined
        ? { descriptors: descriptors.limit, descriptorsFrom: descriptors.source }
        : {}),
      costOffset,
      limits,
      auth: token !== undefined,
      access: whoCanConnect(host, token !== undefined),
      cacheSize: cache ? cacheSize : 0,
      spawner: launcher.kind,
      containment: launcher.containment.kind,
      containmentDetail: launcher.containment.detail,
      description,
      ...(scratch === undefined
        ? {}
        : { scratch: scratch.reason, ...(scratch.why === undefined ? {} : { why: scratch.why }) }),
    },
    'listening',
  );
  // In the background: what servers killed before they could clean up left here.
  // (The spawn helper's socket directory is always in the temp dir.)
  const sweepDirs = new Set([tmpdir(), scratch?.dir ?? workdir]);
  const sweeping = Promise.all([...sweepDirs].map((dir) => removeStale(dir, log)));

  const shutdown = async (graceSeconds: number): Promise<void> => {
    log.info({ graceSeconds, connections: connections.size, managing }, 'shutting down');
    const stopped = Promise.all(
      [plain ? server : undefined, tlsListener?.server].map(
        (s) => new Promise<void>((ok) => (s === undefined ? ok() : s.close(() => ok()))),
      ),
    );
    for (const conn of connections) if (!conn.managing) conn.shutdown();
    const all = () => Promise.all([...connections].map((c) => c.done));
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<'expired'>((ok) => {
      timer = setTimeout(() => ok('expired'), graceSeconds * 1000);
    });
    const first = await Promise.race([all().then(() => 'finished' as const), expired]);
    clearTimeout(timer);
    if (first === 'expired') {
      log.warn({ connections: connections.size }, 'grace period over: killing remaining jobs');
      for (const conn of connections) conn.shutdown();
    }
    await all();
    await reapi?.close();
    await stopped;
    await launcher.close();
    await jobDirs.close();
    await removeTree(spoolDir);
    await sweeping;
    // Each connection removed its own directory; a shared --workdir is left as it was.
    if (ownsWorkdir) await removeTree(workdir);
    log.info('stopped');
  };

  return {
    host,
    port,
    tlsPort,
    workdir,
    cost: context.cost,
    description,
    cache,
    spawner: launcher.kind,
    containment: launcher.containment.kind,
    reapiPort: reapi?.port,
    close(closeOptions = {}) {
      closing ??= shutdown(closeOptions.graceSeconds ?? options.graceSeconds ?? 10);
      return closing;
    },
  };
}

/**
 * Who can run commands on a server, said in its `listening` line: the token is the only
 * line of defence, and loopback is not one on a machine other people log in to.
 */
export function whoCanConnect(host: string, hasToken: boolean): string {
  if (hasToken) return 'only clients that prove they know the token';
  if (isLoopback(host)) {
    return 'every user of this machine, as this user: no token (on a machine others use, start it with --token-file)';
  }
  return `anyone who can connect to ${host}, as this user: no token (use --token-file)`;
}
