/**
 * The `rake-ts` program: yargs with one module per subcommand under src/cli/commands/.
 * bin/rake-ts.js calls `main` and exits with the status it resolves.
 */
import yargs, { type CommandModule } from 'yargs';
import { packageVersion } from '../util/version.js';
import { checkCommand } from './commands/check.js';
import { hostsCommand } from './commands/hosts.js';
import { runCommand } from './commands/run.js';
import { serveCommand } from './commands/serve.js';
import { type CliContext, type CliIO, EXIT_USAGE, processIO, UsageError } from './context.js';

export type { CliContext, CliIO } from './context.js';

/**
 * The subcommands. Adding one is one import above and one entry here; the module's handler
 * finds the streams and records its status through `cliContext(args)`.
 */
const COMMANDS: readonly AnyCommand[] = [runCommand, checkCommand, serveCommand, hostsCommand];

// biome-ignore lint/suspicious/noExplicitAny: each command module has its own argument type.
type AnyCommand = CommandModule<object, any>;

/**
 * Runs the program on `argv` (without `node` and the script) and resolves its exit status:
 * 0 success, 2 usage error or invalid Rakefile; each command documents the rest.
 */
export async function main(argv: readonly string[], io: CliIO = processIO()): Promise<number> {
  const context: CliContext = { ...io, exitCode: undefined };
  const width = Math.min(100, (io.stdout as { columns?: number }).columns ?? 80);
  let ran = false;
  const parser = yargs()
    .scriptName('rake-ts')
    .usage('$0 <command> [options]\n\nA distributed command runner driven by a Rakefile.')
    .strict()
    .help()
    .alias('h', 'help')
    .version(packageVersion() ?? 'unknown')
    .alias('V', 'version')
    // yargs answers --get-yargs-completions; its own `completion` command would be taken for
    // a Rakefile by the default command, so `completion` is registered below instead.
    .completion('yargs-completion-script', false)
    .exitProcess(false)
    .wrap(width)
    .fail((message, error) => {
      throw error ?? new UsageError(message);
    });
  for (const command of COMMANDS) {
    const handler = command.handler;
    parser.command({
      ...command,
      handler: async (args) => {
        ran = true;
        await handler(args);
      },
    } as CommandModule);
  }

  parser.command(
    'completion',
    'print a bash/zsh completion script',
    (y) => y.example('$0 completion >> ~/.bashrc', 'complete commands and flags in bash'),
    () => {
      // The typings omit the arguments: the program name and the command in the comments.
      const show = parser.showCompletionScript.bind(parser) as (app: string, cmd: string) => void;
      show('rake-ts', 'completion');
    },
  );

  let output = '';
  try {
    await parser.parseAsync([...argv], { context }, (_error, _args, text) => {
      output = text;
    });
  } catch (error: unknown) {
    if (!(error instanceof UsageError)) throw error;
    io.stderr.write(`rake-ts: ${error.message}\nTry 'rake-ts --help'.\n`);
    return EXIT_USAGE;
  }
  if (ran) return context.exitCode ?? Number(process.exitCode ?? 0);
  if (output !== '') {
    io.stdout.write(`${unglueTypeTags(output, width)}\n`);
    return 0;
  }
  io.stderr.write(`${await parser.getHelp()}\n\nrake-ts: name a command\n`);
  return EXIT_USAGE;
}

/**
 * yargs (cliui) puts an option's `[type] [default: …]` on the last line of its description
 * when it fits, and when it fits exactly it is glued on with no space (`errors[boolean]`).
 * Such a tag goes to a line of its own, right-aligned, as cliui does when it does not fit.
 */
export function unglueTypeTags(help: string, width: number): string {
  return help.replace(
    /^(.*\S)(\[(?:boolean|string|number|count|array)\].*)$/gm,
    (_line, text: string, tags: string) => `${text}\n${tags.padStart(width)}`,
  );
}
