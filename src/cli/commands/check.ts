/**
 * `rake-ts check [Rakefile]`: parse and validate a Rakefile without contacting any server.
 * Prints a short summary (or, with --json, the model; with --print, the canonical text);
 * diagnostics go to stderr. Exit status 0 when valid, 2 when not (or on a usage error).
 */
import { stat } from 'node:fs/promises';
import { dirname, relative, resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { formatDiagnostics } from '../../../grammar/diagnostics.js';
import { diagnosticsToJson, rakefileToJson } from '../../../grammar/json.js';
import { NO_CACHE_MARK, type Rakefile } from '../../../grammar/model.js';
import { readRakefile } from '../../../grammar/parse.js';
import { printRakefile } from '../../../grammar/print.js';
import { baseNameCollisions } from '../../client/requirements.js';
import { type CliIO, cliContext, EXIT_USAGE } from '../context.js';

/** The flags of `rake-ts check`. */
export interface CheckArgs {
  readonly rakefile?: string | undefined;
  readonly file?: string | undefined;
  readonly directory?: string | undefined;
  readonly json?: boolean | undefined;
  readonly print?: boolean | undefined;
}

/** Actionsets listed one per line in the summary; the rest are counted. */
const LISTED_ACTIONSETS = 20;

function withCheckOptions<T>(y: Argv<T>): Argv<T & CheckArgs> {
  return y
    .positional('rakefile', {
      type: 'string',
      describe: 'the Rakefile to check (default: ./Rakefile)',
    })
    .option('file', {
      alias: 'f',
      type: 'string',
      describe: 'the Rakefile to check (same as the argument)',
    })
    .option('directory', {
      alias: 'C',
      type: 'string',
      describe: 'change to this directory first (as make -C)',
    })
    .option('json', {
      type: 'boolean',
      describe: 'print the model (or the diagnostics) as JSON; schema in docs/rakefile.md',
    })
    .option('print', {
      type: 'boolean',
      describe: 'print the Rakefile in canonical form (tabs, one requires line per action)',
    })
    .conflicts('json', 'print') as unknown as Argv<T & CheckArgs>;
}

/**
 * Checks one Rakefile and resolves the exit status: 0 valid, 2 invalid or unreadable (or a
 * usage error such as a missing -C directory).
 */
export async function runCheck(args: CheckArgs, io: CliIO): Promise<number> {
  if (args.file !== undefined && args.rakefile !== undefined) {
    io.stderr.write(
      `rake-ts check: name the Rakefile once, with -f or as the argument, not both\n`,
    );
    return EXIT_USAGE;
  }
  const base = resolve(io.cwd, args.directory ?? '.');
  if (args.directory !== undefined) {
    const st = await stat(base).catch(() => undefined);
    if (!st?.isDirectory()) {
      io.stderr.write(`rake-ts check: -C ${args.directory}: no such directory\n`);
      return EXIT_USAGE;
    }
  }
  const given = args.file ?? args.rakefile ?? 'Rakefile';
  const path = resolve(base, given);
  const near = relative(io.cwd, path);
  const label = near === '' ? given : near.startsWith('..') ? path : near;

  const read = await readRakefile(path, { file: label });
  if (!read.ok) {
    io.stderr.write(formatDiagnostics(read.diagnostics, read.source));
    const n = read.diagnostics.length;
    io.stderr.write(`\nrake-ts check: ${label}: ${n} error${n === 1 ? '' : 's'}\n`);
    if (args.json === true) {
      io.stdout.write(`${JSON.stringify(diagnosticsToJson(label, read.diagnostics), null, 2)}\n`);
    }
    return EXIT_USAGE;
  }
  io.stderr.write(collisionWarnings(read.rakefile, dirname(path)));
  if (args.json === true)
    io.stdout.write(`${JSON.stringify(rakefileToJson(read.rakefile), null, 2)}\n`);
  else if (args.print === true) io.stdout.write(printRakefile(read.rakefile));
  else io.stdout.write(summarize(read.rakefile));
  return 0;
}

/**
 * A warning per pair of requirements of one action that a base-protocol host would receive
 * under one base name (`../a/config.h` and `../b/config.h`): such a run fails on that host,
 * before sending anything; a rake-ts server carries their directories (extension `cwd`).
 */
export function collisionWarnings(rakefile: Rakefile, directory: string): string {
  let out = '';
  for (const action of rakefile.actionsets.flatMap((s) => s.actions)) {
    for (const c of baseNameCollisions(directory, action.requires)) {
      const at = c.second.position;
      out += `${at.file}:${at.line}:${at.column}: warning: requires ${c.second.path} and ${c.first.path} (line ${c.first.position.line}) would both arrive as ${c.name} on a base-protocol host (it gets a file outside the Rakefile's directory under its base name); a rake-ts server carries their directories\n`;
    }
  }
  return out;
}

/** The few lines `check` prints for a valid Rakefile. */
export function summarize(rakefile: Rakefile): string {
  const actions = rakefile.actionsets.flatMap((s) => s.actions);
  const remote = actions.filter((a) => a.remote).length;
  const files = actions.flatMap((a) => a.requires.map((r) => r.path));
  const hosts =
    rakefile.hosts.length === 0
      ? 'none (every action runs here)'
      : rakefile.hosts
          .map(
            (h) =>
              `${h.tls ? 'rakes://' : ''}${h.host.includes(':') ? `[${h.host}]` : h.host}:${h.port}`,
          )
          .join(' ');
  const lines = [
    `${rakefile.file}: OK`,
    `  actionsets  ${rakefile.actionsets.length}`,
    `  actions     ${actions.length}${split(actions.length, remote)}`,
    `  files       ${files.length} required (${new Set(files).size} distinct)`,
    `  hosts       ${hosts}`,
    `  port        ${rakefile.port}`,
    // A base-protocol client (the reference rake-p) would take `rakes` for a host name.
    ...(rakefile.hosts.some((h) => h.tls)
      ? [
          '  note        rakes:// hosts are TLS (rake-ts only): base-protocol tools (the reference rake-p) cannot read this HOSTS line',
        ]
      : []),
    ...(actions.some((a) => a.noCache)
      ? [
          `  note        ${actions.filter((a) => a.noCache).length} action(s) exempt from --cache (${NO_CACHE_MARK}); base-protocol tools read the mark as a comment and run them as usual`,
        ]
      : []),
    '',
  ];
  const width = Math.max(...rakefile.actionsets.map((s) => s.name.length), 0);
  for (const set of rakefile.actionsets.slice(0, LISTED_ACTIONSETS)) {
    const setRemote = set.actions.filter((a) => a.remote).length;
    const n = set.actions.length;
    lines.push(
      `  ${set.name.padEnd(width)}  ${n} action${n === 1 ? '' : 's'}${split(n, setRemote)}`,
    );
  }
  const more = rakefile.actionsets.length - LISTED_ACTIONSETS;
  if (more > 0) lines.push(`  … and ${more} more actionset${more === 1 ? '' : 's'}`);
  return `${lines.join('\n')}\n`;
}

/** ` (3 remote, 1 local)`, leaving out a zero. */
function split(total: number, remote: number): string {
  const local = total - remote;
  const parts = [remote > 0 ? `${remote} remote` : '', local > 0 ? `${local} local` : ''];
  const text = parts.filter((p) => p !== '').join(', ');
  return text === '' ? '' : ` (${text})`;
}

/** `rake-ts check [Rakefile]`. */
export const checkCommand: CommandModule<object, CheckArgs> = {
  command: 'check [rakefile]',
  describe: 'parse and validate a Rakefile; contact no server',
  builder: (y) =>
    withCheckOptions(y).example([
      ['$0 check', 'check ./Rakefile'],
      ['$0 check -C build --json', 'print build/Rakefile as JSON'],
      ['$0 check --print > Rakefile.new', 'rewrite a Rakefile in canonical form'],
    ]),
  handler: async (args) => {
    const context = cliContext(args);
    context.exitCode = await runCheck(args, context);
  },
};
