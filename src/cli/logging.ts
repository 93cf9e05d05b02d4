/**
 * The CLI's pino logger, from `--log-format`, `--log-level`, `--log-file`, `-v` and `-q`.
 * Logs go to stderr (or the file), never to stdout, so action output and logs can be piped
 * apart. NDJSON by default off a terminal (`rake-ts 2>&1 >/dev/null | pino-pretty` works);
 * pretty, one line per record, on a terminal. Records are written synchronously, so a log
 * line never lands after the summary it precedes, and none is lost at exit.
 */
import type { Writable } from 'node:stream';
import { type DestinationStream, type Level, type Logger, pino } from 'pino';
import { prettyFactory } from 'pino-pretty';
import type { Argv } from 'yargs';

/** `json`: NDJSON, one pino record per line; `pretty`: pino-pretty's readable lines. */
export type LogFormat = 'json' | 'pretty';

/** The levels `--log-level` accepts. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** One of {@link LOG_LEVELS}. */
export type LogLevel = Level | 'silent';

/** The logging flags (see {@link withLogOptions}). */
export interface LogArgs {
  readonly 'log-format'?: LogFormat | undefined;
  readonly 'log-level'?: LogLevel | undefined;
  readonly 'log-file'?: string | undefined;
  /** `-v` count: info, debug, trace. */
  readonly verbose?: number | undefined;
  readonly quiet?: boolean | undefined;
}

/** Adds `--log-format`, `--log-level` and `--log-file` to a command. */
export function withLogOptions<T>(y: Argv<T>): Argv<T & LogArgs> {
  return y
    .option('log-format', {
      type: 'string',
      choices: ['json', 'pretty'] as const,
      describe: 'log records as NDJSON or pretty lines (default: pretty on a terminal, else json)',
    })
    .option('log-level', {
      type: 'string',
      choices: LOG_LEVELS,
      describe: 'the least severe records logged (default warn; -v info, -vv debug, -vvv trace)',
    })
    .option('log-file', {
      type: 'string',
      describe: 'append the log records to this file instead of stderr (json unless --log-format)',
    }) as unknown as Argv<T & LogArgs>;
}

/** The level the flags ask for: `--log-level`, else `-q` (error) or the `-v` count. */
export function logLevelOf(args: LogArgs): LogLevel {
  if (args['log-level'] !== undefined) return args['log-level'];
  if (args.quiet === true) return 'error';
  const v = args.verbose ?? 0;
  return v >= 3 ? 'trace' : v === 2 ? 'debug' : v === 1 ? 'info' : 'warn';
}

/** Where the CLI's logger writes when there is no `--log-file`. */
export interface LogTarget {
  readonly stderr: Writable;
  /** Whether stderr is a terminal (default: `stderr.isTTY`). */
  readonly isTTY?: boolean;
  /**
   * Writes text to stderr; the live progress display passes its own so log lines are
   * printed above its status lines (default: `stderr.write`).
   */
  readonly write?: (text: string) => void;
  readonly env?: NodeJS.ProcessEnv;
}

/** The logger and what must happen before the process exits. */
export interface CliLogger {
  readonly logger: Logger;
  readonly format: LogFormat;
  /** Flushes and closes the log file, if any. */
  close(): Promise<void>;
}

/** Builds the CLI's logger from its flags. */
export function createCliLogger(args: LogArgs, target: LogTarget): CliLogger {
  const level = logLevelOf(args);
  const file = args['log-file'];
  const tty = target.isTTY ?? (target.stderr as { isTTY?: boolean }).isTTY === true;
  const format: LogFormat = args['log-format'] ?? (file === undefined && tty ? 'pretty' : 'json');
  const options = { level, base: { pid: process.pid } };

  if (file !== undefined) {
    const dest = pino.destination({ dest: file, sync: true, mkdir: true, append: true });
    const sink: DestinationStream =
      format === 'json' ? dest : { write: prettyLines(false, (s) => dest.write(s)) };
    return {
      logger: pino(options, sink),
      format,
      close: () =>
        new Promise<void>((resolve) => {
          dest.flushSync();
          dest.end();
          resolve();
        }),
    };
  }

  const write = target.write ?? ((text: string) => target.stderr.write(text));
  const env = target.env ?? process.env;
  const colors = tty && (env.NO_COLOR ?? '') === '';
  const sink: DestinationStream = { write: format === 'json' ? write : prettyLines(colors, write) };
  return { logger: pino(options, sink), format, close: () => Promise.resolve() };
}

/** A pino destination `write` that turns each NDJSON line into pino-pretty's text. */
function prettyLines(colorize: boolean, write: (text: string) => void): (line: string) => void {
  const pretty = prettyFactory({
    colorize,
    singleLine: true,
    ignore: 'pid,hostname',
    translateTime: 'SYS:HH:MM:ss.l',
  });
  return (line) => write(pretty(line));
}
