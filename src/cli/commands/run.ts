import { stat } from 'node:fs/promises';
import { relative, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { finished as streamFinished } from 'node:stream/promises';
import { asyncScheduler, type Subscription } from 'rxjs';
import type { Argv, CommandModule } from 'yargs';
import { formatDiagnostics } from '../../../grammar/diagnostics.js';
import { readRakefile } from '../../../grammar/parse.js';
import { DEFAULT_LOCAL_CACHE_BYTES, defaultCacheDir, LocalCache } from '../../cache/store.js';
import { whenSettled } from '../../client/cleanup.js';
import {
  EarlyDials,
  endLoaderDials,
  hostsAhead,
  takeLoaderDials,
} from '../../client/early-dial.js';
import { hostListProblem, parseHostList } from '../../client/endpoint.js';
import type { RunSummary } from '../../client/events.js';
import { OutputSpool } from '../../client/output.js';
import { formatPlan, planRun } from '../../client/plan.js';
import {
  DEFAULT_JOBS,
  DEFAULT_RETRIES,
  type RemoteExecutor,
  type RunOptions,
  run,
} from '../../client/run.js';
import { logEvents } from '../../observe/log-events.js';
import { eventsShownBy, ProgressDisplay, progressMode } from '../../observe/progress.js';
import { loadToken, TOKEN_ENV, TokenError } from '../../protocol/token.js';
import { cliContext, POLL_TIMEOUT_OPTIONS, UsageError } from '../context.js';
import { createCliLogger, jsonOnStderr, type LogArgs, withLogOptions } from '../logging.js';
import { type ObserveArgs, withObserveOptions, writeTimelineFiles } from '../observe.js';
import { type StdoutFailure, StdoutWriter } from '../stdout.js';
import { clientTlsFrom, TLS_CLIENT_OPTIONS, type TlsClientArgs } from '../tls-options.js';
import { parseSize } from './serve.js';

/**
 * Exit statuses of `rake-ts [Rakefile]` (docs/client.md). 0 success; 1 an action failed;
 * 2 usage or Rakefile error; 3 no host could run a remote action; 130 interrupted (Ctrl-C),
 * 141 stdout's reader went away (EPIPE), 74 stdout failed otherwise,
 * 143 terminated (SIGTERM).
 */
export const EXIT = {
  ok: 0,
  actionFailed: 1,
  usage: 2,
  noHost: 3,
  interrupted: 130,
  /** stdout's reader went away (EPIPE): 128 + SIGPIPE, as a tool killed by it. */
  brokenPipe: 141,
  terminated: 143,
  /** stdout failed otherwise (EX_IOERR). */
  stdoutFailed: 74,
} as const;

/** The parsed flags of the default command. */
export interface RunArgs extends LogArgs, ObserveArgs, TlsClientArgs {
  readonly rakefile?: string | undefined;
  readonly file?: string | undefined;
  readonly directory?: string | undefined;
  readonly jobs?: number | undefined;
  readonly 'dry-run': boolean;
  readonly hosts?: string | undefined;
  readonly port?: number | undefined;
  readonly 'connect-timeout': number;
  readonly 'cost-timeout': number;
  readonly 'job-timeout': number;
  readonly retries: number;
  readonly 'fail-fast': boolean;
  readonly 'load-streams': boolean | undefined;
  readonly 'dispatch-queue'?: number | undefined;
  readonly embedded: boolean;
  readonly fallback: boolean;
  readonly 'local-here': boolean;
  readonly 'token-file'?: string | undefined;
  readonly verbose: number;
  readonly quiet: boolean;
  readonly executor?: string | undefined;
  readonly 'executor-header'?: string[] | undefined;
  readonly 'instance-name': string;
  readonly platform?: string[] | undefined;
  readonly cache: boolean;
  readonly 'cache-dir'?: string | undefined;
  readonly 'cache-size'?: string | undefined;
}

/** Where the command reads and writes; tests pass their own. */
export interface RunIO {
  readonly stdout: Writable;
  readonly stderr: Writable;
  readonly cwd: string;
  /** Emits `SIGINT` / `SIGTERM` (default: `process`). */
  readonly signals?: NodeJS.EventEmitter;
}

/** Adds the default command's flags to a yargs instance. */
export function withRunOptions<T>(y: Argv<T>): Argv<T & RunArgs> {
  return withObserveOptions(withLogOptions(y))
    .positional('rakefile', {
      type: 'string',
      describe: 'the Rakefile to run (default: ./Rakefile)',
    })
    .option('file', {
      alias: 'f',
      type: 'string',
      describe: 'the Rakefile to run (same as the argument)',
    })
    .option('directory', {
      alias: 'C',
      type: 'string',
      describe: 'change to this directory first (as make -C)',
    })
    .option('jobs', {
      alias: 'j',
      type: 'number',
      describe: `actions of one actionset that run at once (default ${DEFAULT_JOBS}; 0 = no limit)`,
    })
    .option('dry-run', {
      alias: 'n',
      type: 'boolean',
      default: false,
      describe: 'print the plan (each action, where it runs, its files); contact no server',
    })
    .option('hosts', {
      type: 'string',
      describe: 'replace HOSTS: "h1 h2:port [::1]:7000" (spaces or commas)',
    })
    .option('port', {
      type: 'number',
      describe: 'replace PORT (the local server, and hosts without their own port)',
    })
    .options(POLL_TIMEOUT_OPTIONS)
    .option('job-timeout', {
      type: 'number',
      default: 0,
      describe: 'seconds one action may take, upload to last output file (0 = no limit)',
    })
    .option('retries', {
      type: 'number',
      default: DEFAULT_RETRIES,
      describe:
        'times an action moves to the next-cheapest host after its host drops it or does not reply within --job-timeout',
    })
    .option('load-streams', {
      type: 'boolean',
      describe:
        "on by default: choose rake-ts servers from the loads they push: one connection per host for the run, no cost poll per action, each host's slots kept full; base-protocol hosts are polled per action either way (--no-load-streams or RAKE_LOAD_STREAMS=0: poll every host; docs/client.md, 'Load streams')",
    })
    .option('dispatch-queue', {
      type: 'number',
      describe:
        "with load streams: jobs a host may be given beyond its slots, so its next job is there when a slot frees (default: per host, from its jobs' run times against the client's own delay, 1 to 8; docs/client.md, 'Load streams')",
    })
    .option('fail-fast', {
      type: 'boolean',
      default: false,
      describe: 'on the first failure, cancel the other actions (their processes are killed)',
    })
    .option('embedded', {
      type: 'boolean',
      default: true,
      describe:
        'start an in-process server at a loopback address where none listens (--no-embedded: never)',
    })
    .option('fallback', {
      type: 'boolean',
      default: true,
      describe:
        'run a remote action on the local server when no host answers (--no-fallback: fail, exit 3)',
    })
    .option('local-here', {
      type: 'boolean',
      default: false,
      describe:
        "run local actions here, in the Rakefile's directory, as make runs recipes (default: as jobs of the local server at localhost:PORT, each in its own job directory holding only its requires files)",
    })
    .option('token-file', {
      type: 'string',
      describe: `prove to servers that require one that this client knows the token in this file (default: $${TOKEN_ENV} if set)`,
    })
    .options(TLS_CLIENT_OPTIONS)
    .option('verbose', {
      alias: 'v',
      type: 'count',
      describe: 'more log records on stderr: -v info, -vv every step, -vvv every cost',
    })
    .option('quiet', {
      alias: 'q',
      type: 'boolean',
      default: false,
      describe: 'only action output and errors',
    })
    .option('executor', {
      type: 'string',
      describe:
        'run remote actions on a Remote Execution API v2 farm, grpc://HOST:PORT or grpcs://HOST:PORT (TLS), instead of polling hosts (docs/remote-execution.md)',
    })
    .option('executor-header', {
      type: 'string',
      array: true,
      describe:
        'with --executor: a header sent with every call, "NAME: VALUE" (e.g. "authorization: Bearer …"); repeatable',
    })
    .option('instance-name', {
      type: 'string',
      default: '',
      describe: "with --executor: the farm's instance name",
    })
    .option('platform', {
      type: 'string',
      array: true,
      describe:
        'with --executor: a worker property the actions need, KEY=VALUE (e.g. OSFamily=linux); repeatable',
    })
    .option('cache', {
      type: 'boolean',
      default: false,
      describe:
        "reuse results of remote actions run before (also RAKE_CACHE=1): with --executor the farm's ActionCache, else the local action cache (docs/client.md, 'The action cache')",
    })
    .option('cache-dir', {
      type: 'string',
      describe: 'the local action cache (default: $XDG_CACHE_HOME/rake-ts, else ~/.cache/rake-ts)',
    })
    .option('cache-size', {
      type: 'string',
      default: '1G',
      describe:
        'bound of the local action cache in bytes (K, M, G suffixes); least recently used entries go first',
    })
    .example([
      ['$0', 'run ./Rakefile'],
      [
        '$0 -C build -j 8 --fail-fast',
        'run build/Rakefile, 8 actions at a time, stop at the first failure',
      ],
      ['$0 --hosts "a b:7000" -n', 'print the plan with other hosts; contact no server'],
      [
        '$0 --report r.html --trace t.json',
        'also write an HTML report and a timeline for Perfetto',
      ],
      [
        '$0 --log-format json 2>run.ndjson',
        'every stderr line a pino record: read it with jq or pino-pretty',
      ],
      ['$0 -vv --log-file rake.log', 'every step in rake.log; stderr as usual'],
    ])
    .check((args) => {
      const a = args as unknown as RunArgs;
      if (a.rakefile !== undefined && a.file !== undefined) {
        throw new UsageError('give the Rakefile either as the argument or with -f, not both');
      }
      // Each says the range it wants, and what it got.
      for (const [name, v, ok, range] of [
        ['--jobs', a.jobs, (n: number) => n >= 0, '0 or more (0 = no limit)'],
        ['--port', a.port, (n: number) => n >= 1 && n <= 65535, 'from 1 to 65535'],
        ['--retries', a.retries, (n: number) => n >= 0, '0 or more'],
        ['--dispatch-queue', a['dispatch-queue'], (n: number) => n >= 0, '0 or more'],
      ] as const) {
        if (v !== undefined && !(Number.isInteger(v) && ok(v))) {
          const sep = range.startsWith('from') ? ' ' : ', ';
          throw new UsageError(`${name} must be a whole number${sep}${range}; got ${v}`);
        }
      }
      for (const [name, v, min] of [
        ['--connect-timeout', a['connect-timeout'], Number.MIN_VALUE],
        ['--cost-timeout', a['cost-timeout'], Number.MIN_VALUE],
        ['--job-timeout', a['job-timeout'], 0],
      ] as const) {
        if (v !== undefined && !(Number.isFinite(v) && v >= min))
          throw new UsageError(`${name} must be a number of seconds`);
      }
      if (a.executor === undefined) {
        for (const flag of ['executor-header', 'platform'] as const) {
          if (a[flag] !== undefined) throw new UsageError(`--${flag} needs --executor`);
        }
      }
      if (a['cache-size'] !== undefined && parseSize(a['cache-size']) === undefined)
        throw new UsageError(
          `--cache-size must be a number of bytes, optionally with K, M or G; got ${a['cache-size']}`,
        );
      for (const p of a.platform ?? []) {
        if (!/^[^=]+=/.test(p)) throw new UsageError(`--platform "${p}" is not KEY=VALUE`);
      }
      const hostsProblem = a.hosts === undefined ? undefined : hostListProblem(a.hosts);
      if (hostsProblem !== undefined) throw new UsageError(hostsProblem);
      return true;
    }) as unknown as Argv<T & RunArgs>;
}

/**
 * Runs a Rakefile (or prints its plan) and resolves the exit status. Action output goes to
 * `stdout`, one block per action when it ends, then a summary line; logs and failures go to
 * `stderr`. SIGINT cancels everything (remote processes killed, partial files removed).
 */
export async function runRake(args: RunArgs, io: RunIO = defaultIO()): Promise<number> {
  // The display is made once the Rakefile is read; until then stderr is written directly.
  let display: ProgressDisplay | undefined;
  const mode = jsonOnStderr(args) ? 'json' : progressMode(args.progress, io.stderr);
  const log = createCliLogger(args, {
    stderr: io.stderr,
    write: (text) => (display ? display.writeAbove(io.stderr, text) : io.stderr.write(text)),
    shown: eventsShownBy(mode, args.quiet),
    displayLevel: args.quiet ? 'warn' : 'info',
  });
  /** A problem with the run as a whole: a `rake-ts: ` line, or in JSON mode a record. */
  const problem = (event: string, text: string, fields: Record<string, unknown> = {}) => {
    if (log.display)
      log.display.error({ event, ...fields }, text.replace(/^rake-ts: /, '').trimEnd());
    else io.stderr.write(text.endsWith('\n') ? text : `${text}\n`);
  };
  /** Connections bin/rake-ts.js dialed before this bundle loaded: taken below, or ended. */
  const before = takeLoaderDials();
  /** Connections dialed while the Rakefile is parsed, for the run to take. */
  let early: EarlyDials | undefined;
  const usage = async (event: string, text: string, fields?: Record<string, unknown>) => {
    endLoaderDials(before);
    early?.close();
    problem(event, text, fields);
    await log.close();
    return EXIT.usage;
  };
  const base = resolve(io.cwd, args.directory ?? '.');
  const given = args.file ?? args.rakefile ?? 'Rakefile';
  const path = resolve(base, given);
  const label = relative(io.cwd, path) || given;
  if (args.directory !== undefined) {
    const st = await stat(base).catch(() => undefined);
    if (!st?.isDirectory()) {
      return usage('usage-error', `rake-ts: -C ${args.directory}: no such directory`);
    }
  }
  // The hosts the file names are dialed while it is parsed (src/client/early-dial.ts): their
  // load streams, which the first action waits for, then open on connections already up.
  const dialEarly =
    !args['dry-run'] &&
    args.executor === undefined &&
    (args['load-streams'] ?? process.env.RAKE_LOAD_STREAMS !== '0');
  const read = await readRakefile(path, {
    file: label,
    beforeParse: (text) => {
      if (!dialEarly) return undefined;
      const ahead = hostsAhead(text, { hosts: args.hosts, port: args.port, tlsAll: args.tls });
      if (ahead.length === 0) return undefined;
      // Those bin/early-dial.js dialed already are taken (the same scan, done with the
      // lexer here, decides), the others dialed now.
      early = new EarlyDials(ahead, undefined, before);
      endLoaderDials(before);
      // Node starts a connect on its next tick: one turn of the event loop, so the SYNs are
      // on the wire before the parse.
      return new Promise<void>((resolve) => setImmediate(resolve));
    },
  });
  // Dialed before this bundle loaded for a host this run does not dial early: not used.
  endLoaderDials(before);
  if (!read.ok) {
    return usage('rakefile-invalid', formatDiagnostics(read.diagnostics, read.source), {
      diagnostics: read.diagnostics,
    });
  }
  const rakefile = read.rakefile;
  let token: Awaited<ReturnType<typeof loadToken>>;
  try {
    const file = args['token-file'];
    // Relative to the directory -C changed to, as the Rakefile is.
    token = await loadToken(file === undefined ? undefined : resolve(base, file));
  } catch (err) {
    return usage(
      'usage-error',
      `rake-ts: ${err instanceof TokenError ? err.message : String(err)}`,
    );
  }
  let tls: Awaited<ReturnType<typeof clientTlsFrom>>;
  try {
    tls = await clientTlsFrom(args, base);
  } catch (err) {
    return usage('usage-error', `rake-ts: ${err instanceof Error ? err.message : String(err)}`);
  }
  // Action output and the summary reach stdout in order, with backpressure; large outputs
  // wait in the spool, which outlives the run until stdout has taken them.
  const spool = new OutputSpool();
  let onStdoutFailure: (failure: StdoutFailure) => void = () => {};
  const stdout = new StdoutWriter(io.stdout, { onFailure: (f) => onStdoutFailure(f) });
  // One display for everything a person reads; logs on stderr are printed above its status.
  const shown = new ProgressDisplay({
    mode,
    stdout,
    stderr: io.stderr,
    quiet: args.quiet,
    actionsets: rakefile.actionsets.length,
    actions: rakefile.actionsets.reduce((n, s) => n + s.actions.length, 0),
    ...(log.display ? { records: log.display } : {}),
    // Each action's spans are only read by a trace or a report.
    timeline: args.trace !== undefined || args.report !== undefined,
  });
  display = shown;
  const logger = log.logger;
  const hosts =
    args.hosts === undefined ? undefined : parseHostList(args.hosts, args.port ?? rakefile.port);
  /** `--cache` or `RAKE_CACHE=1`: the farm's ActionCache with --executor, else the local cache. */
  const cacheOn = args.cache || process.env.RAKE_CACHE === '1';
  let executor: (RemoteExecutor & { close(): void }) | undefined;
  if (args.executor !== undefined && !args['dry-run']) {
    const { parseExecutor } = await import('../../reapi/client.js');
    const target = parseExecutor(
      args.executor,
      args['executor-header'] ?? [],
      args['instance-name'],
    );
    if ('problem' in target) return usage('usage-error', `rake-ts: ${target.problem}`);
    // Loaded only with --executor: gRPC is a large module tree a plain run never needs.
    const { ReapiExecutor } = await import('../../reapi/executor.js');
    executor = new ReapiExecutor({
      target,
      platform: (args.platform ?? []).map((p) => {
        const i = p.indexOf('=');
        return [p.slice(0, i), p.slice(i + 1)] as const;
      }),
      cache: cacheOn,
      outputDir: resolve(path, '..'),
      refusedFiles: [path],
      scheduler: asyncScheduler,
      logger,
      timeoutMs: args['job-timeout'] > 0 ? args['job-timeout'] * 1000 : undefined,
    });
  }

  const options: RunOptions = {
    directory: resolve(path, '..'),
    ...(hosts?.ok ? { hosts: hosts.hosts } : {}),
    ...(args.port !== undefined ? { port: args.port } : {}),
    ...(args.jobs !== undefined ? { jobs: args.jobs } : {}),
    connectTimeoutMs: args['connect-timeout'] * 1000,
    costTimeoutMs: args['cost-timeout'] * 1000,
    ...(args['job-timeout'] > 0 ? { jobTimeoutMs: args['job-timeout'] * 1000 } : {}),
    retries: args.retries,
    failFast: args['fail-fast'],
    // On unless --no-load-streams, or RAKE_LOAD_STREAMS=0 where neither flag is given.
    loadStreams: args['load-streams'] ?? process.env.RAKE_LOAD_STREAMS !== '0',
    ...(args['dispatch-queue'] !== undefined ? { dispatchQueue: args['dispatch-queue'] } : {}),
    embedded: args.embedded,
    fallback: args.fallback,
    localHere: args['local-here'],
    ...(token ? { token: token.token } : {}),
    ...(executor ? { executor } : {}),
    ...(tls ? { tls } : {}),
    ...(cacheOn && executor === undefined
      ? {
          cache: new LocalCache(
            args['cache-dir'] !== undefined
              ? resolve(io.cwd, args['cache-dir'])
              : defaultCacheDir(),
            parseSize(args['cache-size'] ?? '') ?? DEFAULT_LOCAL_CACHE_BYTES,
            (message) => logger.warn({ component: 'cache' }, message),
          ),
        }
      : {}),
    logger,
    spool,
    ...(early === undefined ? {} : { early }),
  };

  if (args['dry-run']) {
    io.stdout.write(formatPlan(await planRun(rakefile, options)));
    await log.close();
    return EXIT.ok;
  }

  const signals = io.signals ?? process;
  return new Promise<number>((done) => {
    let summary: RunSummary | undefined;
    let subscription: Subscription | undefined;
    let finished = false;
    const finish = (code: number) => {
      if (finished) return;
      finished = true;
      signals.off('SIGINT', onInt);
      signals.off('SIGTERM', onTerm);
      // Partial output files and embedded servers are cleaned up before the process exits;
      // the trace and report cover whatever ran, even after an interrupt.
      void whenSettled()
        .then(() => {
          stdout.end();
          return streamFinished(stdout).catch(() => {});
        })
        .then(() => spool.close())
        .then(() => executor?.close())
        .then(() => writeTimelineFiles(args, shown.timeline(), { ...io, problem }))
        .then(() => log.close())
        .then(() => done(code));
    };
    const stop = (code: number, signal: NodeJS.Signals, what: string) => () => {
      subscription?.unsubscribe();
      // The trace and report keep what ran until now, the running actions as cancelled.
      shown.interrupt(signal);
      problem(
        'interrupted',
        `rake-ts: ${what}: cancelled every action; remote processes were killed`,
        { signal },
      );
      finish(code);
    };
    const onInt = stop(EXIT.interrupted, 'SIGINT', 'interrupted');
    const onTerm = stop(EXIT.terminated, 'SIGTERM', 'terminated');
    // Nobody reads stdout any more (`rake-ts | head`): stop the run quietly, as a tool killed
    // by SIGPIPE does (status 141). Any other write error is said once, then the same.
    onStdoutFailure = (failure) => {
      if (finished) return;
      subscription?.unsubscribe();
      shown.interrupt('SIGPIPE');
      if (failure.code !== 'EPIPE') {
        problem(
          'stdout-failed',
          `rake-ts: cannot write to stdout (${failure.message}): cancelled every action`,
        );
      }
      finish(failure.code === 'EPIPE' ? EXIT.brokenPipe : EXIT.stdoutFailed);
    };
    signals.on('SIGINT', onInt);
    signals.on('SIGTERM', onTerm);
    // The engine emits events; the log, the display (progress, trace, report) subscribe here.
    subscription = run(rakefile, options)
      .pipe(logEvents(logger.child({ component: 'client' })))
      .subscribe({
        next: (e) => {
          if (e.type === 'done') summary = e.summary;
          shown.next(e);
        },
        error: (err: unknown) => {
          shown.dispose();
          const what = err instanceof Error ? (err.stack ?? err.message) : String(err);
          problem('internal-error', `rake-ts: internal error: ${what}`, { err });
          finish(70);
        },
        complete: () => {
          shown.end();
          finish(summary === undefined ? 70 : summary.exitStatus);
        },
      });
  });
}

function defaultIO(): RunIO {
  return { stdout: process.stdout, stderr: process.stderr, cwd: process.cwd() };
}

/** `rake-ts [Rakefile]`: the default command. */
export const runCommand: CommandModule<object, RunArgs> = {
  command: '$0 [rakefile]',
  describe: 'run a Rakefile: actionsets in order, actions in parallel on the cheapest hosts',
  builder: (y) => withRunOptions(y),
  handler: async (args) => {
    const context = cliContext(args);
    context.exitCode = await runRake(args, context);
  },
};
