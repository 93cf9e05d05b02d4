/**
 * A run as one self-contained HTML page: an SVG timeline (a row per host, a bar per action,
 * failed ones marked) and tables per host. Inline CSS and SVG only — no scripts, fonts or
 * URLs — so it opens offline, from a CI artifact or an e-mail attachment.
 */
import type { RakeEvent } from '../client/events.js';
import { formatBytes, formatSeconds, type HostStats, hostStats, plural } from './summary.js';
import { type ActionSpan, assignSlots, type Timeline, timelineOf } from './timeline.js';
import { NO_HOST_LANE } from './trace.js';

/** Options of {@link renderReport}. */
export interface ReportOptions {
  /** The page title (default: the Rakefile's name, from the first action). */
  readonly title?: string;
}

const WIDTH = 1100;
const LABEL = 190;
const RIGHT = 20;
const TOP = 34;
const LANE = 16;
const GAP = 3;
const ROW_PAD = 8;

/**
 * Renders the report page for a run.
 *
 * @example
 * const events = await lastValueFrom(run(rakefile).pipe(toArray()));
 * await writeFile('build.html', renderReport(events, { title: 'nightly build' }));
 */
export function renderReport(
  events: Iterable<RakeEvent> | Timeline,
  options: ReportOptions = {},
): string {
  const timeline = timelineOf(events);
  const first = timeline.actions[0]?.action.position.file;
  const title = options.title ?? `rake-ts: ${first ?? 'run'}`;
  const stats = hostStats(timeline);
  const summary = timeline.summary;
  const verdict =
    timeline.interrupted !== undefined
      ? `interrupted (${timeline.interrupted})`
      : summary === undefined
        ? 'incomplete run'
        : summary.exitStatus === 0
          ? 'ok'
          : `FAILED (exit status ${summary.exitStatus})`;
  const wall = summary?.ms ?? timeline.end - timeline.start;
  const count = (o: ActionSpan['outcome']) =>
    timeline.actions.filter((a) => a.outcome === o).length;
  const interruptedCount = timeline.actions.filter((a) => a.interrupted === true).length;
  const facts = [
    `<b class="${summary?.exitStatus === 0 ? 'ok' : 'bad'}">${esc(verdict)}</b>`,
    plural(summary?.actions ?? timeline.actions.length, 'action'),
    summary === undefined
      ? `${count('succeeded')} succeeded, ${count('failed')} failed, ${count('cancelled')} cancelled${interruptedCount > 0 ? ` (${interruptedCount} by the interrupt)` : ''}`
      : `${summary.succeeded} succeeded, ${summary.failed} failed, ${summary.cancelled} cancelled, ${summary.skipped} not started`,
    plural(timeline.actionsets.length, 'actionset'),
    plural(stats.length, 'host'),
    `wall time ${formatSeconds(wall)}`,
    timeline.start > 0 ? `started ${new Date(timeline.start).toISOString()}` : '',
  ].filter((s) => s !== '');

  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="rake-ts">
<title>${esc(title)}</title>
<style>${CSS}</style>
</head>
<body>
<h1>${esc(title)}</h1>
<p class="facts">${facts.join(' · ')}</p>
<h2>Timeline</h2>
${timelineSvg(timeline)}
<p class="legend"><span class="swatch ok"></span> succeeded <span class="swatch failed"></span> failed <span class="swatch cancelled"></span> cancelled; hover a bar for its phases. Rows are hosts; a host running several actions at once gets one lane per slot.</p>
<h2>Hosts</h2>
${hostTable(stats)}
${stats.map((s) => hostDetails(s, timeline)).join('\n')}
${noHostDetails(timeline)}
${failureDetails(timeline)}
</body>
</html>
`;
}

function timelineSvg(t: Timeline): string {
  const lanes = [...t.hosts];
  if (t.actions.some((a) => a.host === undefined)) lanes.push(NO_HOST_LANE);
  const span = Math.max(t.end - t.start, 1);
  const plot = WIDTH - LABEL - RIGHT;
  const x = (ms: number) => LABEL + ((ms - t.start) / span) * plot;

  const rows: string[] = [];
  let y = TOP;
  lanes.forEach((lane, i) => {
    const mine = t.actions.filter((a) => (a.host ?? NO_HOST_LANE) === lane);
    const slots = assignSlots(mine);
    const n = Math.max(1, Math.max(-1, ...slots.values()) + 1);
    const h = n * (LANE + GAP) - GAP + 2 * ROW_PAD;
    rows.push(
      `<g class="row" data-host="${esc(lane)}">`,
      `<rect class="row-bg${i % 2 === 1 ? ' odd' : ''}" x="0" y="${y}" width="${WIDTH}" height="${h}"/>`,
      `<text class="host" x="8" y="${y + h / 2 + 4}">${esc(clip(lane, 26))}</text>`,
    );
    for (const a of mine) {
      const slot = slots.get(a) ?? 0;
      const bx = x(a.start);
      const bw = Math.max(x(a.end) - bx, 2);
      const by = y + ROW_PAD + slot * (LANE + GAP);
      const cls = a.outcome === 'succeeded' ? 'bar' : `bar ${a.outcome}`;
      rows.push(
        `<rect class="${cls}" data-action="${esc(a.action.actionId)}" x="${n2(bx)}" y="${by}" width="${n2(bw)}" height="${LANE}" rx="2"><title>${esc(tooltip(a, t.start))}</title></rect>`,
      );
      if (a.outcome === 'failed' && bw >= 10) {
        rows.push(`<text class="mark" x="${n2(bx + bw / 2)}" y="${by + LANE - 4}">✕</text>`);
      }
    }
    rows.push('</g>');
    y += h;
  });

  const height = y + 8;
  const bands = t.actionsets.map((s, i) => {
    const bx = x(s.start);
    const bw = Math.max(x(s.end) - bx, 1);
    return `<g class="actionset"><rect class="band${i % 2 ? ' odd' : ''}" x="${n2(bx)}" y="${TOP - 14}" width="${n2(bw)}" height="${height - TOP + 6}"/><text x="${n2(bx + 3)}" y="${TOP - 4}">${esc(clip(s.name, Math.max(3, Math.floor(bw / 7))))}</text><title>${esc(`${s.ordinal}. ${s.name}: ${s.actions} actions, ${formatSeconds(s.end - s.start)}`)}</title></g>`;
  });

  const ticks: string[] = [];
  const step = niceStep(span / 8);
  for (let ms = 0; ms <= span + 1e-6; ms += step) {
    const tx = x(t.start + ms);
    ticks.push(
      `<line class="tick" x1="${n2(tx)}" y1="${TOP - 14}" x2="${n2(tx)}" y2="${height - 8}"/>`,
      `<text class="tick" x="${n2(tx)}" y="${height + 6}">${formatTick(ms, step)}</text>`,
    );
  }

  return `<svg class="timeline" viewBox="0 0 ${WIDTH} ${height + 12}" width="${WIDTH}" height="${height + 12}" role="img" aria-label="timeline: a row per host, a bar per action">
${bands.join('\n')}
${rows.join('\n')}
${ticks.join('\n')}
</svg>`;
}

function hostTable(stats: readonly HostStats[]): string {
  if (stats.length === 0) return '<p>No action reached a host.</p>';
  const rows = stats.map(
    (s) =>
      `<tr><td><a href="#host-${anchor(s.host)}">${esc(s.host)}</a></td><td>${s.actions}</td><td>${s.failed}</td><td>${(s.busyShare * 100).toFixed(1)} %</td><td>${formatBytes(s.uploadBytes)}</td><td>${formatBytes(s.downloadBytes)}</td><td>${formatSeconds(s.meanRunMs)}</td></tr>`,
  );
  return `<table class="hosts">
<thead><tr><th>host</th><th>actions</th><th>failed</th><th>busy</th><th>bytes up</th><th>bytes down</th><th>mean run time</th></tr></thead>
<tbody>
${rows.join('\n')}
</tbody>
</table>`;
}

function hostDetails(s: HostStats, t: Timeline): string {
  const mine = t.actions.filter((a) => a.host === s.host);
  return `<section class="host" id="host-${anchor(s.host)}">
<h3>${esc(s.host)}</h3>
<p>${s.actions} actions (${s.failed} failed), busy ${(s.busyShare * 100).toFixed(1)} % of the run, ${formatBytes(s.uploadBytes)} up, ${formatBytes(s.downloadBytes)} down, mean run time ${formatSeconds(s.meanRunMs)}.</p>
${actionTable(mine, t.start)}
</section>`;
}

function noHostDetails(t: Timeline): string {
  const none = t.actions.filter((a) => a.host === undefined);
  if (none.length === 0) return '';
  return `<section class="host" id="host-none">
<h3>${NO_HOST_LANE}</h3>
<p>Actions that never reached a host.</p>
${actionTable(none, t.start)}
</section>`;
}

/** Each failed action with its message and the stderr its command wrote. */
function failureDetails(t: Timeline): string {
  const failed = t.actions.filter((a) => a.outcome === 'failed');
  if (failed.length === 0) return '';
  const items = failed.map(
    (a) => `<section class="failure" id="failed-${anchor(a.action.actionId)}">
<h3>${esc(a.action.actionId)} (line ${a.action.position.line}${a.host === undefined ? '' : ` on ${esc(a.host)}`}): <code>${esc(a.action.command)}</code></h3>
<p>${esc(a.message ?? outcomeText(a))}</p>
${a.stderr === undefined ? '<p class="quiet">It wrote nothing to stderr.</p>' : `<pre class="stderr">${esc(a.stderr)}</pre>`}
</section>`,
  );
  return `<h2>Failures</h2>\n${items.join('\n')}`;
}

function actionTable(actions: readonly ActionSpan[], t0: number): string {
  const rows = actions.map(
    (a) =>
      `<tr class="${a.outcome}"><td>${esc(a.action.actionId)}</td><td>${a.action.position.line}</td><td><code>${esc(a.action.command)}</code></td><td>${esc(outcomeText(a))}</td><td>${formatSeconds(a.start - t0)}</td><td>${formatSeconds(a.end - a.start)}</td><td>${formatSeconds(a.timings.run)}</td><td>${formatBytes(a.uploadBytes)}</td><td>${formatBytes(a.downloadBytes)}</td></tr>`,
  );
  return `<table class="actions">
<thead><tr><th>action</th><th>line</th><th>command</th><th>outcome</th><th>start</th><th>time</th><th>run</th><th>up</th><th>down</th></tr></thead>
<tbody>
${rows.join('\n')}
</tbody>
</table>`;
}

function outcomeText(a: ActionSpan): string {
  if (a.interrupted === true) return 'cancelled by the interrupt';
  if (a.outcome !== 'failed') return a.outcome;
  const status = a.exitStatus === undefined ? '' : ` (exit status ${a.exitStatus})`;
  return `failed: ${a.failure ?? 'unknown'}${status}`;
}

function tooltip(a: ActionSpan, t0: number): string {
  const lines = [
    `${a.action.actionId} (line ${a.action.position.line}): ${a.action.command}`,
    `${outcomeText(a)}${a.host === undefined ? '' : ` on ${a.host}`}, attempts ${a.attempts}`,
    `${formatSeconds(a.start - t0)} → ${formatSeconds(a.end - t0)} (${formatSeconds(a.end - a.start)})`,
    ...a.phases.map((p) => `  ${p.label ?? p.name}: ${formatSeconds(p.end - p.start)}`),
  ];
  if (a.uploadBytes > 0 || a.downloadBytes > 0) {
    lines.push(`${formatBytes(a.uploadBytes)} up, ${formatBytes(a.downloadBytes)} down`);
  }
  if (a.farm !== undefined) {
    const f = a.farm;
    lines.push(
      f.cached
        ? `farm ${f.worker}: from its ActionCache`
        : `farm ${f.worker}: queued ${formatSeconds(f.queuedMs)}, inputs ${formatSeconds(f.inputFetchMs)}, ran ${formatSeconds(f.executionMs)}, outputs ${formatSeconds(f.outputUploadMs)}`,
    );
  }
  if (a.cached === true) {
    lines.push(
      a.cachedByHost === true
        ? 'from the results its host stored of an earlier run (--cache, shared action cache): nothing ran'
        : 'from the local action cache (--cache): nothing ran',
    );
  }
  if (a.message !== undefined) lines.push(a.message);
  return lines.join('\n');
}

/** 1, 2 or 5 times a power of ten, at least `raw` ms. */
function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function formatTick(ms: number, step: number): string {
  const digits = step >= 1000 ? 0 : step >= 100 ? 1 : step >= 10 ? 2 : 3;
  return `${(ms / 1000).toFixed(digits)} s`;
}

function n2(v: number): string {
  return (Math.round(v * 100) / 100).toString();
}

function clip(s: string, n: number): string {
  return s.length <= n ? s : `${s.slice(0, Math.max(n - 1, 1))}…`;
}

function anchor(host: string): string {
  return host.replace(/[^A-Za-z0-9_-]/g, '_');
}

/** Escapes text for HTML element content and attribute values. */
export function esc(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string,
  );
}

const CSS = `
:root { color-scheme: light; --ok: #3b82c4; --bad: #d1423f; --cancel: #9aa0a6; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d1f21; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 24px 0 8px; }
h3 { font-size: 14px; margin: 18px 0 4px; font-family: ui-monospace, monospace; }
.facts { color: #444; margin: 0; }
.ok { color: #1e7a3a; } .bad { color: var(--bad); }
svg.timeline { display: block; max-width: 100%; height: auto; font: 11px ui-monospace, monospace; border: 1px solid #ddd; }
.row-bg { fill: #fff; } .row-bg.odd { fill: #f6f7f9; }
.band { fill: #eef3fb; opacity: .55; } .band.odd { fill: #fbf5ea; }
.actionset text { fill: #555; }
text.host { fill: #222; }
rect.bar { fill: var(--ok); stroke: #1f5f99; stroke-width: .5; }
rect.bar.failed { fill: var(--bad); stroke: #7a1412; stroke-width: 1.5; }
rect.bar.cancelled { fill: var(--cancel); stroke: #666; stroke-dasharray: 2 2; }
text.mark { fill: #fff; font-size: 11px; text-anchor: middle; pointer-events: none; }
line.tick { stroke: #000; stroke-opacity: .08; }
text.tick { fill: #666; text-anchor: middle; }
.legend { color: #555; font-size: 12px; }
.swatch { display: inline-block; width: 12px; height: 10px; margin-left: 8px; vertical-align: -1px; }
.swatch.ok { background: var(--ok); } .swatch.failed { background: var(--bad); } .swatch.cancelled { background: var(--cancel); }
table { border-collapse: collapse; margin: 6px 0; font-size: 13px; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
th { font-weight: 600; color: #333; }
table.hosts td:not(:first-child), table.hosts th:not(:first-child) { text-align: right; }
tr.failed td { color: var(--bad); }
code { font: 12px ui-monospace, monospace; }
pre.stderr { font: 12px/1.4 ui-monospace, monospace; background: #fbf1f0; border-left: 3px solid var(--bad); padding: 6px 10px; margin: 4px 0 12px; white-space: pre-wrap; overflow-wrap: anywhere; }
.quiet { color: #777; }
`;
