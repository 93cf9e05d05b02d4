import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import {
  catchError,
  defer,
  EMPTY,
  from,
  ignoreElements,
  mergeMap,
  type Observable,
  of,
  type SchedulerLike,
  shareReplay,
  TimeoutError,
  tap,
  timeout,
} from 'rxjs';
import { Token } from '../protocol/token.js';
import { bindAddress, type Endpoint, endpointIdentity, hostKey, isLoopback } from './endpoint.js';
import { isConnectionRefused } from './errors.js';
import type { RakeEvent } from './events.js';
import type { Transport } from './transport.js';

/** A server this client started in its own process; stopped when the run ends. */
export interface EmbeddedServer {
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Starts a server at a loopback endpoint: `serve()` from src/server by default. It must
 * require `token` (the run's secret), so that no other user of the machine can run commands
 * through it as this user.
 */
export type StartServer = (
  endpoint: Endpoint,
  logger: Logger,
  token: Token,
) => Promise<EmbeddedServer>;

/** Why an embedded server is wanted; carried by the `embedded-server-started` event. */
export type EmbeddedReason = 'local-actions' | 'loopback-host' | 'fallback';

/** The default {@link StartServer}: an in-process `serve()`. */
export const startEmbeddedServer: StartServer = async (endpoint, logger, token) => {
  // Loaded only when a server is started: most runs find theirs listening.
  const { serve } = await import('../server/server.js');
  const handle = await serve({
    host: bindAddress(endpoint.host),
    port: endpoint.port,
    logger,
    token,
    // A run whose actions all come from the action cache sends it no job: no spawn helper
    // is started (nor waited for) until one comes.
    launcherOnDemand: true,
  });
  // By the time a run closes it, its jobs have ended (or their connections were closed, which
  // kills them): the grace period only lets the last connections finish cleanly.
  return { host: handle.host, port: handle.port, close: () => handle.close({ graceSeconds: 2 }) };
};

/**
 * The loopback endpoints this run has checked: where nothing listens, and embedded servers
 * are allowed, one is started (once per endpoint, however many actions ask).
 */
export class EmbeddedServers {
  readonly #checks = new Map<string, Observable<RakeEvent>>();
  readonly #started: EmbeddedServer[] = [];
  /** Hosts whose probe connected but got no answer in time, and none since. */
  readonly #silent = new Set<string>();
  readonly #transport: Transport;
  readonly #logger: Logger;
  readonly #serverParent: Logger | undefined;
  readonly #start: StartServer;
  readonly #enabled: boolean;
  readonly #probeTimeoutMs: number;
  readonly #replyTimeoutMs: number;
  readonly #scheduler: SchedulerLike;
  #closed = false;

  constructor(options: {
    transport: Transport;
    logger: Logger;
    /**
     * The logger an embedded server's records derive from: the run's own, not the client's
     * child, so they carry `component: "embedded-server"` once (default: `logger`).
     */
    serverLogger?: Logger | undefined;
    start: StartServer;
    enabled: boolean;
    /** Time allowed for the probe's TCP connect (`--connect-timeout`). */
    probeTimeoutMs: number;
    /** Time allowed, once connected, for the probe's answer (`--cost-timeout`; default: the same). */
    replyTimeoutMs?: number;
    scheduler: SchedulerLike;
  }) {
    this.#transport = options.transport;
    this.#logger = options.logger;
    this.#serverParent = options.serverLogger;
    this.#start = options.start;
    this.#enabled = options.enabled;
    this.#probeTimeoutMs = options.probeTimeoutMs;
    this.#replyTimeoutMs = options.replyTimeoutMs ?? options.probeTimeoutMs;
    this.#scheduler = options.scheduler;
  }

  /**
   * Makes sure a server answers at `endpoint` if it is a loopback address: probes it with a
   * cost query and, if the connection is refused, starts an embedded server there. Emits
   * `embedded-server-started` when it does; completes without events otherwise (a host
   * that is not loopback, or that answers, or a failure left to the job to report).
   *
   * The whole probe is bounded: the connect by `probeTimeoutMs`, the answer by
   * `replyTimeoutMs`. Something that listens but does not answer (a frozen server, another
   * protocol) gets no embedded server: the probe ends and the cost poll reports the host as
   * not answering. The check is shared by every caller, and its socket is closed as soon as
   * the last of them unsubscribes (a cancelled run leaves no connection open).
   */
  ensure(endpoint: Endpoint, reason: EmbeddedReason): Observable<RakeEvent> {
    // An embedded server speaks no TLS: a `rakes://` endpoint (a host, or the local server
    // when it is one of them) must be a real server.
    if (!this.#enabled || !isLoopback(endpoint.host) || endpoint.tls === true) return EMPTY;
    const key = endpointIdentity(endpoint);
    const known = this.#checks.get(key);
    // Later callers wait for the same check, without a second copy of its event.
    if (known !== undefined) return known.pipe(ignoreElements());
    const check = this.#check(endpoint, reason).pipe(shareReplay({ refCount: true }));
    this.#checks.set(key, check);
    return check;
  }

  /**
   * Whether the probe of `host` (`host:port`) found something that listens but did not
   * answer, and no cost answer from it has been seen since (see {@link answered}).
   */
  silent(host: string): boolean {
    return this.#silent.has(host);
  }

  /** A cost answer from `host` arrived: it is no longer {@link silent}. */
  answered(host: string): void {
    this.#silent.delete(host);
  }

  #check(endpoint: Endpoint, reason: EmbeddedReason): Observable<RakeEvent> {
    let connected = false;
    const probe$ = this.#transport.queryCost(endpoint).pipe(
      tap((p) => {
        if (p.type === 'connected') connected = true;
        else this.answered(hostKey(endpoint));
      }),
      // `first` bounds the connect, `each` the wait for the answer after it (and for the
      // end after the answer): no emission of the probe is awaited without a deadline.
      timeout({
        first: this.#probeTimeoutMs,
        each: this.#replyTimeoutMs,
        scheduler: this.#scheduler,
      }),
      ignoreElements(),
    );
    return probe$.pipe(
      catchError((err: unknown) => {
        if (!isConnectionRefused(err)) {
          if (connected && err instanceof TimeoutError) this.#silent.add(hostKey(endpoint));
          this.#logger.debug({ host: hostKey(endpoint), err }, 'probe failed');
          return EMPTY;
        }
        // A secret of this run: the server runs commands only for this client (issue 17,
        // defect 10). Loopback is no barrier on a machine other people use.
        const secret = new Token(randomBytes(32).toString('hex'));
        return defer(() => from(this.#start(endpoint, this.#serverLogger(), secret))).pipe(
          mergeMap((server) => {
            if (this.#closed) {
              // The run ended while the server was starting.
              void server.close();
              return EMPTY;
            }
            this.#started.push(server);
            this.#transport.trust?.(endpoint, secret);
            // Logged from its event, with the others, by whoever subscribes (logEvents).
            return of<RakeEvent>({
              type: 'embedded-server-started',
              time: this.#scheduler.now(),
              host: server.host,
              port: server.port,
              reason,
            });
          }),
          catchError((startErr: unknown) => {
            // Lost a race with another process binding the port: it now listens; fine.
            this.#logger.warn(
              { host: hostKey(endpoint), err: startErr },
              'could not start an embedded server',
            );
            return EMPTY;
          }),
        );
      }),
    );
  }

  /** The embedded server logs warnings only, unless the run logs at debug or finer. */
  #serverLogger(): Logger {
    const parent = this.#serverParent ?? this.#logger;
    const level =
      parent.isLevelEnabled('debug') || !parent.isLevelEnabled('warn') ? parent.level : 'warn';
    return parent.child({ component: 'embedded-server' }, { level });
  }

  /** Stops every embedded server this run started. */
  async close(): Promise<void> {
    this.#closed = true;
    const servers = this.#started.splice(0);
    await Promise.all(servers.map((s) => s.close().catch(() => {})));
  }
}
