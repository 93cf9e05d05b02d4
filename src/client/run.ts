import { basename, dirname, resolve } from 'node:path';
import { type Logger, pino } from 'pino';
import {
  asyncScheduler,
  concat,
  concatMap,
  defer,
  EMPTY,
  finalize,
  from,
  map,
  merge,
  mergeMap,
  type Observable,
  of,
  ReplaySubject,
  type SchedulerLike,
  takeWhile,
  tap,
  timeout,
  toArray,
} from 'rxjs';
import type { Actionset, Rakefile } from '../../grammar/model.js';
import { type ActionsetStream, actionsetStreams } from '../../grammar/stream.js';
import type { LocalCache } from '../cache/store.js';
import type { Token } from '../protocol/token.js';
import type { ClientTls } from '../tls/index.js';
import { type ActionContext, type PlannedAction, runAction } from './action.js';
import { trackCleanup } from './cleanup.js';
import { DEFAULT_DISPATCH_QUEUE, LoadDispatcher } from './dispatch.js';
import type { EarlyDials } from './early-dial.js';
import { EmbeddedServers, type StartServer, startEmbeddedServer } from './embedded.js';
import { type Endpoint, hostKey, isLoopback } from './endpoint.js';
import { type ActionRef, NO_PHASES, type RakeEvent, type RunSummary } from './events.js';
import { distinctHosts, type EmbeddedNote, type HostAlias, type SilentHost } from './hosts.js';
import { OutputClaims } from './landing.js';
import { cancelOn } from './ops/cancel-on.js';
import { OutputSpool } from './output.js';
import { CostPoller, type QueryCost } from './poll.js';
import { resolveRequirements } from './requirements.js';
import { Assignments } from './select.js';
import { type Transport, tcpTransport } from './transport.js';

/** How a run behaves; every field is optional. The CLI flags map onto these. */
export interface RunOptions {
  /**
   * Where requirements are read from and output files written: the Rakefile's directory
   * (default: the directory of `rakefile.file`, or the current directory).
   */
  readonly directory?: string;
  /** Replaces the Rakefile's `HOSTS`. */
  readonly hosts?: readonly Endpoint[];
  /**
   * Replaces the Rakefile's `PORT`: the local server's port, and the port of every host
   * that used `PORT` (that is, whose port equals it).
   */
  readonly port?: number;
  /** At most this many actions of one actionset run at once (default 256; 0 = no limit). */
  readonly jobs?: number;
  /** Time allowed for each TCP connect (default 2000 ms). */
  readonly connectTimeoutMs?: number;
  /** Time allowed, once connected, for a cost answer (default 2000 ms). */
  readonly costTimeoutMs?: number;
  /**
   * How long a host that failed to answer a cost query is left out of later polls
   * (default 5000 ms; 0 = ask it every time).
   */
  readonly hostBackoffMs?: number;
  /**
   * Time allowed for one job, from connect to the last output file (default: none). A host
   * that has not replied by then is treated as lost: the action moves on (see `retries`).
   */
  readonly jobTimeoutMs?: number;
  /**
   * How often an action moves on after its host drops the connection, or does not reply
   * within `jobTimeoutMs` (default 1).
   */
  readonly retries?: number;
  /** Cancel the other actions of an actionset as soon as one fails (default false). */
  readonly failFast?: boolean;
  /** Start an in-process server at a loopback endpoint where nothing listens (default true). */
  readonly embedded?: boolean;
  /** Run a remote action on the local server when no remote host answers (default true). */
  readonly fallback?: boolean;
  /**
   * Run local actions in the Rakefile's directory (`directory`), by this process, with
   * `/bin/sh -c`, as make runs recipes: they see every file there and write in place. By
   * default (false) a local action is a job of the local server (`localhost:PORT`), in a job
   * directory holding only its `requires` files (docs/client.md, "Local actions").
   */
  readonly localHere?: boolean;
  /**
   * pino logger for the engine's own records (names merged into one host, hosts that do not
   * answer, embedded servers; default: silent). The events themselves are not logged by
   * `run()`: whoever subscribes logs them, `run(...).pipe(logEvents(logger))`, as the CLI does.
   */
  readonly logger?: Logger;
  /** Clock and timers (tests use the TestScheduler). */
  readonly scheduler?: SchedulerLike;
  /** The wire (tests substitute scripted Observables). */
  readonly transport?: Transport;
  /** How an embedded server is started (default: `serve()` in this process). */
  readonly startServer?: StartServer;
  /**
   * Proves this client to servers that require a token (`--token-file`, `RAKE_TOKEN`;
   * extension `auth`). Ignored when `transport` is given.
   */
  readonly token?: Token;
  /**
   * Where large action output is spooled (default: a spool of the run's own, removed when
   * the run ends). Pass one to keep `output` events readable after the run, as the CLI does
   * while stdout catches up; then close it yourself. Ignored when `transport` is given.
   */
  readonly spool?: OutputSpool;
  /**
   * `--executor`: remote actions go to this REAPI farm instead of the hosts (no cost poll);
   * local actions, and with `fallback` the remote ones when the farm cannot be reached, go
   * to the local server. See docs/remote-execution.md.
   */
  readonly executor?: RemoteExecutor;
  /**
   * TLS for hosts written `rakes://` (`--tls-ca`, `--tls-cert`, `--tls-key`); with `all`
   * (`--tls`), for every host in `HOSTS`. Ignored when `transport` is given, but for `all`.
   */
  readonly tls?: ClientTls;
  /**
   * `--cache`: the local action cache (`src/cache/store.ts`). A remote action whose key it
   * holds is not run, its stdout and outputs are restored (docs/client.md, "The action cache").
   */
  readonly cache?: LocalCache;
  /**
   * Choose hosts from their pushed loads (extension `load`) instead of a cost poll per
   * action, keeping each host's slots full plus `dispatchQueue` (default true; false is
   * `--no-load-streams`; needs a transport with `watchLoad`). Hosts that cannot stream their
   * load (base servers) are polled as before, with exactly the connections of a run without.
   * See docs/client.md, "Load streams".
   */
  readonly loadStreams?: boolean;
  /**
   * Jobs a host may be given beyond its slots (`--dispatch-queue N`); default
   * {@link DEFAULT_DISPATCH_QUEUE}, `auto`: per host, from its jobs' run times against this
   * client's own overhead (queue-depth.ts).
   */
  readonly dispatchQueue?: number | 'auto';
  /**
   * Connections to the hosts dialed before the run (`EarlyDials`, early-dial.ts: the CLI
   * dials while it parses the Rakefile): each host's load stream opens on its own. The run
   * ends the ones it did not take (`!D`) once the streams are open, or when it ends.
   * Ignored, and ended at once, when `transport` is given.
   */
  readonly early?: EarlyDials;
}

/** Runs one remote action elsewhere than our hosts (src/reapi/executor.ts). */
export interface RemoteExecutor {
  /** The action's events; `fallback` is what to run instead if the executor is unreachable. */
  run(action: PlannedAction, fallback?: Observable<RakeEvent>): Observable<RakeEvent>;
}

/** `-j` when not given: enough for any loopback test bed, far below the descriptor limit. */
export const DEFAULT_JOBS = 256;
export const DEFAULT_CONNECT_TIMEOUT_MS = 2000;
export const DEFAULT_COST_TIMEOUT_MS = 2000;
export const DEFAULT_RETRIES = 1;
export const DEFAULT_HOST_BACKOFF_MS = 5000;

/** The hosts and local server a run talks to, after the options' overrides. */
export interface Targets {
  readonly hosts: readonly Endpoint[];
  readonly local: Endpoint;
  readonly directory: string;
}

/** Applies `hosts`, `port` and `directory` from the options to a Rakefile. */
export function resolveTargets(rakefile: Rakefile, options: RunOptions = {}): Targets {
  const port = options.port ?? rakefile.port;
  const hosts =
    options.hosts ??
    rakefile.hosts.map((h) => ({
      host: h.host,
      port: options.port !== undefined && h.port === rakefile.port ? options.port : h.port,
      ...(h.tls === true ? { tls: true } : {}),
    }));
  const directory =
    options.directory ??
    (rakefile.file.startsWith('<') ? process.cwd() : dirname(resolve(rakefile.file)));
  return {
    hosts: options.tls?.all ? hosts.map((h) => ({ ...h, tls: true })) : hosts,
    local: { host: 'localhost', port },
    directory: resolve(directory),
  };
}

/** The identity of action `index` of `set`, as events carry it. */
export function actionRef(set: Actionset, index: number): ActionRef {
  const a = set.actions[index];
  if (a === undefined) throw new RangeError(`${set.name} has no action ${index}`);
  return {
    actionId: `${set.name}#${index}`,
    actionset: set.name,
    index,
    position: a.position,
    command: a.command,
    remote: a.remote,
    ...(a.noCache ? { noCache: true as const } : {}),
  };
}

/**
 * Runs a parsed Rakefile: actionsets one after another, the actions of each in parallel
 * (at most `jobs` at once), each remote action on the cheapest host. The Observable emits
 * every {@link RakeEvent} and completes after `done`; it does not error for a failed
 * action (that is an `action-failed` event and `summary.exitStatus`). Nothing happens
 * until it is subscribed; unsubscribing cancels every connection, which makes the
 * servers kill the commands, and removes partial output files.
 *
 * @example
 * run(rakefile, { jobs: 8 }).subscribe((e) => {
 *   if (e.type === 'output') process.stdout.write(e.stdout.buffer());
 *   if (e.type === 'done') process.exitCode = e.summary.exitStatus;
 * });
 */
export function run(rakefile: Rakefile, options: RunOptions = {}): Observable<RakeEvent> {
  return defer(() => {
    const scheduler = options.scheduler ?? asyncScheduler;
    const logger = (options.logger ?? pino({ level: 'silent' })).child({ component: 'client' });
    const listed = resolveTargets(rakefile, options);
    const spool = options.spool ?? new OutputSpool();
    const transport =
      options.transport ??
      tcpTransport({
        track: trackCleanup,
        token: options.token,
        spool,
        tls: options.tls,
        // With load streams, job connections to our servers are kept for later jobs too.
        reuse: options.loadStreams !== false,
        ...(options.early === undefined ? {} : { early: options.early }),
      });
    if (options.transport !== undefined) options.early?.close();
    const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    // One server listed under two names is one host (docs/client.md, "One server, one host");
    // a lookup that takes longer than a connect would leaves the names as spelled.
    return distinctHosts(listed.hosts, listed.local, transport.lookup).pipe(
      timeout({
        first: connectTimeoutMs,
        scheduler,
        with: () => distinctHosts(listed.hosts, listed.local, undefined),
      }),
      mergeMap((distinct) =>
        runTargets(rakefile, options, logger, transport, {
          ...listed,
          hosts: distinct.hosts,
          local: distinct.local,
          aliases: distinct.aliases,
        }),
      ),
      finalize(() => {
        if (options.spool === undefined) spool.close();
      }),
    );
  });
}

/** {@link run} once the hosts are known, each server once. */
function runTargets(
  rakefile: Rakefile,
  options: RunOptions,
  logger: Logger,
  transport: Transport,
  targets: Targets & { readonly aliases: readonly HostAlias[] },
): Observable<RakeEvent> {
  return defer(() => {
    const scheduler = options.scheduler ?? asyncScheduler;
    const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    for (const a of targets.aliases) {
      logger.info(
        { host: a.host, alias: a.alias, address: a.address },
        `${a.alias} is ${a.host} (both reach ${a.address}): one host`,
      );
    }
    const ledger = new Assignments();
    const embedded = new EmbeddedServers({
      transport,
      logger,
      serverLogger: options.logger,
      start: options.startServer ?? startEmbeddedServer,
      enabled: options.embedded ?? true,
      probeTimeoutMs: connectTimeoutMs,
      replyTimeoutMs: options.costTimeoutMs ?? DEFAULT_COST_TIMEOUT_MS,
      scheduler,
    });
    const executor = options.executor;
    // Any answer clears a host the embedded-server probe found silent.
    const noted =
      (query: QueryCost): QueryCost =>
      (e) =>
        query(e).pipe(
          tap((p) => {
            if (p.type === 'cost') embedded.answered(hostKey(e));
          }),
        );
    const queryCost = noted((e) => transport.queryCost(e));
    const poller = new CostPoller(
      executor ? [] : targets.hosts,
      queryCost,
      {
        connectTimeoutMs,
        replyTimeoutMs: options.costTimeoutMs ?? DEFAULT_COST_TIMEOUT_MS,
        scheduler,
        backoffMs: options.hostBackoffMs ?? DEFAULT_HOST_BACKOFF_MS,
        // A dead host is said at `-v` as soon as it shows, not only in the summary.
        onTrouble: (host, trouble, error) =>
          logger.info(
            { host, reason: trouble, error },
            `${host} did not answer a cost query (${trouble}: ${error})`,
          ),
      },
      () => ledger.mark(),
    );
    const watchLoad = transport.watchLoad?.bind(transport);
    const dispatcher =
      executor === undefined &&
      watchLoad !== undefined &&
      options.loadStreams !== false &&
      targets.hosts.length > 0
        ? new LoadDispatcher(targets.hosts, (e) => watchLoad(e, connectTimeoutMs), ledger, {
            queue: options.dispatchQueue ?? DEFAULT_DISPATCH_QUEUE,
            // Each stream's opening cost query is its host's answer in the first poll round:
            // a base host sees the connections a poll would have made, no more.
            openRound: (query) => poller.open(noted(query)),
            queryCost,
            reconnectMs: options.hostBackoffMs || DEFAULT_HOST_BACKOFF_MS,
            scheduler,
            // Every stream is open: a connection dialed early that none took never will be.
            onStart: () => options.early?.close(),
            onState: (s) => {
              if (s.state === 'lost' || s.state === 'unsupported') {
                logger.info(
                  { host: s.host, state: s.state, why: s.why },
                  `${s.host}: load stream ${s.state}: ${s.why}`,
                );
              }
            },
          })
        : undefined;
    // No load streams in this run: nothing takes the connections dialed early.
    if (dispatcher === undefined) options.early?.close();
    const ctx: ActionContext = {
      transport,
      poller,
      ...(dispatcher === undefined ? {} : { dispatcher }),
      ledger,
      scheduler,
      outputDir: targets.directory,
      ...(rakefile.file.startsWith('<')
        ? {}
        : { rakefilePath: resolve(targets.directory, basename(rakefile.file)) }),
      localEndpoint: targets.local,
      ensureLocal: (reason) => embedded.ensure(targets.local, reason),
      silent: (host) => embedded.silent(host),
      retries: options.retries ?? DEFAULT_RETRIES,
      fallback: options.fallback ?? true,
      connectTimeoutMs,
      jobTimeoutMs: options.jobTimeoutMs,
      localHere: options.localHere ?? false,
      ...(options.cache === undefined ? {} : { cache: options.cache }),
    };
    const jobs =
      options.jobs === undefined ? DEFAULT_JOBS : options.jobs <= 0 ? Infinity : options.jobs;
    const failFast = options.failFast ?? false;
    const started = scheduler.now();
    const tally = new Tally(rakefile);

    const hasLocal =
      options.localHere !== true &&
      rakefile.actionsets.some((s) => s.actions.some((a) => !a.remote));
    const setup$ = merge(
      ...(executor ? [] : targets.hosts)
        .filter((h) => isLoopback(h.host))
        .map((h) => embedded.ensure(h, 'loopback-host')),
      hasLocal ? embedded.ensure(targets.local, 'local-actions') : EMPTY,
    );

    // Actionsets one after another; after one where an action failed or was cancelled, none.
    const actionsets$ = actionsetStreams(rakefile).pipe(
      concatMap((set) => runActionset(ctx, set, { jobs, failFast, executor })),
      takeWhile((e) => e.type !== 'actionset-done' || (e.failed === 0 && e.cancelled === 0), true),
    );

    /** Where nothing listened and this run started a server of its own. */
    const embeddedStarted: EmbeddedNote[] = [];
    const done$ = defer(() =>
      of<RakeEvent>({
        type: 'done',
        time: scheduler.now(),
        summary: withHostNotes(
          tally.summary(scheduler.now() - started, tally.perHost()),
          targets.aliases,
          poller.silentHosts(),
          embeddedStarted,
        ),
      }),
    );

    logger.debug(
      { hosts: targets.hosts, local: targets.local, directory: targets.directory, jobs },
      'run',
    );
    // The load streams open with the first remote action (`LoadDispatcher.place`), after the
    // embedded servers of loopback hosts listen (and are trusted with their secret): a stream
    // refused before would wait a back-off to reopen, and a run with no remote action opens
    // none (a base host sees no cost query a poll would not have sent).
    return concat(setup$, actionsets$, done$).pipe(
      tap((e) => {
        tally.add(e);
        if (e.type === 'embedded-server-started') {
          embeddedStarted.push({ host: hostKey({ host: e.host, port: e.port }), reason: e.reason });
        }
      }),
      finalize(() => {
        options.early?.close();
        dispatcher?.stop();
        transport.closeIdle?.();
        trackCleanup(embedded.close());
      }),
    );
  });
}

/**
 * The summary with what it says about hosts: the names merged into one host, and the hosts
 * that did no work and why (a host that never answered a cost poll but was given jobs
 * anyway, as the slow host, did work and is not listed).
 */
function withHostNotes(
  summary: RunSummary,
  aliases: readonly HostAlias[],
  silent: readonly SilentHost[],
  embedded: readonly EmbeddedNote[],
): RunSummary {
  const idle = silent.filter((h) => h.reason === 'wanted-token' || !(h.host in summary.perHost));
  return {
    ...summary,
    ...(aliases.length > 0 ? { aliases } : {}),
    ...(idle.length > 0 ? { silentHosts: idle } : {}),
    ...(embedded.length > 0 ? { embedded: [...embedded] } : {}),
  };
}

/** Counts what happened, for the `done` event's summary. */
class Tally {
  #actionsetsRun = 0;
  #succeeded = 0;
  #failed = 0;
  #cancelled = 0;
  #retries = 0;
  #fallbacks = 0;
  #cached = 0;
  #noHost = false;
  readonly #perHost = new Map<string, number>();
  readonly #total: number;
  readonly #actionsets: number;

  constructor(rakefile: Rakefile) {
    this.#actionsets = rakefile.actionsets.length;
    this.#total = rakefile.actionsets.reduce((n, s) => n + s.actions.length, 0);
  }

  /** Actions per host: where each action ended (a retried action counts once, on its last host). */
  perHost(): Record<string, number> {
    return Object.fromEntries(this.#perHost);
  }

  add(e: RakeEvent): void {
    if (
      (e.type === 'action-succeeded' ||
        e.type === 'action-failed' ||
        e.type === 'action-cancelled') &&
      e.host !== undefined &&
      !(e.type === 'action-succeeded' && e.cached !== undefined)
    ) {
      this.#perHost.set(e.host, (this.#perHost.get(e.host) ?? 0) + 1);
    }
    switch (e.type) {
      case 'actionset-started':
        this.#actionsetsRun++;
        break;
      case 'action-succeeded':
        this.#succeeded++;
        if (e.cached !== undefined) this.#cached++;
        break;
      case 'action-failed':
        this.#failed++;
        if (e.reason === 'no-host' || e.reason === 'host-lost') this.#noHost = true;
        break;
      case 'action-cancelled':
        this.#cancelled++;
        break;
      case 'action-retried':
        this.#retries++;
        break;
      case 'fallback-local':
        this.#fallbacks++;
        break;
      default:
        break;
    }
  }

  summary(ms: number, perHost: Record<string, number>): RunSummary {
    const exitStatus = this.#failed === 0 && this.#cancelled === 0 ? 0 : this.#noHost ? 3 : 1;
    return {
      actionsets: this.#actionsets,
      actionsetsRun: this.#actionsetsRun,
      actions: this.#total,
      succeeded: this.#succeeded,
      failed: this.#failed,
      cancelled: this.#cancelled,
      // Everything that did not end: later actionsets after a failure, and the siblings of
      // an action with a missing requirement (its actionset sends nothing).
      skipped: this.#total - this.#succeeded - this.#failed - this.#cancelled,
      retries: this.#retries,
      fallbacks: this.#fallbacks,
      ...(this.#cached > 0 ? { cached: this.#cached } : {}),
      perHost,
      ms,
      exitStatus,
    };
  }
}

interface ActionsetPolicy {
  readonly jobs: number;
  readonly failFast: boolean;
  readonly executor?: RemoteExecutor | undefined;
}

/** An action on the executor when there is one and the action is remote, else on our hosts. */
function start(ctx: ActionContext, action: PlannedAction, executor: RemoteExecutor | undefined) {
  if (executor === undefined || !action.ref.remote) return runAction(ctx, action);
  // No hosts are polled with an executor, so runAction falls back to the local server.
  return executor.run(action, ctx.fallback ? runAction(ctx, action) : undefined);
}

/**
 * One actionset: checks every action's requirements first (a missing file fails its action
 * before anything is sent, and then no action of the set runs), then runs the actions in
 * parallel, at most `jobs` at once. With `failFast`, the first failure cancels the rest
 * (`cancelOn`).
 */
export function runActionset(
  ctx: ActionContext,
  stream: ActionsetStream,
  policy: ActionsetPolicy,
): Observable<RakeEvent> {
  return defer(() => {
    const { scheduler } = ctx;
    const set = stream.actionset;
    const t0 = scheduler.now();
    const counts = { succeeded: 0, failed: 0, cancelled: 0 };
    const started: RakeEvent = {
      type: 'actionset-started',
      time: t0,
      actionset: set.name,
      position: set.position,
      actions: set.actions.length,
    };
    const refs = set.actions.map((_, i) => actionRef(set, i));

    // Checked synchronously, when the actionset starts (which keeps marble tests exact).
    const cache = new Map<string, string | undefined>();
    const resolved$ = stream.actions.pipe(
      map((a) => resolveRequirements(ctx.outputDir, a.requires, cache)),
      toArray(),
    );

    const body$ = resolved$.pipe(
      mergeMap((resolved) => {
        const missing = resolved.flatMap((r, i) => (r.missing.length > 0 ? [{ i, r }] : []));
        if (missing.length > 0) {
          return from(
            missing.map(({ i, r }): RakeEvent => {
              const ref = refs[i] as ActionRef;
              const list = r.missing.map(
                (m) => `${m.requirement.path} (line ${m.requirement.position.line}: ${m.why})`,
              );
              return {
                type: 'action-failed',
                time: scheduler.now(),
                action: ref,
                reason: 'missing-requirement',
                position: ref.position,
                message: `required file missing, nothing was sent: ${list.join(', ')}`,
                stderr: '',
                phases: NO_PHASES,
                attempts: 0,
                ms: 0,
              };
            }),
          );
        }
        const claims = new OutputClaims();
        const planned = resolved.map(
          (r, i): PlannedAction => ({ ref: refs[i] as ActionRef, files: r.files, claims }),
        );
        if (!policy.failFast) {
          return from(planned).pipe(mergeMap((p) => start(ctx, p, policy.executor), policy.jobs));
        }
        // The actionset's first failure, replayed to the actions that start after it.
        const failures = new ReplaySubject<void>(1);
        const cancelled =
          (p: PlannedAction) =>
          (host: string | undefined): RakeEvent => ({
            type: 'action-cancelled',
            time: scheduler.now(),
            action: p.ref,
            ...(host === undefined ? {} : { host }),
          });
        return from(planned).pipe(
          mergeMap(
            (p) =>
              start(ctx, p, policy.executor).pipe(
                cancelOn(failures, cancelled(p)),
                // The failure is told first, then its siblings are cancelled.
                concatMap((e) =>
                  e.type === 'action-failed' ? concat(of(e), tell(failures)) : of(e),
                ),
              ),
            policy.jobs,
          ),
        );
      }),
      tap((e) => {
        if (e.type === 'action-succeeded') counts.succeeded++;
        else if (e.type === 'action-failed') counts.failed++;
        else if (e.type === 'action-cancelled') counts.cancelled++;
      }),
    );

    const done$ = defer(() =>
      of<RakeEvent>({
        type: 'actionset-done',
        time: scheduler.now(),
        actionset: set.name,
        ...counts,
        ms: scheduler.now() - t0,
      }),
    );
    return concat(of(started), body$, done$);
  });
}

/** Tells `failures` once subscribed (after what precedes it in a `concat`); emits nothing. */
function tell(failures: ReplaySubject<void>): Observable<never> {
  return defer(() => {
    failures.next();
    return EMPTY;
  });
}
