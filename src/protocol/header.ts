import { ProtocolError, showBytes } from './errors.js';
import { DEFAULT_LIMITS, MAX_DECIMAL_PAYLOAD, type ProtocolLimits } from './limits.js';

/** Every header is exactly this many ASCII bytes, right-padded with spaces (PROTOCOL.md). */
export const HEADER_SIZE = 64;

/**
 * Codes of the plain layout: `code(2)` + decimal length + spaces. `!X` is not base protocol:
 * it carries negotiated extension messages and is only ever sent to a peer that offered
 * them (docs/protocol.md, "Extensions").
 */
export type PlainCode = '!E' | '!C' | '!R' | '!D' | '!F' | '!X';

/** The base protocol's plain codes, for validation and iteration. */
export const PLAIN_CODES: readonly PlainCode[] = ['!E', '!C', '!R', '!D', '!F'];

/** The plain code of extension messages (`!X<len>` + message). */
export const EXTENSION_CODE = '!X' satisfies PlainCode;

/**
 * Longest annex an `!E` header can carry: 64 bytes less `!E`, a 2-digit length and the one
 * space that separates them. Cost replies have short lengths; the offer has length 0.
 */
export const MAX_ANNEX = HEADER_SIZE - 5;

/** An annex: `rake/<n>` and space-separated printable tokens (docs/protocol.md, "Offer"). */
const ANNEX = /^rake\/[!-~]+(?: [!-~]+)*$/;

/**
 * The 3 flag characters after `!S` in a flagged header. Each position holds a letter or a
 * space (`'S  '`, `'SI '`, `'SIF'`, `'!NF'`, `'!ZF'`); kept as a string so a negotiated
 * extension can add flags without changing this type.
 */
export type Flags = string;

/** The flags base mode uses, by meaning. */
export const FLAGS = {
  /** `!SS  <len>` + stdout: success, no files follow. */
  stdout: 'S  ',
  /** `!SSI <len>` + stdout: success, a filestream of output files follows. */
  stdoutAndFiles: 'SI ',
  /** `!SSIF<count>`: filestream announcement; the count is the length field, no payload. */
  announce: 'SIF',
  /** `!S!NF<len>` + file name: answer to `!N`. */
  name: '!NF',
  /** `!S!ZF<len>` + size as decimal: answer to `!Z`. */
  size: '!ZF',
  /** `!S!MF<len>` + permission bits as octal: answer to `!M` (extension `mode` only). */
  mode: '!MF',
} as const satisfies Record<string, Flags>;

/**
 * A decoded 64-byte header. `length` is in bytes: the payload length, except for a
 * filestream announcement, where it is the file count. `annex` is the self-description an
 * `!E` header may carry in its padding (the extension offer and its answer); base peers
 * never send one and the reference server ignores it.
 */
export type Header =
  | {
      readonly kind: 'plain';
      readonly code: PlainCode;
      readonly length: number;
      readonly annex?: string;
    }
  | { readonly kind: 'flagged'; readonly flags: Flags; readonly length: number };

/**
 * The 2-byte filestream requests a receiver sends (unpadded; a padding peer is tolerated).
 * `!M` (the file's mode) is only sent when both ends negotiated the `mode` extension.
 */
export type Request = '!N' | '!Z' | '!M' | '!T';

/** Requests are 2 raw bytes on the wire. */
export const REQUEST_SIZE = 2;

const REQUESTS: readonly Request[] = ['!N', '!Z', '!M', '!T'];
const BANG = 0x21;
/** The codes a header may start with, by their second byte (no string made per header). */
const CODE_OF: Readonly<Record<number, string>> = Object.fromEntries(
  [...PLAIN_CODES, EXTENSION_CODE, '!S'].map((c) => [c.charCodeAt(1), c]),
);
const FLAG_CHAR = /^[A-Z! ]{3}$/;
const SPACE = 0x20;

/**
 * Encodes a header as exactly 64 ASCII bytes; an annex (only on `!E`) is right-aligned in
 * the padding. Throws RangeError for an impossible header.
 */
export function encodeHeader(h: Header): Buffer {
  return writeHeader(Buffer.allocUnsafe(HEADER_SIZE), h);
}

/**
 * Writes header `h` into the first 64 bytes of `buf` (its padding included) and returns
 * `buf`. Throws RangeError for an impossible header.
 */
function writeHeader(buf: Buffer, h: Header): Buffer {
  if (!Number.isSafeInteger(h.length) || h.length < 0) {
    throw new RangeError(`header length must be a non-negative integer, got ${h.length}`);
  }
  let text: string;
  let annex: string | undefined;
  if (h.kind === 'plain') {
    if (!PLAIN_CODES.includes(h.code) && h.code !== EXTENSION_CODE) {
      throw new RangeError(`unknown plain code ${h.code}`);
    }
    text = `${h.code}${h.length}`;
    if (h.annex !== undefined) {
      if (h.code !== '!E') throw new RangeError(`only !E headers carry an annex, not ${h.code}`);
      if (!ANNEX.test(h.annex) || text.length + 1 + h.annex.length > HEADER_SIZE) {
        throw new RangeError(`bad annex ${JSON.stringify(h.annex)} after ${text}`);
      }
      annex = h.annex;
    }
  } else {
    if (!FLAG_CHAR.test(h.flags)) throw new RangeError(`bad flags ${JSON.stringify(h.flags)}`);
    text = `!S${h.flags}${h.length}`;
  }
  // From Node's buffer pool (`alloc` makes an ArrayBuffer of its own for every header).
  buf.fill(SPACE, 0, HEADER_SIZE);
  buf.write(text, 0, 'latin1');
  if (annex !== undefined) buf.write(annex, HEADER_SIZE - annex.length, 'latin1');
  return buf;
}

/** A header followed by its payload, ready to write: `!F12` + pad + `...`. */
export function encodePacket(
  head: { code: PlainCode } | { flags: Flags },
  payload: Uint8Array | string = '',
): Buffer {
  const length = typeof payload === 'string' ? Buffer.byteLength(payload, 'utf8') : payload.length;
  const header: Header =
    'code' in head
      ? { kind: 'plain', code: head.code, length }
      : { kind: 'flagged', flags: head.flags, length };
  // One buffer, written in place: no copy of the payload into a second one.
  const buf = writeHeader(Buffer.allocUnsafe(HEADER_SIZE + length), header);
  if (typeof payload === 'string') buf.write(payload, HEADER_SIZE, 'utf8');
  else buf.set(payload, HEADER_SIZE);
  return buf;
}

/** The 2 bytes of a filestream request. */
export function encodeRequest(r: Request): Buffer {
  return Buffer.from(r, 'latin1');
}

/**
 * Decodes a 64-byte header. The length field may be surrounded by spaces; an all-space
 * length field reads as 0 (the seed's cost query is a bare padded `!E`). Throws
 * {@link ProtocolError}: `unknown-code`, `bad-length`, `length-too-large`.
 */
export function decodeHeader(buf: Uint8Array, limits?: Partial<ProtocolLimits>): Header {
  if (buf.length !== HEADER_SIZE) {
    throw new ProtocolError('short-read', `${HEADER_SIZE} header bytes`, `${buf.length} bytes`);
  }
  const bytes = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  const code = (bytes[0] === BANG && CODE_OF[bytes[1] as number]) || bytes.toString('latin1', 0, 2);
  const maxLength = limits?.maxLength ?? DEFAULT_LIMITS.maxLength;
  if (code === '!S') {
    const flags = bytes.toString('latin1', 2, 5);
    if (!FLAG_CHAR.test(flags)) {
      throw new ProtocolError(
        'unknown-code',
        'a header !S + 3 flag letters or spaces',
        `header ${showBytes(bytes)}`,
      );
    }
    return { kind: 'flagged', flags, length: plainLength(bytes, 5, maxLength) };
  }
  if (code === '!E') {
    // The annex, if any, is the last space-separated run starting `rake/` (PROTOCOL.md: the
    // reference server ignores everything after `!E`).
    const text = bytes.toString('latin1', 2).trim();
    const m = /^(?:(\S*) +)?(rake\/[!-~]+(?: +[!-~]+)*)$/.exec(text);
    if (m) {
      const length = decodeLength(bytes, 2, maxLength, m[1] ?? '');
      return { kind: 'plain', code: '!E', length, annex: (m[2] as string).replace(/ +/g, ' ') };
    }
  }
  // To a base peer `!X` is an unknown code; only its exact form `!X<decimal>` is read as one.
  if (code === EXTENSION_CODE) {
    const digits = digitsAt(bytes, 2);
    if (digits !== undefined && digits.end > digits.start) {
      return { kind: 'plain', code, length: plainLength(bytes, 2, maxLength) };
    }
  } else if ((PLAIN_CODES as readonly string[]).includes(code)) {
    return { kind: 'plain', code: code as PlainCode, length: plainLength(bytes, 2, maxLength) };
  }
  throw new ProtocolError(
    'unknown-code',
    'a header starting with !E, !C, !R, !D, !F or !S',
    `header ${showBytes(bytes)}`,
  );
}

/**
 * Where the decimal digits of a length field from `from` to the header's end are, when the
 * field is spaces, digits, spaces (either run may be empty); `undefined` for anything else.
 */
function digitsAt(bytes: Buffer, from: number): { start: number; end: number } | undefined {
  let i = from;
  while (i < HEADER_SIZE && bytes[i] === SPACE) i++;
  const start = i;
  while (i < HEADER_SIZE && (bytes[i] as number) >= 0x30 && (bytes[i] as number) <= 0x39) i++;
  const end = i;
  while (i < HEADER_SIZE && bytes[i] === SPACE) i++;
  return i === HEADER_SIZE ? { start, end } : undefined;
}

/**
 * {@link decodeLength} of a field of spaces and digits, read from the bytes (every header
 * of a job is one: no string or regular expression per header); any other field, and a
 * length over `max`, through `decodeLength` itself, which says what is wrong.
 */
function plainLength(bytes: Buffer, from: number, max: number): number {
  const digits = digitsAt(bytes, from);
  if (digits === undefined || digits.end - digits.start > 15) return decodeLength(bytes, from, max);
  let n = 0;
  for (let i = digits.start; i < digits.end; i++) n = n * 10 + ((bytes[i] as number) - 0x30);
  return n <= max ? n : decodeLength(bytes, from, max);
}

function decodeLength(
  bytes: Buffer,
  from: number,
  max: number,
  field = bytes.toString('latin1', from).trim(),
): number {
  if (field === '') return 0;
  if (!/^\d+$/.test(field)) {
    const what = field.startsWith('-') ? 'a negative length' : 'a non-numeric length';
    throw new ProtocolError(
      'bad-length',
      'a decimal length after the code',
      `${what} in header ${showBytes(bytes)}`,
    );
  }
  const n = field.length > 16 ? Number.POSITIVE_INFINITY : Number(field);
  if (!(n <= max)) {
    throw new ProtocolError('length-too-large', `a length of at most ${max}`, `length ${field}`);
  }
  return n;
}

/** Validates the 2 bytes of a filestream request. Throws `unknown-code` / `unexpected-code`. */
export function decodeRequest(buf: Uint8Array, expected?: Request): Request {
  const text = Buffer.from(buf.buffer, buf.byteOffset, buf.length).toString('latin1');
  if (!(REQUESTS as readonly string[]).includes(text)) {
    throw new ProtocolError(
      'unknown-code',
      expected ? `request ${expected}` : 'a request !N, !Z, !M or !T',
      showBytes(buf),
    );
  }
  const r = text as Request;
  if (expected !== undefined && r !== expected) {
    throw new ProtocolError('unexpected-code', `request ${expected}`, `request ${r}`);
  }
  return r;
}

/**
 * Parses a decimal payload (file size, file count, cost, exit code). Surrounding spaces are
 * tolerated; anything else that is not digits is `bad-number`, above `max` `limit-exceeded`.
 */
export function parseDecimal(
  payload: Uint8Array | string,
  what: string,
  max = Number.MAX_SAFE_INTEGER,
): number {
  const raw =
    typeof payload === 'string'
      ? payload
      : Buffer.from(payload.buffer, payload.byteOffset, payload.length).toString('latin1');
  const text = raw.trim();
  if (!/^\d+$/.test(text) || text.length > MAX_DECIMAL_PAYLOAD) {
    throw new ProtocolError(
      'bad-number',
      `${what} as decimal digits`,
      showBytes(Buffer.from(raw, 'latin1')),
    );
  }
  const n = Number(text);
  if (!(n <= max)) throw new ProtocolError('limit-exceeded', `${what} of at most ${max}`, text);
  return n;
}

/** A short human form of a header for messages and logs: `!SSIF2`, `!C14`, `!E0 rake/1`. */
export function describeHeader(h: Header): string {
  if (h.kind === 'flagged') return `!S${h.flags}${h.length}`;
  return h.annex === undefined ? `${h.code}${h.length}` : `${h.code}${h.length} ${h.annex}`;
}

/** Asserts a plain header with one of `codes`; `unexpected-code` naming both otherwise. */
export function expectPlain<C extends PlainCode>(
  h: Header,
  ...codes: C[]
): Extract<Header, { kind: 'plain' }> & { code: C } {
  if (h.kind === 'plain' && (codes as PlainCode[]).includes(h.code)) {
    return h as Extract<Header, { kind: 'plain' }> & { code: C };
  }
  throw new ProtocolError('unexpected-code', `a ${codes.join(' or ')} header`, describeHeader(h));
}

/** Asserts a flagged header with one of `flags`; `unexpected-code` naming both otherwise. */
export function expectFlagged(h: Header, ...flags: Flags[]): Extract<Header, { kind: 'flagged' }> {
  if (h.kind === 'flagged' && flags.includes(h.flags)) return h;
  const want = flags.map((f) => `!S${f}`).join(' or ');
  throw new ProtocolError('unexpected-code', `a ${want} header`, describeHeader(h));
}
