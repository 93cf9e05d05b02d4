/**
 * Hand-written SVG charts for docs/benchmarks.md: grouped bars (with the spread of the runs
 * as a whisker), lines over a numeric axis, and horizontal stacked bars. No dependencies;
 * the output is plain SVG 1.1 text that GitHub renders inline.
 */

/** One bar: its median and the range of its runs. */
export interface Bar {
  readonly label: string;
  readonly value: number;
  readonly lo?: number;
  readonly hi?: number;
}

/** A labelled cluster of bars, one per series. */
export interface BarGroup {
  readonly label: string;
  readonly bars: readonly Bar[];
}

/** A horizontal line across the plot, e.g. the baseline at 1.0 or a target. */
export interface RefLine {
  readonly value: number;
  readonly label: string;
  readonly dashed?: boolean;
}

const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1'];
const FONT = 'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"';

const esc = (s: string) =>
  s
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;');
const num = (x: number) => (Math.round(x * 10) / 10).toString();

/** A "nice" upper bound and tick step for an axis from 0 to `max`. */
function niceScale(max: number, ticks = 5): { top: number; step: number } {
  if (!(max > 0)) return { top: 1, step: 0.2 };
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 2.5, 5, 10].find((m) => m * mag >= raw) ?? 10) * mag;
  return { top: Math.ceil(max / step) * step, step };
}

function fmtTick(v: number, step: number): string {
  const digits = step >= 1 ? 0 : Math.min(3, Math.ceil(-Math.log10(step)));
  return v.toFixed(digits);
}

function frame(width: number, height: number, title: string, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT} font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="600">${esc(title)}</text>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

/** Space around the plot inside a chart, px. */
interface Margins {
  readonly left: number;
  readonly right: number;
  readonly top: number;
  readonly bottom: number;
}

/**
 * The plot of a `width` × `height` chart inside the margins `m` (`pw` × `ph`) and its
 * vertical value axis, from 0 to a nice bound above `values` and the reference lines: the
 * scale `y`, the gridlines with their tick labels (drawn first) and the reference lines with
 * their labels on the right (drawn over the data).
 */
function valuePlot(
  width: number,
  height: number,
  m: Margins,
  values: readonly number[],
  refLines: readonly RefLine[] = [],
): { pw: number; ph: number; y: (v: number) => number; grid: string[]; refs: string[] } {
  const pw = width - m.left - m.right;
  const ph = height - m.top - m.bottom;
  const maxV = Math.max(...values, ...refLines.map((r) => r.value));
  const { top, step } = niceScale(maxV * 1.05);
  const y = (v: number) => m.top + ph - (v / top) * ph;
  const grid: string[] = [];
  for (let v = 0; v <= top + 1e-9; v += step) {
    grid.push(
      `<line x1="${m.left}" x2="${m.left + pw}" y1="${num(y(v))}" y2="${num(y(v))}" stroke="#e5e5e5"/>`,
      `<text x="${m.left - 6}" y="${num(y(v) + 4)}" text-anchor="end">${fmtTick(v, step)}</text>`,
    );
  }
  const refs = refLines.flatMap((r) => [
    `<line x1="${m.left}" x2="${m.left + pw}" y1="${num(y(r.value))}" y2="${num(y(r.value))}" stroke="#222" ${r.dashed ? 'stroke-dasharray="5 4"' : ''}/>`,
    `<text x="${m.left + pw + 4}" y="${num(y(r.value) + 4)}" font-size="11">${esc(r.label)}</text>`,
  ]);
  return { pw, ph, y, grid, refs };
}

function legend(labels: readonly string[], x: number, y: number): string[] {
  return labels.flatMap((l, i) => [
    `<rect x="${x}" y="${y + i * 18}" width="12" height="12" fill="${PALETTE[i % PALETTE.length]}"/>`,
    `<text x="${x + 18}" y="${y + i * 18 + 10}">${esc(l)}</text>`,
  ]);
}

/** Vertical grouped bars with whiskers and optional reference lines. */
export function barChart(o: {
  readonly title: string;
  readonly yLabel: string;
  readonly groups: readonly BarGroup[];
  readonly refLines?: readonly RefLine[];
}): string {
  const width = 760;
  const height = 360;
  const m = { left: 60, right: 230, top: 36, bottom: 48 };
  const series = [...new Set(o.groups.flatMap((g) => g.bars.map((b) => b.label)))];
  const tops = o.groups.flatMap((g) => g.bars.map((b) => Math.max(b.value, b.hi ?? 0)));
  const { pw, ph, y, grid, refs } = valuePlot(width, height, m, tops, o.refLines);
  const body = [...grid];
  const gw = pw / Math.max(1, o.groups.length);
  const bw = Math.min(48, (gw * 0.7) / Math.max(1, series.length));
  o.groups.forEach((g, gi) => {
    const gx = m.left + gi * gw + (gw - bw * series.length) / 2;
    g.bars.forEach((b) => {
      const si = series.indexOf(b.label);
      const x = gx + si * bw;
      body.push(
        `<rect x="${num(x + 2)}" y="${num(y(b.value))}" width="${num(bw - 4)}" height="${num(y(0) - y(b.value))}" fill="${PALETTE[si % PALETTE.length]}"><title>${esc(`${g.label} ${b.label}: ${b.value.toFixed(2)}`)}</title></rect>`,
        `<text x="${num(x + bw / 2)}" y="${num(y(Math.max(b.value, b.hi ?? 0)) - 4)}" text-anchor="middle" font-size="10">${b.value.toFixed(2)}</text>`,
      );
      if (b.lo !== undefined && b.hi !== undefined) {
        const cx = num(x + bw / 2);
        body.push(
          `<line x1="${cx}" x2="${cx}" y1="${num(y(b.lo))}" y2="${num(y(b.hi))}" stroke="#333"/>`,
          `<line x1="${num(x + bw / 2 - 4)}" x2="${num(x + bw / 2 + 4)}" y1="${num(y(b.lo))}" y2="${num(y(b.lo))}" stroke="#333"/>`,
          `<line x1="${num(x + bw / 2 - 4)}" x2="${num(x + bw / 2 + 4)}" y1="${num(y(b.hi))}" y2="${num(y(b.hi))}" stroke="#333"/>`,
        );
      }
    });
    body.push(
      `<text x="${num(m.left + gi * gw + gw / 2)}" y="${m.top + ph + 18}" text-anchor="middle">${esc(g.label)}</text>`,
    );
  });
  body.push(
    ...refs,
    `<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${m.top + ph}" stroke="#555"/>`,
    `<text transform="translate(16 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`,
    ...legend(series, m.left + pw + 10, m.top + 40),
  );
  return frame(width, height, o.title, body);
}

/** A point of a line, with the range of its runs. */
export interface Point {
  readonly x: number;
  readonly y: number;
  readonly lo?: number;
  readonly hi?: number;
}

/** Lines over a numeric x axis (log₂ when `log2X`), with whiskers and reference lines. */
export function lineChart(o: {
  readonly title: string;
  readonly xLabel: string;
  readonly yLabel: string;
  readonly series: readonly { readonly label: string; readonly points: readonly Point[] }[];
  readonly log2X?: boolean;
  readonly refLines?: readonly RefLine[];
}): string {
  const width = 760;
  const height = 360;
  const m = { left: 60, right: 250, top: 36, bottom: 48 };
  const tops = o.series.flatMap((s) => s.points.map((p) => Math.max(p.y, p.hi ?? 0)));
  const { pw, ph, y, grid, refs } = valuePlot(width, height, m, tops, o.refLines);
  const xs = [...new Set(o.series.flatMap((s) => s.points.map((p) => p.x)))].sort((a, b) => a - b);
  const tx = (x: number) => (o.log2X ? Math.log2(x) : x);
  const x0 = tx(xs[0] ?? 0);
  const x1 = tx(xs.at(-1) ?? 1);
  const x = (v: number) => m.left + (x1 === x0 ? pw / 2 : ((tx(v) - x0) / (x1 - x0)) * pw);
  const body = [...grid];
  for (const v of xs) {
    body.push(
      `<line x1="${num(x(v))}" x2="${num(x(v))}" y1="${m.top + ph}" y2="${m.top + ph + 4}" stroke="#555"/>`,
      `<text x="${num(x(v))}" y="${m.top + ph + 18}" text-anchor="middle">${v}</text>`,
    );
  }
  body.push(...refs);
  o.series.forEach((s, si) => {
    const color = PALETTE[si % PALETTE.length];
    const pts = [...s.points].sort((a, b) => a.x - b.x);
    body.push(
      `<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.map((p) => `${num(x(p.x))},${num(y(p.y))}`).join(' ')}"/>`,
    );
    for (const p of pts) {
      if (p.lo !== undefined && p.hi !== undefined) {
        body.push(
          `<line x1="${num(x(p.x))}" x2="${num(x(p.x))}" y1="${num(y(p.lo))}" y2="${num(y(p.hi))}" stroke="${color}"/>`,
        );
      }
      body.push(
        `<circle cx="${num(x(p.x))}" cy="${num(y(p.y))}" r="3.5" fill="${color}"><title>${esc(`${s.label}, ${p.x}: ${p.y.toFixed(2)}`)}</title></circle>`,
      );
    }
  });
  body.push(
    `<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${m.top + ph}" stroke="#555"/>`,
    `<line x1="${m.left}" x2="${m.left + pw}" y1="${m.top + ph}" y2="${m.top + ph}" stroke="#555"/>`,
    `<text x="${m.left + pw / 2}" y="${height - 8}" text-anchor="middle">${esc(o.xLabel)}</text>`,
    `<text transform="translate(16 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`,
    ...legend(
      o.series.map((s) => s.label),
      m.left + pw + 10,
      m.top + 60,
    ),
  );
  return frame(width, height, o.title, body);
}

/** Horizontal stacked bars: one row per label, one segment per part (e.g. the phases). */
export function stackedBars(o: {
  readonly title: string;
  readonly xLabel: string;
  readonly parts: readonly string[];
  readonly rows: readonly { readonly label: string; readonly values: readonly number[] }[];
}): string {
  const width = 760;
  const rowH = 30;
  const m = { left: 250, right: 40, top: 60, bottom: 44 };
  const height = m.top + m.bottom + rowH * o.rows.length;
  const pw = width - m.left - m.right;
  const maxV = Math.max(...o.rows.map((r) => r.values.reduce((a, b) => a + b, 0)));
  const { top, step } = niceScale(maxV * 1.02);
  const x = (v: number) => m.left + (v / top) * pw;
  const body: string[] = [];
  for (let v = 0; v <= top + 1e-9; v += step) {
    body.push(
      `<line x1="${num(x(v))}" x2="${num(x(v))}" y1="${m.top - 4}" y2="${m.top + rowH * o.rows.length}" stroke="#e5e5e5"/>`,
      `<text x="${num(x(v))}" y="${m.top + rowH * o.rows.length + 16}" text-anchor="middle">${fmtTick(v, step)}</text>`,
    );
  }
  let lx = 20;
  o.parts.forEach((p, i) => {
    body.push(
      `<rect x="${lx}" y="32" width="12" height="12" fill="${PALETTE[i % PALETTE.length]}"/>`,
      `<text x="${lx + 16}" y="42">${esc(p)}</text>`,
    );
    lx += 28 + p.length * 7;
  });
  o.rows.forEach((r, ri) => {
    const yy = m.top + ri * rowH;
    body.push(
      `<text x="${m.left - 8}" y="${yy + rowH / 2 + 4}" text-anchor="end">${esc(r.label)}</text>`,
    );
    let acc = 0;
    r.values.forEach((v, i) => {
      if (!(v > 0)) return;
      body.push(
        `<rect x="${num(x(acc))}" y="${yy + 5}" width="${num(x(acc + v) - x(acc))}" height="${rowH - 10}" fill="${PALETTE[i % PALETTE.length]}"><title>${esc(`${r.label}: ${o.parts[i]} ${v.toFixed(1)}`)}</title></rect>`,
      );
      acc += v;
    });
    body.push(
      `<text x="${num(x(acc) + 4)}" y="${yy + rowH / 2 + 4}" font-size="10">${acc.toFixed(1)}</text>`,
    );
  });
  body.push(
    `<text x="${m.left + pw / 2}" y="${height - 8}" text-anchor="middle">${esc(o.xLabel)}</text>`,
  );
  return frame(width, height, o.title, body);
}
