/**
 * Reading inside one line, once the lexer has said what kind of line it is. These work on
 * offsets into the whole text, so nothing is copied but the strings the model keeps.
 */

/** A run of non-blank characters: `text.slice(start, end)`. */
export interface Word {
  readonly start: number;
  readonly end: number;
}

/** True for the characters `\s` matches, except the newline that ends a line. */
export function isBlank(code: number): boolean {
  if (code === 32 || code === 9 || code === 13) return true;
  if (code === 10 || Number.isNaN(code)) return false;
  return (code < 32 || code >= 0x80) && /\s/.test(String.fromCharCode(code));
}

/** Skips blanks from `at`; returns the first offset that is not one. */
export function skipBlanks(text: string, at: number): number {
  while (isBlank(text.charCodeAt(at))) at++;
  return at;
}

/** Skips the tabs and spaces that indent a line. */
export function skipIndent(text: string, at: number): number {
  for (;;) {
    const c = text.charCodeAt(at);
    if (c !== 9 && c !== 32) return at;
    at++;
  }
}

/** Where the content from `from` ends: before a comment, trailing blanks and the newline. */
export function contentEnd(text: string, from: number): number {
  let end = from;
  for (let c = text.charCodeAt(end); c !== 10 && c !== 35 && !Number.isNaN(c); ) {
    c = text.charCodeAt(++end);
  }
  while (end > from && isBlank(text.charCodeAt(end - 1))) end--;
  return end;
}

/** The blank-separated words from `from` to the end of the line's content. */
export function readWords(text: string, from: number): Word[] {
  const stop = contentEnd(text, from);
  const words: Word[] = [];
  let at = skipBlanks(text, from);
  while (at < stop) {
    const start = at;
    while (at < stop && !isBlank(text.charCodeAt(at))) at++;
    words.push({ start, end: at });
    at = skipBlanks(text, at);
  }
  return words;
}

/** An action line, read: where the command is and whether it carried `remote-`. */
export interface ActionParts {
  /** Offset of the content: the `remote-` prefix, or the command. */
  readonly start: number;
  readonly remote: boolean;
  readonly commandStart: number;
  readonly commandEnd: number;
}

/** Reads the action line that starts at `lineStart`. */
export function readAction(text: string, lineStart: number): ActionParts {
  const start = skipIndent(text, lineStart);
  const remote = text.startsWith('remote-', start);
  const commandStart = skipBlanks(text, remote ? start + 'remote-'.length : start);
  return { start, remote, commandStart, commandEnd: contentEnd(text, commandStart) };
}

/** A `PORT` or `HOSTS` line, read: the keyword, the `=` and the offset after it. */
export function readSetting(text: string, lineStart: number): { equals: number; after: number } {
  const equals = text.indexOf('=', lineStart);
  return { equals, after: equals + 1 };
}

/** An actionset header, read: the name and anything (wrongly) after the colon. */
export function readHeader(
  text: string,
  lineStart: number,
): { name: string; colon: number; trailing: Word | undefined } {
  const nameMatch = /[^\s:#=]+/y;
  nameMatch.lastIndex = lineStart;
  const name = nameMatch.exec(text)?.[0] ?? '';
  const colon = text.indexOf(':', lineStart + name.length);
  const from = skipBlanks(text, colon + 1);
  const end = contentEnd(text, from);
  return { name, colon, trailing: end > from ? { start: from, end } : undefined };
}
