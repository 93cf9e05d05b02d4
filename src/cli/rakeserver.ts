import yargs from 'yargs';
import { runServe, type ServeArgs, withServeOptions } from './commands/serve.js';

/**
 * The `rakeserver` program: a server compatible with the reference `rakeserver`, with the
 * same flags as `rake-ts serve`. Resolves the exit status.
 */
export async function main(argv: readonly string[]): Promise<number> {
  const parser = withServeOptions(yargs([...argv]))
    .scriptName('rakeserver')
    .usage('$0 [options]\n\nRuns commands sent by rake clients (docs/server.md).')
    .example([
      ['$0', 'serve on 127.0.0.1:6238'],
      [
        '$0 --host 0.0.0.0 --max-jobs 8',
        'serve the network, 8 jobs at a time (trusted networks only)',
      ],
    ])
    .strict()
    .help()
    .alias('h', 'help')
    .version(false)
    .exitProcess(false);
  let failure: string | undefined;
  parser.fail((msg, err) => {
    failure = msg || err?.message || 'invalid arguments';
  });
  const args = (await parser.parseAsync()) as unknown as ServeArgs & { help?: boolean };
  if (failure !== undefined) {
    process.stderr.write(`rakeserver: ${failure}\nTry 'rakeserver --help'.\n`);
    return 2;
  }
  if (args.help) return 0;
  return runServe(args);
}
