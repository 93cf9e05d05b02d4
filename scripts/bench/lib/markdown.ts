/** A Markdown table with padded columns, so docs/benchmarks.md reads well as plain text. */
export function markdownTable(rows: readonly (readonly string[])[]): string {
  const widths = (rows[0] ?? []).map((_, c) =>
    Math.max(3, ...rows.map((r) => [...(r[c] ?? '')].length)),
  );
  const line = (cells: readonly string[]) =>
    `| ${widths.map((w, c) => pad(cells[c] ?? '', w)).join(' | ')} |`;
  const [head = [], ...body] = rows;
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

function pad(s: string, width: number): string {
  return s + ' '.repeat(Math.max(0, width - [...s].length));
}

/**
 * The `## ` sections of `existing` (a Markdown page) whose titles are not in `regenerated`,
 * whole and in their order: what a page generated in parts must carry over from its last
 * version (sections written by hand, or by a benchmark that did not run this time).
 */
export function sectionsNotIn(existing: string, regenerated: readonly string[]): string[] {
  const titles = new Set(regenerated.map((t) => t.trim()));
  return existing
    .split(/^(?=## )/m)
    .filter((s) => s.startsWith('## '))
    .filter(
      (s) => !titles.has(s.slice(3, s.indexOf('\n') < 0 ? undefined : s.indexOf('\n')).trim()),
    )
    .map((s) => s.trimEnd());
}
