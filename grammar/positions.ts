import type { SourcePosition } from './model.js';

/**
 * Turns character offsets into `file:line:column` positions. Tokens only carry offsets (cheaper
 * to lex 100,000-action files); lines and columns are computed once per node that needs them.
 */
export class LineIndex {
  readonly #file: string;
  readonly #text: string;
  /** Offset of the first character of each line; `#starts[0]` is 0. */
  readonly #starts: Uint32Array;
  /** Columns count characters, so a surrogate pair is one column; most files have none. */
  readonly #hasSurrogates: boolean;
  /** Index into `#starts` of the line found last. */
  #lastLine = 0;

  constructor(file: string, text: string) {
    this.#file = file;
    this.#text = text;
    let count = 1;
    for (let at = text.indexOf('\n'); at !== -1; at = text.indexOf('\n', at + 1)) count++;
    const starts = new Uint32Array(count);
    for (let at = text.indexOf('\n'), i = 1; at !== -1; at = text.indexOf('\n', at + 1)) {
      starts[i++] = at + 1;
    }
    this.#starts = starts;
    this.#hasSurrogates = /[\uD800-\uDBFF]/.test(text);
  }

  /** The file label every position carries. */
  get file(): string {
    return this.#file;
  }

  /** Number of lines, counting a last line with no newline. */
  get lineCount(): number {
    return this.#starts.length;
  }

  /** The position of the character at `offset` (an offset at the end of the text is allowed). */
  position(offset: number): SourcePosition {
    return this.positionOn(this.lineOf(offset), offset);
  }

  /** The position of `offset`, known to be on `line` (saves the search). */
  positionOn(line: number, offset: number): SourcePosition {
    const start = this.#starts[line - 1] ?? 0;
    let column = offset - start + 1;
    if (this.#hasSurrogates) {
      const pairs = this.#text.slice(start, offset).match(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g);
      column -= pairs?.length ?? 0;
    }
    return { file: this.#file, line, column };
  }

  /** The 1-based line holding `offset`. */
  lineOf(offset: number): number {
    const starts = this.#starts;
    // Callers mostly walk the file in order: try the line after the last answer first.
    let line = this.#lastLine;
    if ((starts[line] ?? 0) <= offset) {
      while (line + 1 < starts.length && (starts[line + 1] as number) <= offset) {
        line++;
        if (line - this.#lastLine > 8) return this.#search(offset);
      }
      this.#lastLine = line;
      return line + 1;
    }
    return this.#search(offset);
  }

  #search(offset: number): number {
    const starts = this.#starts;
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if ((starts[mid] ?? 0) <= offset) lo = mid;
      else hi = mid - 1;
    }
    this.#lastLine = lo;
    return lo + 1;
  }
}
