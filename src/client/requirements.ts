import { stat } from 'node:fs/promises';
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
 * actionset share `stat` calls.
 */
export async function resolveRequirements(
  directory: string,
  requires: readonly Requirement[],
  cache: Map<string, Promise<string | undefined>> = new Map(),
): Promise<{ files: OutgoingFile[]; missing: MissingRequirement[] }> {
  const files: OutgoingFile[] = [];
  const missing: MissingRequirement[] = [];
  const names = new Set<string>();
  const checks = requires.map(async (requirement) => {
    const path = resolve(directory, requirement.path);
    let check = cache.get(path);
    if (check === undefined) {
      check = statProblem(path);
      cache.set(path, check);
    }
    return { requirement, path, problem: await check };
  });
  for (const { requirement, path, problem } of await Promise.all(checks)) {
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

async function statProblem(path: string): Promise<string | undefined> {
  try {
    const st = await stat(path);
    return st.isFile() ? undefined : 'not a regular file';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'no such file' : `cannot read it (${code ?? String(err)})`;
  }
}
