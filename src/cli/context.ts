/**
 * What `main` (src/cli/main.ts) hands every subcommand: where to write, where to start,
 * and where to leave the exit status. Apart from main.ts so command modules can import it
 * without an import cycle.
 */
import type { Writable } from 'node:stream';
import { DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_COST_TIMEOUT_MS } from '../client/run.js';

/** Exit status for a command line the program rejects, as for an invalid Rakefile. */
export const EXIT_USAGE = 2;

/** `--connect-timeout` and `--cost-timeout`: the cost poll's bounds, for `run` and `hosts`. */
export const POLL_TIMEOUT_OPTIONS = {
  'connect-timeout': {
    type: 'number',
    default: DEFAULT_CONNECT_TIMEOUT_MS / 1000,
    describe: 'seconds allowed for each TCP connect',
  },
  'cost-timeout': {
    type: 'number',
    default: DEFAULT_COST_TIMEOUT_MS / 1000,
    describe: 'seconds a connected host has to answer a cost query',
  },
} as const;

/** The streams and starting directory of one run of the program; specs pass their own. */
export interface CliIO {
  readonly stdout: Writable;
  readonly stderr: Writable;
  readonly cwd: string;
}

/**
 * A run's IO plus its exit status. `main` passes it to every handler as `args.context`, so
 * the program can run in-process with captured streams.
 */
export interface CliContext extends CliIO {
  /** Set by the handler; a handler that leaves it unset leaves `process.exitCode` instead. */
  exitCode: number | undefined;
}

/** The streams and directory of this process. */
export function processIO(): CliIO {
  return { stdout: process.stdout, stderr: process.stderr, cwd: process.cwd() };
}

/** The context `main` passed to a command handler. */
export function cliContext(args: object): CliContext {
  const context = (args as { context?: CliContext }).context;
  if (context === undefined) throw new Error('command run outside main(): no CLI context');
  return context;
}

/** A command line the program rejects; reported in one line, with a pointer to --help. */
export class UsageError extends Error {}
