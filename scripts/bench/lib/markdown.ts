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
