import { statSync } from 'node:fs';
import { basename, isAbsolute, posix, relative, resolve, sep } from 'node:path';
import type { Requirement } from '../../grammar/model.js';
import type { OutgoingFile } from '../protocol/filestream.js';

/**
 * The name a required file travels under. A path inside the Rakefile's directory keeps its
 * relative form, normalized (`./src/program.c` → `src/program.c`), so the server recreates
 * the same layout and `cc -c src/program.c` finds it. A path outside the directory (`../x.h`,
 * `/usr/include/y.h`) travels under its base name, as the reference client sends every
 * file. See docs/client.md, "Wire names".
 */
export function wireName(directory: string, path: string): string {
  const rel = relative(directory, resolve(directory, path));
  if (rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
    return basename(path);
  }
  return rel.split(sep).join('/');
}

/**
 * A required file as a job carries it: `name` is its base-mode wire name (above), `relative`
 * its path from the Rakefile's directory (`/`-separated, normalized, `..` kept), absent
 * for a path written absolute, and `requirement` the `requires` entry it came from (for
 * messages naming its line).
 */
export interface RequiredFile extends OutgoingFile {
  readonly relative?: string;
  /** Absent for a file given by the API without one. */
  readonly requirement?: Requirement;
}

/** The path written in a `requires` line, relative to the Rakefile's directory and normalized. */
function relativeForm(directory: string, path: string): string | undefined {
  if (isAbsolute(path)) return undefined;
  const rel = relative(directory, resolve(directory, path));
  return isAbsolute(rel) ? undefined : rel.split(sep).join('/');
}

/** How many `..` a relative path starts with. */
function upLevels(rel: string): number {
  let n = 0;
  for (const segment of rel.split('/')) {
    if (segment !== '..') break;
    n++;
  }
  return n;
}

/**
 * The files of one job as a host receives them, and the directory the command runs in.
 * `cwd` is set when a requirement lies above the Rakefile's directory and the host carries
 * paths (extension `paths`): the job directory then stands for the directory that many
 * levels up, the command runs in the Rakefile directory's last components below it
 * (`build` for `../include/x.h` from `proj/build`), and every file keeps its place relative
 * to it, so `#include "../include/x.h"` finds it. Two different files under one name are
 * refused, naming both `requires` entries: a base-protocol host gets each file under its
 * base name when it lies outside the directory, so `../a/config.h` and `../b/config.h`
 * would collide, and one would be lost.
 */
export type JobLayout =
  | { readonly ok: true; readonly files: readonly OutgoingFile[]; readonly cwd?: string }
  | { readonly ok: false; readonly message: string };

export function jobLayout(
  directory: string,
  files: readonly RequiredFile[],
  carriesPaths: boolean,
  host: string,
): JobLayout {
  const up = carriesPaths ? Math.max(0, ...files.map((f) => upLevels(f.relative ?? ''))) : 0;
  const below = directory.split(sep).filter((c) => c !== '');
  const cwd = up > 0 ? below.slice(-up).join('/') : undefined;
  const placed = files.map((f): OutgoingFile => {
    if (cwd === undefined) return { name: f.name, path: f.path };
    // Relative to the directory `up` levels above the Rakefile's (the job directory).
    const name = posix.normalize(
      f.relative !== undefined ? `${cwd}/${f.relative}` : `${cwd}/${basename(f.path)}`,
    );
    return { name, path: f.path };
  });
  const seen = new Map<string, number>();
  for (const [i, f] of placed.entries()) {
    const j = seen.get(f.name);
    if (j === undefined) {
      seen.set(f.name, i);
      continue;
    }
    const a = files[j] as RequiredFile;
    const b = files[i] as RequiredFile;
    const why = carriesPaths
      ? ''
      : `, a base-protocol host, which gets a file outside the Rakefile's directory under its base name`;
    return {
      ok: false,
      message: `requires ${shown(a)} and ${shown(b)} would both arrive as ${f.name} on ${host}${why}: nothing was sent. Rename one, or run a rake-ts server there (it carries their directories)`,
    };
  }
  return cwd === undefined ? { ok: true, files: placed } : { ok: true, files: placed, cwd };
}

/** `../a/config.h (Rakefile:5:12)`: the path as written and where. */
function shown(f: RequiredFile): string {
  const r = f.requirement;
  if (r === undefined) return f.relative ?? f.path;
  return `${r.path} (${r.position.file}:${r.position.line}:${r.position.column})`;
}

/**
 * Requirements of one action that a base-protocol host would receive under one name (their
 * base names, being outside the Rakefile's directory): for `rake-ts check`, which contacts
 * no host. Pure: the file system is not read.
 */
export function baseNameCollisions(
  directory: string,
  requires: readonly Requirement[],
): { readonly first: Requirement; readonly second: Requirement; readonly name: string }[] {
  const byName = new Map<string, { requirement: Requirement; path: string }>();
  const out: { first: Requirement; second: Requirement; name: string }[] = [];
  for (const requirement of requires) {
    const path = resolve(directory, requirement.path);
    const name = wireName(directory, requirement.path);
    const known = byName.get(name);
    if (known === undefined) byName.set(name, { requirement, path });
    else if (known.path !== path) out.push({ first: known.requirement, second: requirement, name });
  }
  return out;
}

/** A requirement that is not a readable regular file now. */
export interface MissingRequirement {
  readonly requirement: Requirement;
  readonly why: string;
}

/**
 * Resolves an action's requirements to files to send, checking each exists as a regular
 * file. The same file required twice is sent once; two files that would arrive under one
 * name are refused by {@link jobLayout} once the host is known. `cache` lets the actions of one
 * actionset share `stat` calls. Synchronous: a `stat` on the event loop costs less than
 * two thread-pool handoffs, and an actionset's checks run before any of its actions.
 */
export function resolveRequirements(
  directory: string,
  requires: readonly Requirement[],
  cache: Map<string, string | undefined> = new Map(),
): { files: RequiredFile[]; missing: MissingRequirement[] } {
  const files: RequiredFile[] = [];
  const missing: MissingRequirement[] = [];
  const paths = new Set<string>();
  for (const requirement of requires) {
    const path = resolve(directory, requirement.path);
    let problem: string | undefined;
    if (cache.has(path)) problem = cache.get(path);
    else {
      problem = statProblem(path);
      cache.set(path, problem);
    }
    if (problem !== undefined) {
      missing.push({ requirement, why: problem });
      continue;
    }
    // The same file twice is sent once; two files under one name are `jobLayout`'s to refuse.
    if (paths.has(path)) continue;
    paths.add(path);
    const rel = relativeForm(directory, requirement.path);
    files.push({
      name: wireName(directory, requirement.path),
      path,
      requirement,
      ...(rel === undefined ? {} : { relative: rel }),
    });
  }
  return { files, missing };
}

function statProblem(path: string): string | undefined {
  try {
    const st = statSync(path, { throwIfNoEntry: false });
    if (st === undefined) return 'no such file';
    return st.isFile() ? undefined : 'not a regular file';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'no such file' : `cannot read it (${code ?? String(err)})`;
  }
}
