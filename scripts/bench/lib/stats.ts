/**
 * Medians and spreads: every figure in docs/benchmarks.md is the median of several runs
 * with the range of those runs beside it, so a reader sees how noisy the machine was.
 */

/** The runs of one figure, reduced to what a table shows. */
export interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly runs: number;
}

/** The median (mean of the middle two for an even count); NaN for no values. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1
    ? (s[mid] as number)
    : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** The `q`-quantile (0..1) by nearest rank; NaN for no values. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i] as number;
}

export function spread(values: readonly number[]): Spread {
  return {
    median: median(values),
    min: values.length === 0 ? Number.NaN : Math.min(...values),
    max: values.length === 0 ? Number.NaN : Math.max(...values),
    runs: values.length,
  };
}

/** `12.3 (11.0–13.5)`: the median with the range of the runs. */
export function formatSpread(s: Spread, digits = 2, unit = ''): string {
  if (Number.isNaN(s.median)) return '–';
  const f = (x: number) => x.toFixed(digits);
  if (s.runs === 1) return `${f(s.median)}${unit}`;
  return `${f(s.median)}${unit} (${f(s.min)}–${f(s.max)})`;
}

/** Per-run ratios `a[i] / b[i]` (the same run's numerator and baseline). */
export function ratios(a: readonly number[], b: readonly number[]): number[] {
  return a.map((x, i) => x / (b[i] as number)).filter((r) => Number.isFinite(r));
}
