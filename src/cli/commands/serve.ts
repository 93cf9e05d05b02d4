import type { Writable } from 'node:stream';
import { type Logger, pino } from 'pino';
import type { Argv, CommandModule } from 'yargs';
import { DEFAULT_PORT, type ServeOptions, serve } from '../../server/index.js';
import { cliContext, UsageError } from '../context.js';

/** The parsed flags of `rakeserver` / `rake-ts serve`; shared so both programs agree. */
export interface ServeArgs {
  readonly port: number;
  readonly host: string;
  readonly workdir?: string | undefined;
  readonly 'max-jobs'?: number | undefined;
  readonly 'cost-offset': number;
  readonly 'job-timeout': number;
  readonly 'idle-timeout': number;
  readonly grace: number;
  readonly 'log-level': string;
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
      describe: 'parent of the per-connection job directories (default: a fresh temp dir)',
    })
    .option('max-jobs', {
      alias: 'j',
      type: 'number',
      describe: 'jobs run at once; more commands wait in a queue (default: CPU count)',
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
    .option('grace', {
      type: 'number',
      default: 10,
      describe: 'on SIGTERM/SIGINT, seconds running jobs get to finish before being killed',
    })
    .option('log-level', {
      type: 'string',
      choices: LOG_LEVELS,
      default: 'info',
      describe: 'NDJSON log level (logs go to stderr)',
    })
    .check((args) => {
      // UsageError: both programs report it in one line with a pointer to --help.
      const a = args as unknown as ServeArgs;
      const whole = (v: number | undefined, min: number, max = Number.MAX_SAFE_INTEGER) =>
        v === undefined || (Number.isInteger(v) && v >= min && v <= max);
      if (!whole(a.port, 0, 65535))
        throw new UsageError('--port must be a whole number from 0 to 65535');
      if (!whole(a['max-jobs'], 1))
        throw new UsageError('--max-jobs must be a whole number of at least 1');
      if (!whole(a['cost-offset'], 0))
        throw new UsageError('--cost-offset must be a whole number of at least 0');
      for (const [name, v] of [
        ['--job-timeout', a['job-timeout']],
        ['--idle-timeout', a['idle-timeout']],
        ['--grace', a.grace],
      ] as const) {
        if (!(Number.isFinite(v) && v >= 0))
          throw new UsageError(`${name} must be a number of at least 0`);
      }
      return true;
    }) as unknown as Argv<T & ServeArgs>;
}

/** Maps parsed flags onto {@link ServeOptions}. */
export function serveOptionsFrom(args: ServeArgs, logger: Logger): ServeOptions {
  return {
    host: args.host,
    port: args.port,
    ...(args.workdir !== undefined && { workdir: args.workdir }),
    ...(args['max-jobs'] !== undefined && { maxJobs: args['max-jobs'] }),
    costOffset: args['cost-offset'],
    jobTimeoutSeconds: args['job-timeout'],
    idleTimeoutSeconds: args['idle-timeout'],
    graceSeconds: args.grace,
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
  let handle: Awaited<ReturnType<typeof serve>>;
  try {
    handle = await serve(serveOptionsFrom(args, logger));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    logger.fatal({ err: e.message, code: e.code }, 'cannot start');
    io.stderr.write(`rakeserver: cannot listen on ${args.host}:${args.port}: ${e.message}\n`);
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
  builder: (y) => withServeOptions(y),
  handler: async (args) => {
    const context = cliContext(args);
    context.exitCode = await runServe(args, context);
  },
};
