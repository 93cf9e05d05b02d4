/**
 * Bytes to text, refusing what is not text: a Rakefile is UTF-8 (a byte-order mark is
 * allowed and dropped). NUL bytes or invalid UTF-8 mean the wrong file was named; parsing it
 * would only produce a screenful of nonsense diagnostics, so it gets exactly one.
 */
import { isUtf8 } from 'node:buffer';
import type { Diagnostic } from './diagnostics.js';

export type Decoded =
  | { readonly ok: true; readonly text: string }
  | { readonly ok: false; readonly diagnostic: Diagnostic; readonly text: string };

const NOT_TEXT_HINT = 'a Rakefile is a UTF-8 text file; check that this is the file you meant';

/** Decodes `input` and drops a leading byte-order mark. */
export function decodeRakefile(input: string | Uint8Array, file: string): Decoded {
  if (typeof input === 'string') {
    const text = input.charCodeAt(0) === 0xfeff ? input.slice(1) : input;
    const nul = text.indexOf('\0');
    if (nul === -1) return { ok: true, text };
    const lineStart = text.lastIndexOf('\n', nul) + 1;
    return notText(text, file, 'it contains a NUL character', {
      line: countNewlines(text, nul) + 1,
      column: Array.from(text.slice(lineStart, nul)).length + 1,
    });
  }

  const nul = input.indexOf(0);
  // TextDecoder makes an ordinary heap string; Buffer#toString('latin1') would make an
  // external one, which the lexer's character loops read several times slower.
  const lossy = new TextDecoder('utf-8').decode(input);
  const bad = isUtf8(input) ? -1 : firstInvalidUtf8(input);
  if (nul === -1 && bad === -1) return { ok: true, text: lossy };

  const utf16 =
    input.length >= 2 &&
    ((input[0] === 0xff && input[1] === 0xfe) || (input[0] === 0xfe && input[1] === 0xff));
  if (utf16) {
    return {
      ok: false,
      text: lossy,
      diagnostic: {
        code: 'not-text',
        position: { file, line: 1, column: 1 },
        message: 'the file is UTF-16 text, not UTF-8',
        hint: 'save the Rakefile as UTF-8',
        length: 1,
      },
    };
  }
  const at = bad === -1 ? nul : nul === -1 ? bad : Math.min(nul, bad);
  const why = at === nul ? 'it contains a NUL byte' : 'it is not valid UTF-8';
  return notText(lossy, file, why, bytePosition(input, at));
}

function notText(
  text: string,
  file: string,
  why: string,
  where: { line: number; column: number },
): Decoded {
  return {
    ok: false,
    text,
    diagnostic: {
      code: 'not-text',
      position: { file, ...where },
      message: `not a text file: ${why}`,
      hint: NOT_TEXT_HINT,
      length: 1,
    },
  };
}

/** Line and column (in characters) of byte `at`, whose line before it is valid UTF-8. */
function bytePosition(bytes: Uint8Array, at: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = bytes.indexOf(0x0a); i !== -1 && i < at; i = bytes.indexOf(0x0a, i + 1)) {
    line++;
    lineStart = i + 1;
  }
  const before = new TextDecoder('utf-8').decode(bytes.subarray(lineStart, at));
  return { line, column: Array.from(before).length + 1 };
}

function countNewlines(text: string, end: number): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < end; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

/** Offset of the first byte that breaks UTF-8 (RFC 3629), or -1. */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  const n = bytes.length;
  let i = 0;
  while (i < n) {
    const b = bytes[i] as number;
    if (b < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b === 0xe0) [need, lo] = [2, 0xa0];
    else if ((b >= 0xe1 && b <= 0xec) || b === 0xee || b === 0xef) need = 2;
    else if (b === 0xed) [need, hi] = [2, 0x9f];
    else if (b === 0xf0) [need, lo] = [3, 0x90];
    else if (b >= 0xf1 && b <= 0xf3) need = 3;
    else if (b === 0xf4) [need, hi] = [3, 0x8f];
    else return i;
    for (let k = 1; k <= need; k++) {
      const c = bytes[i + k];
      const min = k === 1 ? lo : 0x80;
      const max = k === 1 ? hi : 0xbf;
      if (c === undefined || c < min || c > max) return i;
    }
    i += need + 1;
  }
  return -1;
}
