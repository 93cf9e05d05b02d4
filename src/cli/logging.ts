/**
 * The CLI's pino logger, from `--log-format`, `--log-level`, `--log-file`, `-v` and `-q`.
 * Logs go to stderr (or the file), never to stdout, so action output and logs can be piped
 * apart. On stderr, pretty lines by default (coloured on a terminal), so a CI log stays
 * readable; `--log-format json` makes every stderr line a pino record, the display's own
 * lines included (`rake-ts --log-format json 2>&1 >/dev/null | jq` works). A record of an
 * event the display already printed readably (a failure, a retry) is left out of stderr;
 * `--log-file` keeps every record. Records are written synchronously, so a log line never
 * lands after the summary it precedes, and none is lost at exit.
 */
import type { Writable } from 'node:stream';
import { type DestinationStream, type Level, type LogFn, type Logger, pino } from 'pino';
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
      describe:
        'json: every stderr line a pino record (NDJSON), the progress too; pretty: readable lines (default; json with --log-file)',
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
  /**
   * Events (a record's `event` field) the display prints on stderr itself: their records are
   * left out of stderr, so a failure is not shown twice. Not applied to `--log-file`.
   */
  readonly shown?: ReadonlySet<string>;
  /** Level of the display's own records in JSON mode (default `info`; `warn` for `-q`). */
  readonly displayLevel?: LogLevel;
}

/** The logger and what must happen before the process exits. */
export interface CliLogger {
  /** The engine's records, at the level the flags ask for. */
  readonly logger: Logger;
  readonly format: LogFormat;
  /**
   * In JSON mode on stderr (`--log-format json`, no `--log-file`): the logger the display
   * writes its lines through, as records, whatever `--log-level` says (its own level is
   * `displayLevel`). Absent otherwise: the display writes text.
   */
  readonly display?: Logger;
  /** Flushes and closes the log file, if any. */
  close(): Promise<void>;
}

/** Whether these flags make stderr pure NDJSON: `--log-format json` without `--log-file`. */
export function jsonOnStderr(args: LogArgs): boolean {
  return args['log-format'] === 'json' && args['log-file'] === undefined;
}

/** Builds the CLI's logger from its flags. */
export function createCliLogger(args: LogArgs, target: LogTarget): CliLogger {
  const level = logLevelOf(args);
  const file = args['log-file'];
  const tty = target.isTTY ?? (target.stderr as { isTTY?: boolean }).isTTY === true;
  const format: LogFormat = args['log-format'] ?? (file === undefined ? 'pretty' : 'json');
  // pino's own error serializer, named: an `err` field keeps the error's type, message and stack.
  const options = {
    level,
    base: { pid: process.pid },
    serializers: { err: pino.stdSerializers.err },
  };

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
  const shown = target.shown;
  const hooks =
    shown === undefined || shown.size === 0
      ? {}
      : {
          hooks: {
            // Leaves out the record of an event the display has printed itself.
            logMethod(this: Logger, inputArgs: Parameters<Logger['info']>, method: LogFn) {
              const first = inputArgs[0] as { event?: unknown } | null | undefined;
              if (typeof first === 'object' && first !== null && shown.has(String(first.event))) {
                return;
              }
              method.apply(this, inputArgs as Parameters<LogFn>);
            },
          },
        };
  const logger = pino({ ...options, ...hooks }, sink);
  const display =
    format === 'json'
      ? pino({ ...options, level: target.displayLevel ?? 'info' }, sink).child({
          component: 'client',
        })
      : undefined;
  return {
    logger,
    format,
    ...(display === undefined ? {} : { display }),
    close: () => Promise.resolve(),
  };
}

/**
 * A pino destination `write` that turns each NDJSON line into pino-pretty's text. pino-pretty
 * is made (and, in the bundle, loaded) at the first record: most runs log none.
 */
function prettyLines(colorize: boolean, write: (text: string) => void): (line: string) => void {
  let pretty: ((line: string) => string) | undefined;
  return (line) => {
    pretty ??= prettyFactory({
      colorize,
      singleLine: true,
      ignore: 'pid,hostname',
      translateTime: 'SYS:HH:MM:ss.l',
    });
    write(pretty(line));
  };
}
