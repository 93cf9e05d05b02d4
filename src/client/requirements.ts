import { statSync } from 'node:fs';
import { basename, isAbsolute, relative, resolve, sep } from 'node:path';
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

/** A requirement that is not a readable regular file now. */
export interface MissingRequirement {
  readonly requirement: Requirement;
  readonly why: string;
}

/**
 * Resolves an action's requirements to files to send, checking each exists as a regular
 * file. Duplicates (same wire name) are sent once. `cache` lets the actions of one
 * actionset share `stat` calls. Synchronous: a `stat` on the event loop costs less than
 * two thread-pool handoffs, and an actionset's checks run before any of its actions.
 */
export function resolveRequirements(
  directory: string,
  requires: readonly Requirement[],
  cache: Map<string, string | undefined> = new Map(),
): { files: OutgoingFile[]; missing: MissingRequirement[] } {
  const files: OutgoingFile[] = [];
  const missing: MissingRequirement[] = [];
  const names = new Set<string>();
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
    const name = wireName(directory, requirement.path);
    if (names.has(name)) continue;
    names.add(name);
    files.push({ name, path });
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
