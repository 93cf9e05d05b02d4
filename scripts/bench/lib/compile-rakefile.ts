/**
 * The Rakefile of the benchmarks that time single compiles (overhead.ts, scaling.ts): only
 * the actionset `compile` of the generated project's units, no `main.c` and no link (for the
 * whole build see `writeRakefile` in project.ts).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CFLAGS } from './project.js';

/**
 * Writes `dir/Rakefile`: `PORT` and `HOSTS` from `rakefileHosts`, then actionset `compile`
 * with `remote-cc -c uK.c` for every unit, each requiring its source and the header.
 */
export function writeCompileRakefile(
  dir: string,
  units: number,
  rakefileHosts: { readonly hosts: readonly string[]; readonly port: number | undefined },
): void {
  writeFileSync(
    join(dir, 'Rakefile'),
    [
      `PORT = ${rakefileHosts.port}`,
      `HOSTS = ${rakefileHosts.hosts.join(' ')}`,
      '',
      'compile:',
      ...Array.from({ length: units }, (_, k) => [
        `\tremote-cc ${CFLAGS} -c u${k}.c`,
        `\t\trequires u${k}.c common.h`,
      ]).flat(),
      '',
    ].join('\n'),
  );
}
