/**
 * A run as Chrome trace-event JSON (the "JSON Object Format" of the Trace Event Format
 * document), which Perfetto (ui.perfetto.dev) and `chrome://tracing` open: one process lane
 * per host, one thread per concurrent slot on that host, a complete (`ph: 'X'`) span per
 * action with its phases nested inside it, and a first lane with the actionsets.
 */
import type { RakeEvent } from '../client/events.js';
import { type ActionSpan, assignSlots, type Timeline, timelineOf } from './timeline.js';

/** One entry of `traceEvents`: a complete span or a metadata record. */
export type TraceEvent =
  | {
      readonly name: string;
      readonly cat: 'actionset' | 'action' | 'phase';
      readonly ph: 'X';
      /** Microseconds since the run's first event. */
      readonly ts: number;
      readonly dur: number;
      readonly pid: number;
      readonly tid: number;
      readonly args?: Readonly<Record<string, unknown>>;
    }
  | {
      readonly name: 'process_name' | 'thread_name' | 'process_sort_index' | 'thread_sort_index';
      readonly ph: 'M';
      readonly pid: number;
      readonly tid?: number;
      readonly args: Readonly<Record<string, unknown>>;
    };

/** The whole file. */
export interface ChromeTrace {
  readonly traceEvents: readonly TraceEvent[];
  readonly displayTimeUnit: 'ms';
  /** Run facts shown in the viewer's metadata panel. */
  readonly otherData: Readonly<Record<string, string>>;
}

/** The lane (process) holding the actionsets. */
export const ACTIONSET_PID = 1;
/** The lane name of actions that never reached a host (missing file, no host). */
export const NO_HOST_LANE = '(no host)';

/**
 * Builds the trace of a run from its events (or a timeline built from them).
 *
 * @example
 * const events = await lastValueFrom(run(rakefile).pipe(toArray()));
 * await writeFile('build.trace.json', JSON.stringify(chromeTrace(events)));
 */
export function chromeTrace(events: Iterable<RakeEvent> | Timeline): ChromeTrace {
  const timeline = timelineOf(events);
  const t0 = timeline.start;
  const us = (ms: number) => Math.round((ms - t0) * 1000);
  const out: TraceEvent[] = [];

  out.push(
    { name: 'process_name', ph: 'M', pid: ACTIONSET_PID, args: { name: 'actionsets' } },
    { name: 'process_sort_index', ph: 'M', pid: ACTIONSET_PID, args: { sort_index: 0 } },
  );
  for (const s of timeline.actionsets) {
    out.push({
      name: s.name,
      cat: 'actionset',
      ph: 'X',
      ts: us(s.start),
      dur: us(s.end) - us(s.start),
      pid: ACTIONSET_PID,
      tid: 0,
      args: {
        ordinal: s.ordinal,
        actions: s.actions,
        succeeded: s.succeeded,
        failed: s.failed,
        cancelled: s.cancelled,
      },
    });
  }

  const lanes = [...timeline.hosts];
  if (timeline.actions.some((a) => a.host === undefined)) lanes.push(NO_HOST_LANE);
  lanes.forEach((lane, i) => {
    const pid = ACTIONSET_PID + 1 + i;
    const mine = timeline.actions.filter((a) => (a.host ?? NO_HOST_LANE) === lane);
    const slots = assignSlots(mine);
    out.push(
      { name: 'process_name', ph: 'M', pid, args: { name: lane } },
      { name: 'process_sort_index', ph: 'M', pid, args: { sort_index: i + 1 } },
    );
    const used = Math.max(-1, ...slots.values()) + 1;
    for (let tid = 0; tid < used; tid++) {
      out.push({ name: 'thread_name', ph: 'M', pid, tid, args: { name: `slot ${tid + 1}` } });
    }
    for (const a of mine) out.push(...actionEvents(a, pid, slots.get(a) ?? 0, us));
  });

  const summary = timeline.summary;
  return {
    traceEvents: out,
    displayTimeUnit: 'ms',
    otherData: {
      generator: 'rake-ts',
      startedAt: new Date(t0).toISOString(),
      ...(timeline.interrupted === undefined ? {} : { interrupted: timeline.interrupted }),
      ...(summary === undefined
        ? {}
        : {
            actions: String(summary.actions),
            succeeded: String(summary.succeeded),
            failed: String(summary.failed),
            exitStatus: String(summary.exitStatus),
          }),
    },
  };
}

function actionEvents(
  a: ActionSpan,
  pid: number,
  tid: number,
  us: (ms: number) => number,
): TraceEvent[] {
  const events: TraceEvent[] = [
    {
      name: `${a.action.actionId} ${a.action.command}`,
      cat: 'action',
      ph: 'X',
      ts: us(a.start),
      dur: us(a.end) - us(a.start),
      pid,
      tid,
      args: {
        actionId: a.action.actionId,
        actionset: a.action.actionset,
        line: a.action.position.line,
        command: a.action.command,
        outcome: a.outcome,
        ...(a.failure === undefined ? {} : { failure: a.failure }),
        ...(a.exitStatus === undefined ? {} : { exitStatus: a.exitStatus }),
        ...(a.interrupted === true ? { interrupted: true } : {}),
        attempts: a.attempts,
        uploadBytes: a.uploadBytes,
        downloadBytes: a.downloadBytes,
        ...(a.farm === undefined ? {} : { farm: a.farm }),
        ...(a.cached === true ? { cached: true } : {}),
      },
    },
  ];
  for (const p of a.phases) {
    events.push({
      name: p.label ?? p.name,
      cat: 'phase',
      ph: 'X',
      ts: us(p.start),
      dur: us(p.end) - us(p.start),
      pid,
      tid,
    });
  }
  return events;
}
