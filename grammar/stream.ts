/**
 * The parsed Rakefile as a stream: `Observable<ActionsetStream>`, an actionset and the
 * Observable of its actions, in file order. That is the shape a run consumes (actionsets one
 * after another, `concatMap`; the actions of each in parallel, `mergeMap`), so a caller can
 * build its pipeline on the file directly. `parseRakefile` still returns the whole model:
 * a Rakefile with any error yields no actionset at all, so nothing starts on half a file.
 */
import { defer, from, map, mergeMap, type Observable, throwError } from 'rxjs';
import type { Diagnostic } from './diagnostics.js';
import type { Action, Actionset, Rakefile } from './model.js';
import { type ParseOptions, readRakefile } from './parse.js';

/** One actionset, and its actions as an Observable (they are meant to run in parallel). */
export interface ActionsetStream {
  readonly actionset: Actionset;
  readonly actions: Observable<Action>;
}

/**
 * A Rakefile that did not parse, as the error of `readActionsets`: every diagnostic, and the
 * text they point into (for `formatDiagnostics`).
 */
export class RakefileError extends Error {
  override readonly name = 'RakefileError';
  readonly diagnostics: readonly Diagnostic[];
  readonly source: string;

  constructor(diagnostics: readonly Diagnostic[], source: string) {
    const first = diagnostics[0];
    const where = first
      ? `${first.position.file}:${first.position.line}:${first.position.column}`
      : '';
    super(
      `${where}: ${first?.message ?? 'invalid Rakefile'}${diagnostics.length > 1 ? ` (and ${diagnostics.length - 1} more)` : ''}`,
    );
    this.diagnostics = diagnostics;
    this.source = source;
  }
}

/** The actionsets of a parsed Rakefile, in file order, each with its actions as a stream. */
export function actionsetStreams(rakefile: Rakefile): Observable<ActionsetStream> {
  return from(rakefile.actionsets).pipe(
    map((actionset) => ({ actionset, actions: from(actionset.actions) })),
  );
}

/**
 * Reads and parses the Rakefile at `path` when subscribed, and emits its actionsets as
 * streams; a file with errors (or that cannot be read) errors with a `RakefileError` holding
 * every diagnostic, before any actionset is emitted.
 */
export function readActionsets(
  path: string,
  options: ParseOptions = {},
): Observable<ActionsetStream> {
  return defer(() => readRakefile(path, options)).pipe(
    mergeMap((read) =>
      read.ok
        ? actionsetStreams(read.rakefile)
        : throwError(() => new RakefileError(read.diagnostics, read.source)),
    ),
  );
}
