/**
 * How a job's output files land in the project. A server decides which files come back,
 * and a hostile or compromised one could plant code where tools run it unasked (a
 * `.git/hooks/pre-commit`, a `.git/config` with `core.fsmonitor`) or rewrite the Rakefile
 * itself; a broken connection could leave half of an action's outputs beside stale others.
 * So: names under a version-control directory and the Rakefile are refused, every file is
 * received under a temporary name, and they are renamed into place together once all have
 * arrived (issue 17, defects 6 and 9).
 */
import { lstatSync, renameSync, rmdirSync, rmSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import type { TransferredFile } from '../protocol/filestream.js';
import { prepareInside } from '../protocol/names.js';
import type { ActionRef } from './events.js';

/**
 * Directories no output may be written under, at any depth: what is inside them runs
 * unasked (hooks, `core.fsmonitor`, `[hooks]` of Mercurial) on the next `git status`.
 * Compared without regard to case: on a case-insensitive file system `.GIT` is `.git`.
 */
export const REFUSED_DIRECTORIES: readonly string[] = ['.git', '.hg', '.svn'];

/**
 * Why an output named `name` (relative to the project, `/`-separated) must not land, or
 * `undefined` when it may. `refusedFiles` are absolute paths never replaced (the Rakefile).
 */
export function outputRefusal(
  name: string,
  outputDir: string,
  refusedFiles: readonly string[],
): string | undefined {
  const segments = name.split('/');
  const vcs = segments.slice(0, -1).find((s) => REFUSED_DIRECTORIES.includes(s.toLowerCase()));
  if (vcs !== undefined) {
    return `it is inside ${vcs}/, where files run as code on the next version-control command`;
  }
  const path = resolve(outputDir, ...segments);
  if (refusedFiles.includes(path)) return 'it would replace the Rakefile';
  return undefined;
}

/**
 * Renames staged files into place, all of them; a rename that fails removes the staged files
 * not yet moved and throws (the ones moved stay: each is whole).
 */
export function landStaged(files: readonly TransferredFile[]): void {
  let i = 0;
  try {
    for (; i < files.length; i++) {
      const f = files[i] as TransferredFile;
      if (f.staged !== undefined) renameSync(f.staged, f.path);
    }
  } catch (err) {
    discardStaged(files.slice(i));
    throw err;
  }
}

/** Removes staged files that will not land. */
export function discardStaged(files: readonly TransferredFile[]): void {
  for (const f of files) if (f.staged !== undefined) rmSync(f.staged, { force: true });
}

/**
 * Which action of an actionset wrote which output: two actions of one actionset writing the
 * same file is a mistake in the Rakefile (which result wins depends on timing), so the
 * second one is refused and reported, naming the first.
 */
export class OutputClaims {
  readonly #owners = new Map<string, ActionRef>();

  /**
   * Claims `names` (relative, `/`-separated) for `action`: `undefined` if none is taken by
   * another action, else a message naming the file and the action that wrote it. Claims
   * nothing when it refuses.
   */
  claim(names: readonly string[], action: ActionRef): string | undefined {
    for (const name of names) {
      const owner = this.#owners.get(name);
      if (owner !== undefined && owner.actionId !== action.actionId) {
        return `output file ${JSON.stringify(name)} was already written by ${owner.actionId} (line ${owner.position.line}: ${owner.command}) in this actionset; two actions of one actionset must not write the same file`;
      }
    }
    for (const name of names) this.#owners.set(name, action);
    return undefined;
  }
}

/**
 * `prepareInside` that remembers the directories it made, so that outputs that do not land
 * leave no empty directory behind either (one that existed before is never touched).
 */
export class MadeDirectories {
  readonly #made: string[] = [];

  /** The path to write `name` (relative, `/`-separated) at inside `dir`; see `prepareInside`. */
  prepare(dir: string, name: string): string {
    const missing: string[] = [];
    let current = dir;
    for (const segment of name.split('/').slice(0, -1)) {
      current = join(current, segment);
      if (!current.startsWith(dir + sep)) break;
      if (lstatSync(current, { throwIfNoEntry: false }) === undefined) missing.push(current);
    }
    try {
      return prepareInside(dir, name);
    } finally {
      for (const d of missing) {
        if (lstatSync(d, { throwIfNoEntry: false })?.isDirectory()) this.#made.push(d);
      }
    }
  }

  /** Removes the directories it made that are empty, deepest first. */
  removeEmpty(): void {
    for (const d of [...this.#made].reverse()) {
      try {
        rmdirSync(d);
      } catch {
        // Not empty (something else landed there), or gone.
      }
    }
  }
}
