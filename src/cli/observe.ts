/**
 * The flags that say how a run is shown and recorded — `--progress`, `--trace`, `--report` —
 * and the writing of the trace and report files once it ends. The rendering itself lives
 * in src/observe/, where API users find it too.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import type { Argv } from 'yargs';
import { renderReport } from '../observe/report.js';
import type { Timeline } from '../observe/timeline.js';
import { chromeTrace } from '../observe/trace.js';

/** `--progress` values: `auto` is live on a terminal (without NO_COLOR / CI), else plain. */
export const PROGRESS_CHOICES = ['auto', 'always', 'never'] as const;

/** The flags of {@link withObserveOptions}. */
export interface ObserveArgs {
  readonly progress: (typeof PROGRESS_CHOICES)[number];
  readonly trace?: string | undefined;
  readonly report?: string | undefined;
}

/** Adds `--progress`, `--trace` and `--report`. */
export function withObserveOptions<T>(y: Argv<T>): Argv<T & ObserveArgs> {
  return y
    .option('progress', {
      type: 'string',
      choices: PROGRESS_CHOICES,
      default: 'auto',
      describe:
        'live status lines on a terminal (auto), always, or never (plain lines, no escape codes)',
    })
    .option('trace', {
      type: 'string',
      describe: 'write a Chrome trace (JSON) of the run here: open it in Perfetto',
    })
    .option('report', {
      type: 'string',
      describe: 'write a self-contained HTML report (timeline and host tables) here',
    }) as unknown as Argv<T & ObserveArgs>;
}

/**
 * Writes the files `--trace` and `--report` ask for. A file that cannot be written is
 * reported on stderr; it does not change the run's exit status.
 */
export async function writeTimelineFiles(
  args: ObserveArgs,
  timeline: Timeline,
  io: {
    readonly stderr: Writable;
    readonly cwd: string;
    /** Reports a file that could not be written (default: a line on `stderr`). */
    readonly problem?: (event: string, text: string, fields?: Record<string, unknown>) => void;
  },
): Promise<void> {
  const jobs: [string | undefined, () => string][] = [
    [args.trace, () => `${JSON.stringify(chromeTrace(timeline))}\n`],
    [args.report, () => renderReport(timeline)],
  ];
  for (const [given, render] of jobs) {
    if (given === undefined) continue;
    const path = resolve(io.cwd, given);
    try {
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, render());
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      const text = `rake-ts: cannot write ${given}: ${why}`;
      if (io.problem) io.problem('write-failed', text, { path, err });
      else io.stderr.write(`${text}\n`);
    }
  }
}
