/**
 * A benchmark part run on its own (`node --import tsx scripts/bench/PART.ts [flags]`): reads
 * its flags, compiles the programs, measures, and prints its section of docs/benchmarks.md
 * on stdout. scripts/bench/index.ts imports the parts and runs their functions itself.
 */
import { parseArgs } from 'node:util';
import { compilePrograms, type Programs, progress } from './proc.js';

/** A part's flags by name, each with its default: a number, or a comma-separated list of them. */
export type PartFlags = Record<string, number | readonly number[]>;

/** The flags as given on the command line, or their defaults. */
export type ParsedFlags<F extends PartFlags> = {
  [K in keyof F]: F[K] extends number ? number : number[];
};

/**
 * When the module at `moduleUrl` (its `import.meta.url`) is the one node was started with:
 * parses `--NAME VALUE` for every flag of `defaults`, compiles the programs, and prints what
 * `measure` makes of them. Otherwise (the module was imported) does nothing.
 */
export async function runPartAsMain<F extends PartFlags>(
  moduleUrl: string,
  defaults: F,
  measure: (flags: ParsedFlags<F>, programs: Programs) => Promise<string>,
): Promise<void> {
  if (process.argv[1] !== new URL(moduleUrl).pathname) return;
  const options = Object.fromEntries(
    Object.entries(defaults).map(([name, d]) => [
      name,
      { type: 'string' as const, default: typeof d === 'number' ? String(d) : d.join(',') },
    ]),
  );
  const { values } = parseArgs({ options });
  const flags = Object.fromEntries(
    Object.entries(defaults).map(([name, d]) => {
      const v = String(values[name]);
      return [name, typeof d === 'number' ? Number(v) : v.split(',').map(Number)];
    }),
  ) as ParsedFlags<F>;
  progress('compiling rake-ts');
  const programs = compilePrograms();
  process.stdout.write(`${await measure(flags, programs)}\n`);
}
