import type { SourcePosition } from './model.js';

/**
 * Why a Rakefile was rejected, as a stable kebab-case tag. Scripts and tests match on it;
 * docs/rakefile.md lists each one with an example.
 */
export type DiagnosticCode =
  /** The file holds NUL bytes or is not valid UTF-8. */
  | 'not-text'
  /** The file could not be read at all (missing, a directory, no permission). */
  | 'cannot-read'
  /** Nothing but blank lines and comments. */
  | 'empty-file'
  /** Settings but no actionset: nothing would run. */
  | 'no-actionsets'
  /** A line in column 1 that is not `PORT = n`, `HOSTS = ...` or `name:`. */
  | 'unknown-line'
  /** Indentation with three or more tabs. */
  | 'too-many-tabs'
  /** A line indented with two tabs that does not start with `requires`. */
  | 'expected-requires'
  /** `requires` indented with one tab, where the action would be a command named `requires`. */
  | 'requires-one-tab'
  /** A header or setting indented with spaces: it would silently become an action. */
  | 'indented-top-level'
  /** `remote-` with nothing after it. */
  | 'remote-without-command'
  /** Text after the `:` of an actionset header. */
  | 'header-trailing-text'
  /** `PORT` missing, not an integer, or outside 1..65535. */
  | 'invalid-port'
  /** A `HOSTS` entry that is not `name`, `name:port`, `a.b.c.d:port` or `[v6]:port`. */
  | 'invalid-host'
  /** `HOSTS =` followed by nothing. */
  | 'no-hosts'
  /** A second `PORT` or `HOSTS` line. */
  | 'repeated-setting'
  /** Two actionsets with one name. */
  | 'repeated-actionset'
  /** A `requires` line with no action above it in its actionset. */
  | 'requires-before-action'
  /** An action with no actionset header above it. */
  | 'action-before-actionset'
  /** A `remote-` action in a file with no `HOSTS` line. */
  | 'remote-without-hosts'
  /** An actionset header with no actions under it. */
  | 'empty-actionset';

/**
 * One thing wrong with a Rakefile, aimed at a person: what is wrong (`message`), what to do
 * about it (`hint`) and where (`position`, plus `length` characters to underline).
 */
export interface Diagnostic {
  readonly code: DiagnosticCode;
  readonly position: SourcePosition;
  readonly message: string;
  readonly hint: string;
  /** How many characters from `position` the caret line underlines; 1 when absent. */
  readonly length?: number;
}

/** Tabs are shown as this many spaces, in the source line and under it alike (as rustc does). */
const TAB_WIDTH = 4;

/** Codes that are about the whole file, not a place in it: no source line is shown. */
const NO_SOURCE_LINE: ReadonlySet<DiagnosticCode> = new Set([
  'not-text',
  'cannot-read',
  'empty-file',
  'no-actionsets',
]);

/**
 * Renders one diagnostic the way compilers do:
 *
 * ```
 * Rakefile:7:1: error: three or more tabs [too-many-tabs]
 *             requires foo.c
 * ^^^^^^^^^^^^
 * hint: indent actions with one tab and requires lines with two
 * ```
 *
 * `sourceText` is the text the diagnostic came from; without it only the first and last lines
 * are printed.
 */
export function formatDiagnostic(diagnostic: Diagnostic, sourceText?: string): string {
  const lines = sourceText === undefined ? undefined : splitLines(sourceText);
  return formatWithLines(diagnostic, lines);
}

/** Renders many diagnostics of one source, separated by blank lines, ending with a newline. */
export function formatDiagnostics(diagnostics: readonly Diagnostic[], sourceText?: string): string {
  const lines = sourceText === undefined ? undefined : splitLines(sourceText);
  return diagnostics.map((d) => `${formatWithLines(d, lines)}\n`).join('\n');
}

function formatWithLines(d: Diagnostic, lines: readonly string[] | undefined): string {
  const { file, line, column } = d.position;
  const out: string[] = [];
  if (d.code === 'cannot-read') out.push(`${file}: error: ${d.message} [${d.code}]`);
  else out.push(`${file}:${line}:${column}: error: ${d.message} [${d.code}]`);
  const source = lines?.[line - 1];
  if (source !== undefined && !NO_SOURCE_LINE.has(d.code)) {
    const chars = Array.from(source);
    const before = chars.slice(0, column - 1);
    const span = chars.slice(column - 1, column - 1 + Math.max(1, d.length ?? 1));
    out.push(
      chars.map(display).join('').trimEnd(),
      `${' '.repeat(width(before))}${'^'.repeat(Math.max(1, width(span)))}`,
    );
  }
  out.push(`hint: ${d.hint}`);
  return out.join('\n');
}

function splitLines(text: string): string[] {
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  return body.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
}

/** Terminal columns `chars` take once displayed: tabs 4, wide East Asian and emoji 2. */
function width(chars: readonly string[]): number {
  let total = 0;
  for (const char of chars) {
    if (char === '\t') total += TAB_WIDTH;
    else total += charWidth(char.codePointAt(0) ?? 0);
  }
  return total;
}

function charWidth(code: number): number {
  if (code >= 0x300 && code <= 0x36f) return 0;
  const wide =
    (code >= 0x1100 && code <= 0x115f) ||
    (code >= 0x2e80 && code <= 0xa4cf) ||
    (code >= 0xac00 && code <= 0xd7a3) ||
    (code >= 0xf900 && code <= 0xfaff) ||
    (code >= 0xfe30 && code <= 0xfe4f) ||
    (code >= 0xff00 && code <= 0xff60) ||
    (code >= 0xffe0 && code <= 0xffe6) ||
    (code >= 0x1f300 && code <= 0x1faff) ||
    (code >= 0x20000 && code <= 0x3fffd);
  return wide ? 2 : 1;
}

/** Makes one source character printable on one terminal line. */
function display(char: string): string {
  if (char === '\t') return ' '.repeat(TAB_WIDTH);
  const code = char.codePointAt(0) ?? 0;
  return code < 0x20 || code === 0x7f ? '\uFFFD' : char;
}
