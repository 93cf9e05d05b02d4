/**
 * Reads back the Chrome trace `rake-ts --trace FILE` writes (src/observe/trace.ts): one
 * span per action with its phases nested inside, in that order. The overhead benchmark
 * takes its per-phase figures from here, as a user reading the trace in Perfetto would.
 */
import { readFileSync } from 'node:fs';
import { PHASES, type PhaseName } from '../../../src/observe/timeline.js';
import type { ChromeTrace } from '../../../src/observe/trace.js';

/** One action of a trace: its wall time and the milliseconds of each phase. */
export interface TracedAction {
  readonly name: string;
  /** Index of the host lane (trace `pid`). */
  readonly lane: number;
  readonly startMs: number;
  readonly wallMs: number;
  readonly phases: Readonly<Record<PhaseName, number>>;
}

/** A run as its trace shows it. */
export interface TracedRun {
  readonly actions: readonly TracedAction[];
  /** From the first event to the last, ms: the run as the client's event stream saw it. */
  readonly spanMs: number;
}

export function readTrace(path: string): TracedRun {
  const trace = JSON.parse(readFileSync(path, 'utf8')) as ChromeTrace;
  const actions: {
    name: string;
    lane: number;
    startMs: number;
    wallMs: number;
    phases: Record<PhaseName, number>;
  }[] = [];
  let first = Number.POSITIVE_INFINITY;
  let last = 0;
  for (const e of trace.traceEvents) {
    if (e.ph !== 'X') continue;
    first = Math.min(first, e.ts);
    last = Math.max(last, e.ts + e.dur);
    if (e.cat === 'action') {
      const phases = Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<PhaseName, number>;
      actions.push({
        name: e.name,
        lane: e.pid,
        startMs: e.ts / 1000,
        wallMs: e.dur / 1000,
        phases,
      });
    } else if (e.cat === 'phase') {
      const owner = actions.at(-1);
      if (owner !== undefined && (PHASES as readonly string[]).includes(e.name)) {
        owner.phases[e.name as PhaseName] += e.dur / 1000;
      }
    }
  }
  return { actions, spanMs: actions.length === 0 ? 0 : (last - first) / 1000 };
}
