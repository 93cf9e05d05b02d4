/**
 * The generated C project every build benchmark compiles: `units` files `uK.c`, each one
 * small function, a header `common.h` declaring them, a `main.c` calling every one, and a
 * link step. The same sources get a Makefile (for `make -jK`, and distcc through
 * `make CC="distcc cc"`) and a Rakefile (for rake-ts), so all builds do the same work.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Flags of every compile, in every build. */
export const CFLAGS = '-O2';

/** A generated project on disk and what its program must print. */
export interface CProject {
  readonly dir: string;
  readonly units: number;
  /** The program's expected stdout, computed here, not by a build. */
  readonly expected: string;
}

/** The value `uK(K)` returns, mirrored from the C below. */
const unitValue = (k: number) => k * ((k % 7) + 2) + k;

/**
 * Writes the project into `dir` (emptied first). `hosts` are the Rakefile's `HOSTS`
 * (`address:port`), `port` its `PORT`.
 */
export function writeCProject(
  dir: string,
  units: number,
  rakefileHosts: { hosts: readonly string[]; port: number },
  /** A comment put in every source, so a server's input cache has none of them yet. */
  salt = '',
): CProject {
  const mark = salt === '' ? '' : `/* ${salt} */\n`;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const names = Array.from({ length: units }, (_, k) => `u${k}`);
  writeFileSync(
    join(dir, 'common.h'),
    `${mark}#ifndef COMMON_H\n#define COMMON_H\n${names.map((n) => `int ${n}(int x);`).join('\n')}\n#endif\n`,
  );
  for (let k = 0; k < units; k++) {
    writeFileSync(
      join(dir, `u${k}.c`),
      `${mark}#include "common.h"\n\nint u${k}(int x) { return x * (x % 7 + 2) + ${k}; }\n`,
    );
  }
  writeFileSync(
    join(dir, 'main.c'),
    [
      '#include <stdio.h>',
      '#include "common.h"',
      '',
      'int main(void) {',
      '  long total = 0;',
      ...names.map((n, k) => `  total += ${n}(${k});`),
      '  printf("%ld\\n", total);',
      '  return 0;',
      '}',
      '',
    ].join('\n'),
  );
  const objects = [...names, 'main'].map((s) => `${s}.o`);
  writeFileSync(
    join(dir, 'Makefile'),
    [
      'CC ?= cc',
      `OBJS = ${objects.join(' ')}`,
      '',
      'prog: $(OBJS)',
      '\t$(CC) -o prog $(OBJS)',
      '',
      '%.o: %.c common.h',
      `\t$(CC) ${CFLAGS} -c $<`,
      '',
    ].join('\n'),
  );
  writeRakefile(dir, units, rakefileHosts);
  let total = 0;
  for (let k = 0; k < units; k++) total += unitValue(k);
  return { dir, units, expected: `${total}\n` };
}

/**
 * Writes the project's Rakefile: actionset `compile` (every unit and main.c, each requiring
 * its source and the header), then `link` (requiring every object). Called again with other
 * hosts to point the same project at another set of servers.
 */
export function writeRakefile(
  dir: string,
  units: number,
  rakefileHosts: { hosts: readonly string[]; port: number },
): void {
  const sources = [...Array.from({ length: units }, (_, k) => `u${k}`), 'main'];
  writeFileSync(
    join(dir, 'Rakefile'),
    [
      `PORT = ${rakefileHosts.port}`,
      `HOSTS = ${rakefileHosts.hosts.join(' ')}`,
      '',
      'compile:',
      ...sources.flatMap((s) => [
        `\tremote-cc ${CFLAGS} -c ${s}.c`,
        `\t\trequires ${s}.c common.h`,
      ]),
      '',
      'link:',
      '\tremote-cc -o prog *.o',
      `\t\trequires ${sources.map((s) => `${s}.o`).join(' ')}`,
      '',
    ].join('\n'),
  );
}

/**
 * Checks a finished build: every object is there and the program prints what it must.
 * Throws otherwise, so a broken build never counts as a fast one.
 */
export function checkProgram(project: CProject, who: string): void {
  const objects = objectCount(project);
  if (objects !== project.units + 1) {
    throw new Error(`${who}: ${objects} objects, expected ${project.units + 1}`);
  }
  const prog = join(project.dir, 'prog');
  chmodSync(prog, 0o755); // a base-mode transfer does not carry the execute bit
  const out = spawnSync(prog, { encoding: 'utf8' });
  if (out.stdout !== project.expected) {
    throw new Error(
      `${who}: prog printed ${JSON.stringify(out.stdout)}, expected ${project.expected}`,
    );
  }
}

/** Removes what a build makes: the objects and the program. */
export function cleanBuild(project: CProject): void {
  for (const name of readdirSync(project.dir)) {
    if (name.endsWith('.o') || name === 'prog') rmSync(join(project.dir, name), { force: true });
  }
}

/** Counts the objects a build left: `units + 1` (main.o) after a complete build. */
export function objectCount(project: CProject): number {
  return readdirSync(project.dir).filter((n) => n.endsWith('.o')).length;
}

/**
 * A Rakefile of `n` × `remote-true` (actionset `trues`) in `dir`, made afresh, for rakeservers
 * on loopback at `ports` (the first is its PORT).
 */
export function truesRakefile(dir: string, n: number, ports: readonly number[]): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const lines = Array.from({ length: n }, () => '\tremote-true').join('\n');
  writeFileSync(
    join(dir, 'Rakefile'),
    `PORT = ${ports[0]}\nHOSTS = ${ports.map((p) => `127.0.0.1:${p}`).join(' ')}\n\ntrues:\n${lines}\n`,
  );
}
