/**
 * Small readers of a line's characters, for what the lexer's line matchers decide before
 * any token is made: where the indentation ends, where the content ends.
 */

/** True for the characters `\s` matches, except the newline that ends a line. */
export function isBlank(code: number): boolean {
  if (code === 32 || code === 9 || code === 13) return true;
  if (code === 10 || Number.isNaN(code)) return false;
  return (code < 32 || code >= 0x80) && /\s/.test(String.fromCharCode(code));
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
