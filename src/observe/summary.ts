/**
 * The one line a run ends with, and the per-host figures the HTML report tabulates. Both
 * are computed from a {@link Timeline}, so they agree with the trace and the report.
 */
import type { RunSummary } from '../client/events.js';
import type { Timeline } from './timeline.js';

/** What one host did in a run. */
export interface HostStats {
  readonly host: string;
  readonly actions: number;
  readonly failed: number;
  /**
   * Milliseconds during which at least one of this run's commands ran on this host: the
   * union of their `run` phases, so time queued for a job slot is not counted where the
   * host says it (extension `queue`; a base-protocol host's `run` includes its queueing).
   */
  readonly busyMs: number;
  /** `busyMs` over the run's wall time, 0..1. */
  readonly busyShare: number;
  readonly uploadBytes: number;
  readonly downloadBytes: number;
  /** Mean of the actions' `run` phase (command time plus round trip), in ms. */
  readonly meanRunMs: number;
}

/** Totals over a run, beyond the engine's {@link RunSummary}. */
export interface RunTotals {
  readonly actions: number;
  readonly hosts: readonly string[];
  readonly wallMs: number;
  readonly uploadBytes: number;
  readonly downloadBytes: number;
}

/** Per-host figures, in the order the hosts were first chosen. */
export function hostStats(timeline: Timeline): HostStats[] {
  const wall = Math.max(timeline.end - timeline.start, 0);
  return timeline.hosts.map((host) => {
    // An action the local cache answered ran nowhere (as the summary's perHost).
    const mine = timeline.actions.filter((a) => a.host === host && a.cached !== true);
    const busyMs = unionLength(
      mine.flatMap((a) =>
        a.phases.filter((p) => p.name === 'run').map((p) => [p.start, p.end] as const),
      ),
    );
    const runs = mine.filter((a) => a.outcome !== 'cancelled').map((a) => a.timings.run);
    return {
      host,
      actions: mine.length,
      failed: mine.filter((a) => a.outcome === 'failed').length,
      busyMs,
      busyShare: wall > 0 ? Math.min(busyMs / wall, 1) : 0,
      uploadBytes: sum(mine.map((a) => a.uploadBytes)),
      downloadBytes: sum(mine.map((a) => a.downloadBytes)),
      meanRunMs: runs.length > 0 ? sum(runs) / runs.length : 0,
    };
  });
}

/** Totals for the summary line. */
export function runTotals(timeline: Timeline): RunTotals {
  return {
    actions: timeline.actions.length,
    hosts: timeline.hosts,
    wallMs: timeline.summary?.ms ?? Math.max(timeline.end - timeline.start, 0),
    uploadBytes: sum(timeline.actions.map((a) => a.uploadBytes)),
    downloadBytes: sum(timeline.actions.map((a) => a.downloadBytes)),
  };
}

/**
 * `rake-ts: ok: 6/6 actions succeeded in 1.24 s on 2 hosts (a:6238=3 b:6238=3), 12.0 KiB up,
 * 3.1 KiB down` — the verdict, the counts that are not zero, the wall time, the hosts used
 * and the bytes moved (files sent and received).
 */
export function formatSummaryLine(
  s: RunSummary,
  totals?: Pick<RunTotals, 'uploadBytes' | 'downloadBytes'>,
): string {
  const parts = [`${s.succeeded}/${s.actions} actions succeeded`];
  if ((s.cached ?? 0) > 0) parts.push(`${s.cached} from the cache`);
  if (s.failed > 0) parts.push(`${s.failed} failed`);
  if (s.cancelled > 0) parts.push(`${s.cancelled} cancelled`);
  if (s.skipped > 0) parts.push(`${s.skipped} not started`);
  if (s.retries > 0) parts.push(`${s.retries} retried`);
  if (s.fallbacks > 0) parts.push(`${s.fallbacks} ran locally as a fallback`);
  const verdict = s.exitStatus === 0 ? 'ok' : 'FAILED';
  const hosts = Object.entries(s.perHost);
  const where =
    hosts.length === 0
      ? ''
      : ` on ${hosts.length} host${hosts.length === 1 ? '' : 's'} (${hosts.map(([h, n]) => `${h}=${n}`).join(' ')})`;
  const moved =
    totals === undefined
      ? ''
      : `, ${formatBytes(totals.uploadBytes)} up, ${formatBytes(totals.downloadBytes)} down`;
  return `rake-ts: ${verdict}: ${parts.join(', ')} in ${formatSeconds(s.ms)}${where}${moved}\n`;
}

/** `1 action`, `2 actions`: a count and its noun, in the plural when it is not one. */
export function plural(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`;
}

/** `1.24 s`. */
export function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

/** `512 B`, `12.0 KiB`, `3.4 MiB`. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

function sum(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

/** Total length covered by a set of intervals (overlaps counted once). */
function unionLength(intervals: readonly (readonly [number, number])[]): number {
  const sorted = [...intervals].sort((a, b) => a[0] - b[0]);
  let total = 0;
  let curStart = Number.NEGATIVE_INFINITY;
  let curEnd = Number.NEGATIVE_INFINITY;
  for (const [s, e] of sorted) {
    if (s > curEnd) {
      if (curEnd > curStart) total += curEnd - curStart;
      curStart = s;
      curEnd = e;
    } else {
      curEnd = Math.max(curEnd, e);
    }
  }
  if (curEnd > curStart) total += curEnd - curStart;
  return total;
}
