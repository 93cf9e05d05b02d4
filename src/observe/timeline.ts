/**
 * Rebuilds, from a run's events, when each action ran, where, and how long each phase
 * took. The trace writer, the HTML report and the summary all draw from this one model, so
 * they never disagree about a span.
 */
import type {
  ActionRef,
  FailureReason,
  FarmTimings,
  PhaseTimings,
  RakeEvent,
  RunSummary,
} from '../client/events.js';
import { unreachable } from '../util/unreachable.js';

/** The phases of an action, in the order they happen (see {@link PhaseTimings}). */
export const PHASES = ['poll', 'connect', 'upload', 'queued', 'run', 'download'] as const;

/** One phase's name. */
export type PhaseName = (typeof PHASES)[number];

/** One phase of one action, as absolute times (ms since the epoch, as events carry). */
export interface PhaseSpan {
  readonly name: PhaseName;
  readonly start: number;
  readonly end: number;
  /**
   * How to show it, when not by its name: a `run` on a host that cannot say when a job
   * starts (base protocol) holds its queueing too, and says so.
   */
  readonly label?: string;
}

/** The label of a `run` span that includes time queued on the host (see {@link PhaseSpan}). */
export const RUN_WITH_QUEUE = 'queued + run (base-protocol host: cannot tell them apart)';

/** How an action ended. */
export type ActionOutcome = 'succeeded' | 'failed' | 'cancelled';

/**
 * One action from start to end: where it ran, its phases, and the bytes it moved. The
 * phases are those of its last attempt (a retried action's earlier attempts lie between
 * its poll and that attempt).
 */
export interface ActionSpan {
  readonly action: ActionRef;
  /** The host of the last attempt; absent when the action never reached one. */
  readonly host: string | undefined;
  readonly start: number;
  readonly end: number;
  readonly outcome: ActionOutcome;
  /** Why it failed (`outcome: 'failed'` only). */
  readonly failure?: FailureReason;
  readonly exitStatus?: number;
  readonly message?: string;
  /** What the command wrote to stderr (a failure's, or a success's warnings), when any. */
  readonly stderr?: string;
  /** The run was interrupted while this action ran (`outcome: 'cancelled'`). */
  readonly interrupted?: boolean;
  readonly attempts: number;
  /** Non-empty phases only, each inside `[start, end]`. */
  readonly phases: readonly PhaseSpan[];
  readonly timings: PhaseTimings;
  readonly uploadBytes: number;
  readonly uploadFiles: number;
  readonly downloadBytes: number;
  readonly downloadFiles: number;
  /** With `--executor`: the farm's own timings of the action (a success's). */
  readonly farm?: FarmTimings;
  /** With `--cache`: answered from the local action cache, nothing ran (`host` would have run it). */
  readonly cached?: true;
  /** With `cached`: the host's stored results answered (the shared action cache), not ours. */
  readonly cachedByHost?: true;
}

/** One actionset from its start to its end (or to the last event seen). */
export interface ActionsetSpan {
  readonly name: string;
  /** 1-based, in the order the actionsets started. */
  readonly ordinal: number;
  readonly actions: number;
  readonly start: number;
  readonly end: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly cancelled: number;
}

/** What a run looked like, for drawing. Times are ms since the epoch. */
export interface Timeline {
  /** The first event's time (0 when there were none). */
  readonly start: number;
  /** The last event's time. */
  readonly end: number;
  readonly actionsets: readonly ActionsetSpan[];
  /** Finished actions (succeeded, failed or cancelled), in the order they ended. */
  readonly actions: readonly ActionSpan[];
  /** Every host an action ran on, in the order they were first chosen. */
  readonly hosts: readonly string[];
  /** The `done` event's summary, when the run got that far. */
  readonly summary: RunSummary | undefined;
  /** The signal that interrupted the run, when one did (then there is no summary). */
  readonly interrupted?: string;
}

interface Pending {
  readonly action: ActionRef;
  /** Attempts begun so far (host-chosen events). */
  attempts: number;
  firstSeen: number;
  host: string | undefined;
  uploadBytes: number;
  uploadFiles: number;
}

/**
 * Accumulates events one at a time (for consumers that watch a run live) and hands out the
 * {@link Timeline} so far at any moment.
 */
export class TimelineBuilder {
  #start: number | undefined;
  #end = 0;
  readonly #pending = new Map<string, Pending>();
  readonly #actions: ActionSpan[] = [];
  readonly #hosts: string[] = [];
  readonly #actionsets: ActionsetSpan[] = [];
  #open: { name: string; actions: number; start: number; ordinal: number } | undefined;
  #summary: RunSummary | undefined;
  #interrupted: string | undefined;

  /**
   * The run was interrupted at `at` (SIGINT, SIGTERM): the actions still running end there,
   * cancelled, and so does the open actionset; later events are ignored.
   */
  interrupt(signal: string, at: number): void {
    if (this.#interrupted !== undefined) return;
    this.#start ??= at;
    this.#end = Math.max(this.#end, at);
    for (const [id, p] of [...this.#pending]) {
      this.#finish(p.action, this.#end, {
        outcome: 'cancelled',
        host: p.host,
        attempts: p.attempts,
        message: `interrupted (${signal})`,
        interrupted: true,
      });
      this.#pending.delete(id);
    }
    this.#interrupted = signal;
  }

  add(e: RakeEvent): void {
    if (this.#interrupted !== undefined) return;
    this.#start ??= e.time;
    this.#end = Math.max(this.#end, e.time);
    switch (e.type) {
      case 'embedded-server-started':
        return;
      case 'actionset-started':
        this.#open = {
          name: e.actionset,
          actions: e.actions,
          start: e.time,
          ordinal: this.#actionsets.length + 1,
        };
        return;
      case 'cost-polled':
      case 'output':
      case 'action-retried':
      case 'fallback-local':
      case 'action-queued':
      case 'action-started':
        this.#touch(e.action, e.time);
        return;
      case 'host-chosen': {
        const p = this.#touch(e.action, e.time);
        p.host = e.host;
        p.attempts = Math.max(p.attempts, e.attempt);
        this.#sawHost(e.host);
        return;
      }
      case 'upload-done': {
        const p = this.#touch(e.action, e.time);
        p.uploadBytes += e.bytes;
        p.uploadFiles += e.files;
        return;
      }
      case 'action-succeeded':
        this.#finish(e.action, e.time, {
          outcome: 'succeeded',
          host: e.host,
          start: e.time - e.ms,
          attempts: e.attempts,
          timings: e.phases,
          downloadBytes: e.downloadBytes,
          downloadFiles: e.files.length,
          ...(e.stderr === undefined || e.stderr === '' ? {} : { stderr: e.stderr }),
          ...(e.farm === undefined ? {} : { farm: e.farm }),
          ...(e.cached === undefined ? {} : { cached: true }),
          ...(e.cached?.server === true ? { cachedByHost: true } : {}),
        });
        return;
      case 'action-failed':
        this.#finish(e.action, e.time, {
          outcome: 'failed',
          host: e.host,
          start: e.time - e.ms,
          attempts: e.attempts,
          timings: e.phases,
          failure: e.reason,
          message: e.message,
          ...(e.exitStatus === undefined ? {} : { exitStatus: e.exitStatus }),
          ...(e.stderr === '' ? {} : { stderr: e.stderr }),
        });
        return;
      case 'action-cancelled':
        this.#finish(e.action, e.time, {
          outcome: 'cancelled',
          host: e.host,
          attempts: 0,
        });
        return;
      case 'actionset-done': {
        const open = this.#open;
        this.#actionsets.push({
          name: e.actionset,
          ordinal: open?.ordinal ?? this.#actionsets.length + 1,
          actions: open?.actions ?? 0,
          start: open?.name === e.actionset ? open.start : e.time - e.ms,
          end: e.time,
          succeeded: e.succeeded,
          failed: e.failed,
          cancelled: e.cancelled,
        });
        this.#open = undefined;
        return;
      }
      case 'done':
        this.#summary = e.summary;
        return;
      default:
        unreachable(e, 'event');
    }
  }

  /** The timeline of the events added so far. */
  timeline(): Timeline {
    const open = this.#open;
    const actionsets =
      open === undefined
        ? [...this.#actionsets]
        : [
            ...this.#actionsets,
            {
              name: open.name,
              ordinal: open.ordinal,
              actions: open.actions,
              start: open.start,
              end: this.#end,
              ...this.#counts(open.name),
            },
          ];
    return {
      start: this.#start ?? 0,
      end: this.#end,
      actionsets,
      actions: [...this.#actions],
      hosts: [...this.#hosts],
      summary: this.#summary,
      ...(this.#interrupted === undefined ? {} : { interrupted: this.#interrupted }),
    };
  }

  #counts(actionset: string) {
    const mine = this.#actions.filter((a) => a.action.actionset === actionset);
    const n = (o: ActionOutcome) => mine.filter((a) => a.outcome === o).length;
    return { succeeded: n('succeeded'), failed: n('failed'), cancelled: n('cancelled') };
  }

  #touch(action: ActionRef, time: number): Pending {
    let p = this.#pending.get(action.actionId);
    if (p === undefined) {
      p = { action, attempts: 0, firstSeen: time, host: undefined, uploadBytes: 0, uploadFiles: 0 };
      this.#pending.set(action.actionId, p);
    }
    return p;
  }

  #sawHost(host: string): void {
    if (!this.#hosts.includes(host)) this.#hosts.push(host);
  }

  #finish(
    action: ActionRef,
    end: number,
    f: {
      outcome: ActionOutcome;
      host: string | undefined;
      start?: number;
      attempts: number;
      timings?: PhaseTimings;
      failure?: FailureReason;
      message?: string;
      exitStatus?: number;
      downloadBytes?: number;
      downloadFiles?: number;
      stderr?: string;
      interrupted?: boolean;
      farm?: FarmTimings;
      cached?: boolean;
      cachedByHost?: boolean;
    },
  ): void {
    const p = this.#pending.get(action.actionId);
    this.#pending.delete(action.actionId);
    const start = Math.min(f.start ?? p?.firstSeen ?? end, end);
    const host = f.host ?? p?.host;
    if (host !== undefined) this.#sawHost(host);
    const timings = f.timings ?? { poll: 0, connect: 0, upload: 0, run: 0, download: 0 };
    this.#actions.push({
      action,
      host,
      start,
      end,
      outcome: f.outcome,
      ...(f.failure === undefined ? {} : { failure: f.failure }),
      ...(f.exitStatus === undefined ? {} : { exitStatus: f.exitStatus }),
      ...(f.message === undefined ? {} : { message: f.message }),
      ...(f.stderr === undefined ? {} : { stderr: f.stderr }),
      ...(f.interrupted === true ? { interrupted: true } : {}),
      attempts: f.attempts,
      phases: phaseSpans(start, end, timings),
      timings,
      uploadBytes: p?.uploadBytes ?? 0,
      uploadFiles: p?.uploadFiles ?? 0,
      downloadBytes: f.downloadBytes ?? 0,
      downloadFiles: f.downloadFiles ?? 0,
      ...(f.farm === undefined ? {} : { farm: f.farm }),
      ...(f.cached === true ? { cached: true as const } : {}),
      ...(f.cachedByHost === true ? { cachedByHost: true as const } : {}),
    });
  }
}

/** The timeline of a whole list of events. */
export function buildTimeline(events: Iterable<RakeEvent>): Timeline {
  const builder = new TimelineBuilder();
  for (const e of events) builder.add(e);
  return builder.timeline();
}

/** A timeline as given, or the timeline of the events given. */
export function timelineOf(x: Iterable<RakeEvent> | Timeline): Timeline {
  return Symbol.iterator in x ? buildTimeline(x) : x;
}

/**
 * Lays the phases of an action between its start and end: the poll from the start, the
 * attempt's phases back from the end (a retried action's earlier attempts fall in between).
 * Every span is clamped inside `[start, end]`, so a consumer can rely on the nesting.
 */
export function phaseSpans(start: number, end: number, t: PhaseTimings): PhaseSpan[] {
  const clamp = (x: number) => Math.min(end, Math.max(start, x));
  const spans: PhaseSpan[] = [];
  const poll = { name: 'poll' as const, start, end: clamp(start + t.poll) };
  let cursor = end;
  const attempt: PhaseSpan[] = [];
  for (const name of ['download', 'run', 'queued', 'upload', 'connect'] as const) {
    const ms = t[name];
    if (ms === undefined) continue;
    const from = Math.max(clamp(cursor - ms), poll.end);
    // Without `queued`, the host could not say when the job started: `run` holds both.
    const label = name === 'run' && t.queued === undefined ? { label: RUN_WITH_QUEUE } : {};
    attempt.unshift({ name, start: from, end: cursor, ...label });
    cursor = from;
  }
  spans.push(poll, ...attempt);
  return spans.filter((s) => s.end > s.start);
}

/**
 * Assigns each span the lowest slot (0, 1, ...) free at its start, so spans sharing a slot
 * never overlap: one lane per slot draws concurrent actions on one host side by side.
 */
export function assignSlots<T extends { readonly start: number; readonly end: number }>(
  spans: readonly T[],
): Map<T, number> {
  const slots = new Map<T, number>();
  const freeAt: number[] = [];
  const order = [...spans].sort((a, b) => a.start - b.start || a.end - b.end);
  for (const s of order) {
    let slot = freeAt.findIndex((t) => t <= s.start);
    if (slot === -1) slot = freeAt.length;
    freeAt[slot] = Math.max(s.end, s.start + 1e-9);
    slots.set(s, slot);
  }
  return slots;
}
