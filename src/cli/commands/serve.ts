import type { Writable } from 'node:stream';
import { type Logger, pino } from 'pino';
import type { Argv, CommandModule } from 'yargs';
import { PLATFORM_WORD } from '../../protocol/extensions.js';
import { loadToken, TOKEN_ENV, TokenError } from '../../protocol/token.js';
import {
  DEFAULT_CACHE_SIZE,
  DEFAULT_PORT,
  DEFAULT_RESULTS_SIZE,
  isLoopback,
} from '../../server/defaults.js';
import type { ServeOptions, ServerHandle } from '../../server/index.js';
import type { SpawnerChoice } from '../../server/launcher.js';
import {
  DEFAULT_TLS_PORT,
  loadServerTls,
  type ServerTls,
  TlsConfigError,
} from '../../tls/index.js';
import { cliContext, UsageError } from '../context.js';

/** The parsed flags of `rakeserver` / `rake-ts serve`; shared so both programs agree. */
export interface ServeArgs {
  readonly port: number;
  readonly host: string;
  readonly workdir?: string | undefined;
  readonly 'max-jobs'?: number | undefined;
  readonly 'max-connections'?: number | undefined;
  readonly 'cost-offset': number;
  readonly 'job-timeout': number;
  readonly 'idle-timeout': number;
  readonly 'heartbeat-interval': number;
  readonly grace: number;
  readonly 'log-level': string;
  readonly 'token-file'?: string | undefined;
  readonly 'cache-size': string;
  readonly 'results-size': string;
  readonly platform?: string[] | undefined;
  readonly spawner: SpawnerChoice;
  readonly 'reapi-port'?: number | undefined;
  readonly 'tls-cert'?: string | undefined;
  readonly 'tls-key'?: string | undefined;
  readonly 'tls-client-ca'?: string | undefined;
  readonly 'tls-port'?: number | undefined;
  readonly plain: boolean;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Adds the server's flags to a yargs instance (used by `rakeserver` and `rake-ts serve`). */
export function withServeOptions<T>(y: Argv<T>): Argv<T & ServeArgs> {
  return y
    .option('port', {
      alias: 'p',
      type: 'number',
      default: DEFAULT_PORT,
      describe: 'TCP port to listen on (0 = any free port)',
    })
    .option('host', {
      type: 'string',
      default: '127.0.0.1',
      describe: 'address to bind; beyond loopback, anyone who can connect runs commands as you',
    })
    .option('workdir', {
      type: 'string',
      describe:
        'parent of the job directories and input cache (default: a fresh dir in $TMPDIR if set, else in /dev/shm when it is a roomy tmpfs, else in the temp dir)',
    })
    .option('max-jobs', {
      alias: 'j',
      type: 'number',
      describe: 'jobs run at once; more commands wait in a queue (default: CPU count)',
    })
    .option('max-connections', {
      type: 'number',
      describe:
        'connections open at once; at the cap the oldest one without a job is closed (default: from the descriptor limit, ulimit -n)',
    })
    .option('cost-offset', {
      type: 'number',
      default: 0,
      describe: 'added to the cost this server reports',
    })
    .option('job-timeout', {
      type: 'number',
      default: 0,
      describe: 'kill a job after this many seconds (0 = never)',
    })
    .option('idle-timeout', {
      type: 'number',
      default: 300,
      describe: 'close a connection silent this many seconds while a request is due (0 = never)',
    })
    .option('heartbeat-interval', {
      type: 'number',
      default: 5,
      describe:
        'seconds between heartbeats to a rake-ts client while its job runs; it takes 3 missed ones as a lost host (0 = none)',
    })
    .option('platform', {
      type: 'string',
      array: true,
      describe:
        "a label of this host's kind, KEY=VALUE (e.g. cc=gcc-12), told with its OS and architecture to rake-ts clients for their action cache (--cache); repeatable",
    })
    .option('grace', {
      type: 'number',
      default: 10,
      describe: 'on SIGTERM/SIGINT, seconds running jobs get to finish before being killed',
    })
    .option('token-file', {
      type: 'string',
      describe: `require clients to prove they know the token in this file (default: $${TOKEN_ENV} if set). Without a token, every user of this machine (and beyond loopback, anyone who can connect) runs commands as you`,
    })
    .option('cache-size', {
      type: 'string',
      default: `${DEFAULT_CACHE_SIZE / 1024 / 1024}M`,
      describe: 'bytes of uploaded inputs kept by content hash (K, M, G suffixes; 0 = no cache)',
    })
    .option('results-size', {
      type: 'string',
      default: `${DEFAULT_RESULTS_SIZE / 1024 / 1024}M`,
      describe:
        "bytes of results of this server's own successful jobs kept by action key, answered to clients' --cache lookups (the shared action cache; K, M, G suffixes; 0 = off)",
    })
    .option('spawner', {
      type: 'string',
      choices: ['auto', 'python3', 'node'] as const,
      default: 'auto',
      describe:
        'how jobs start: python3 (a posix_spawn helper: about 2 ms of CPU per job, against 8 ms), node (child_process.spawn), auto (python3 if it runs)',
    })
    .option('reapi-port', {
      type: 'number',
      describe:
        'also serve the Remote Execution API v2 (gRPC; Bazel --remote_executor, rake-ts --executor) on this port (0 = any free port): docs/remote-execution.md',
    })
    .option('tls-cert', {
      type: 'string',
      describe: `serve TLS with this certificate (PEM) on --tls-port, beside the plain port`,
    })
    .option('tls-key', { type: 'string', describe: 'the private key (PEM) of --tls-cert' })
    .option('tls-client-ca', {
      type: 'string',
      describe:
        'mutual TLS: TLS clients must present a certificate signed by this CA (PEM); adds to --token-file',
    })
    .option('tls-port', {
      type: 'number',
      describe: `TCP port for TLS (default ${DEFAULT_TLS_PORT}; 0 = any free port, as is the default with --port 0)`,
    })
    .option('plain', {
      type: 'boolean',
      default: true,
      describe: 'serve the plain (base-protocol) port too; --no-plain serves TLS only',
    })
    .option('log-level', {
      type: 'string',
      choices: LOG_LEVELS,
      default: 'info',
      describe: 'NDJSON log level (logs go to stderr)',
    })
    .epilog(
      `Environment: ${TOKEN_ENV} is the token when --token-file is not given (jobs never see it). RAKE_JOB_CONTAINMENT=auto|cgroup|tag chooses how every process a job started is found and killed when the job ends: cgroup (a cgroup v2 per job; needs a writable /sys/fs/cgroup), tag (an environment tag looked for in /proc), auto (cgroup where it works, else tag; the default). The listening log line says which is in force: docs/server.md.`,
    )
    .check((args) => {
      // UsageError: both programs report it in one line with a pointer to --help.
      const a = args as unknown as ServeArgs;
      const whole = (v: number | undefined, min: number, max = Number.MAX_SAFE_INTEGER) =>
        v === undefined || (Number.isInteger(v) && v >= min && v <= max);
      if (!whole(a.port, 0, 65535))
        throw new UsageError('--port must be a whole number from 0 to 65535');
      if (!whole(a['reapi-port'], 0, 65535))
        throw new UsageError('--reapi-port must be a whole number from 0 to 65535');
      if (!whole(a['tls-port'], 0, 65535))
        throw new UsageError('--tls-port must be a whole number from 0 to 65535');
      if ((a['tls-cert'] === undefined) !== (a['tls-key'] === undefined))
        throw new UsageError('--tls-cert and --tls-key go together: give both or neither');
      if (a['tls-cert'] === undefined) {
        for (const flag of ['tls-client-ca', 'tls-port'] as const) {
          if (a[flag] !== undefined)
            throw new UsageError(`--${flag} needs --tls-cert and --tls-key`);
        }
        if (!a.plain)
          throw new UsageError('--no-plain leaves no port: give --tls-cert and --tls-key');
      }
      for (const p of a.platform ?? []) {
        const [k, v, ...more] = p.split('=');
        if (
          more.length > 0 ||
          !PLATFORM_WORD.test(k ?? '') ||
          !PLATFORM_WORD.test(v ?? '') ||
          k === 'os' ||
          k === 'arch'
        ) {
          throw new UsageError(
            `--platform "${p}" is not KEY=VALUE of letters, digits and ._+- (os and arch are the machine's own)`,
          );
        }
      }
      if (!whole(a['max-jobs'], 1))
        throw new UsageError('--max-jobs must be a whole number of at least 1');
      if (!whole(a['max-connections'], 1))
        throw new UsageError('--max-connections must be a whole number of at least 1');
      if (!whole(a['cost-offset'], 0))
        throw new UsageError('--cost-offset must be a whole number of at least 0');
      if (parseSize(a['cache-size']) === undefined)
        throw new UsageError('--cache-size must be a number of bytes, optionally with K, M or G');
      if (parseSize(a['results-size']) === undefined)
        throw new UsageError('--results-size must be a number of bytes, optionally with K, M or G');
      for (const [name, v] of [
        ['--job-timeout', a['job-timeout']],
        ['--idle-timeout', a['idle-timeout']],
        ['--heartbeat-interval', a['heartbeat-interval']],
        ['--grace', a.grace],
      ] as const) {
        if (!(Number.isFinite(v) && v >= 0))
          throw new UsageError(`${name} must be a number of at least 0`);
      }
      return true;
    }) as unknown as Argv<T & ServeArgs>;
}

/** `512M` → 536870912; `0` → 0; `1.5G`; binary units. `undefined` if unreadable. */
export function parseSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) return undefined;
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[
    (m[2] ?? '').toLowerCase() as '' | 'k' | 'm' | 'g' | 't'
  ];
  const n = Math.floor(Number(m[1]) * unit);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** Maps parsed flags onto {@link ServeOptions} (the token is loaded by {@link runServe}). */
export function serveOptionsFrom(args: ServeArgs, logger: Logger): ServeOptions {
  return {
    cacheSize: parseSize(args['cache-size']) ?? DEFAULT_CACHE_SIZE,
    resultsSize: parseSize(args['results-size']) ?? DEFAULT_RESULTS_SIZE,
    ...(args.platform !== undefined && args.platform.length > 0
      ? { platform: Object.fromEntries(args.platform.map((p) => p.split('=') as [string, string])) }
      : {}),
    host: args.host,
    port: args.port,
    ...(args.workdir !== undefined && { workdir: args.workdir }),
    ...(args['max-jobs'] !== undefined && { maxJobs: args['max-jobs'] }),
    ...(args['max-connections'] !== undefined && { maxConnections: args['max-connections'] }),
    costOffset: args['cost-offset'],
    jobTimeoutSeconds: args['job-timeout'],
    idleTimeoutSeconds: args['idle-timeout'],
    heartbeatIntervalSeconds: args['heartbeat-interval'],
    graceSeconds: args.grace,
    spawner: args.spawner,
    ...(args['reapi-port'] !== undefined && { reapiPort: args['reapi-port'] }),
    logger,
  };
}

/**
 * Runs a server until SIGTERM or SIGINT, then shuts it down gracefully (running jobs get
 * `--grace` seconds) and resolves 0. Resolves 1 if it cannot listen.
 */
export async function runServe(
  args: ServeArgs,
  io: { readonly stderr: Writable } = { stderr: process.stderr },
): Promise<number> {
  const destination =
    io.stderr === process.stderr ? pino.destination({ dest: 2, sync: true }) : io.stderr;
  const logger = pino({ level: args['log-level'], base: { pid: process.pid } }, destination);
  let token: Awaited<ReturnType<typeof loadToken>>;
  try {
    token = await loadToken(args['token-file']);
  } catch (err) {
    const message = err instanceof TokenError ? err.message : String(err);
    logger.fatal({ err }, 'cannot read the token');
    io.stderr.write(`rakeserver: ${message}\n`);
    return 2;
  }
  if (token?.exposed) {
    logger.warn({ source: token.source }, 'the token file is readable by other users');
  }
  if (token === undefined && !isLoopback(args.host)) {
    // Loud even with --log-level silent: this is the one misconfiguration that hands out a shell.
    io.stderr.write(
      `rakeserver: WARNING: listening on ${args.host} without a token: anyone who can reach this port runs commands as this user. Use --token-file F or set ${TOKEN_ENV}.\n`,
    );
  }
  let tls: ServerTls | undefined;
  try {
    tls =
      args['tls-cert'] === undefined || args['tls-key'] === undefined
        ? undefined
        : await loadServerTls(
            {
              cert: args['tls-cert'],
              key: args['tls-key'],
              clientCa: args['tls-client-ca'],
              port: args['tls-port'] ?? (args.port === 0 ? 0 : DEFAULT_TLS_PORT),
            },
            process.cwd(),
          );
  } catch (err) {
    const message = err instanceof TlsConfigError ? err.message : String(err);
    logger.fatal({ err: message }, 'cannot load the TLS files');
    io.stderr.write(`rakeserver: ${message}\n`);
    return 2;
  }
  let handle: ServerHandle;
  try {
    // Loaded here, not with the CLI: a client run needs none of the server.
    const { serve } = await import('../../server/server.js');
    handle = await serve({
      ...serveOptionsFrom(args, logger),
      ...(token ? { token: token.token } : {}),
      ...(tls ? { tls } : {}),
      plain: args.plain,
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    logger.fatal({ err: e }, 'cannot start');
    const ports = [
      ...(args.plain ? [String(args.port)] : []),
      ...(tls ? [`${tls.port} (TLS)`] : []),
    ].join(' and ');
    io.stderr.write(`rakeserver: cannot listen on ${args.host} port ${ports}: ${e.message}\n`);
    return 1;
  }
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    const on = (s: NodeJS.Signals) => {
      process.off('SIGTERM', on);
      process.off('SIGINT', on);
      resolve(s);
    };
    process.on('SIGTERM', on);
    process.on('SIGINT', on);
  });
  logger.info({ signal }, 'signal received');
  await handle.close();
  return 0;
}

/** `rake-ts serve`: the same server as the `rakeserver` program. */
export const serveCommand: CommandModule<object, ServeArgs> = {
  command: 'serve',
  describe: 'run a rakeserver: accept commands from rake clients and run them here',
  builder: (y) =>
    withServeOptions(y).example([
      ['$0 serve', 'serve on 127.0.0.1:6238'],
      [
        '$0 serve --host 0.0.0.0 -j 8',
        'serve the network, 8 jobs at a time (trusted networks only)',
      ],
      ['$0 serve --port 0 --log-level debug', 'any free port; log every connection'],
    ]),
  handler: async (args) => {
    const context = cliContext(args);
    context.exitCode = await runServe(args, context);
  },
};
