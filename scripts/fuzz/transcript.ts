/**
 * Fuzzed byte streams as lists of pieces (a header, a name, a size, file bytes, ...), so a
 * mutation knows what it changes: both fuzzers build valid transcripts of PROTOCOL.md from
 * these builders and mutate them with {@link applyMutations}.
 */
export type PieceKind = 'header' | 'command' | 'name' | 'size' | 'content' | 'request' | 'junk';

/** A stretch of a session's bytes and what it is, so mutations know what they change. */
export interface Piece {
  readonly kind: PieceKind;
  readonly bytes: Buffer;
}

export const SPACE = 0x20;

/** A 64-byte header from its text, right-padded with spaces. */
export const header = (text: string): Piece => ({
  kind: 'header',
  bytes: Buffer.from(text.padEnd(64, ' '), 'latin1'),
});

/** A header with the payload's byte length, then the payload. */
export const packet = (head: string, kind: PieceKind, payload: Buffer | string): Piece[] => {
  const bytes = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  return [header(`${head}${bytes.length}`), { kind, bytes }];
};

/** A 2-byte filestream request (`!N`, `!Z`, `!T`). */
export const request = (r: string): Piece => ({ kind: 'request', bytes: Buffer.from(r, 'latin1') });

/**
 * The receiver's side of a filestream of `files` files: `!N`, `!Z`, `!T` for each (and `!M`
 * before `!T` on a connection with the `mode` extension).
 */
export const download = (files: number, modes = false): Piece[] =>
  Array.from({ length: files }, () => [
    request('!N'),
    request('!Z'),
    ...(modes ? [request('!M')] : []),
    request('!T'),
  ]).flat();

/**
 * The sender's side of a filestream: `!SSIF<n>`, then each file's name, size and bytes; a
 * file given with permission bits (octal text) also answers `!M` with them before its bytes.
 */
export const filestream = (
  files: ReadonlyArray<
    | readonly [string | Buffer, string | Buffer]
    | readonly [string | Buffer, string | Buffer, string]
  >,
): Piece[] => [
  header(`!SSIF${files.length}`),
  ...files.flatMap(([name, content, mode]) => {
    const body = typeof content === 'string' ? Buffer.from(content) : content;
    return [
      ...packet('!S!NF', 'name', name),
      ...packet('!S!ZF', 'size', String(body.length)),
      ...(mode === undefined ? [] : packet('!S!MF', 'size', mode)),
      { kind: 'content' as const, bytes: body },
    ];
  }),
];

/** Requirements as a client sends them: `!R0`, then a filestream. */
export const upload = (files: ReadonlyArray<readonly [string | Buffer, string | Buffer]>) => [
  header('!R0'),
  ...filestream(files),
];

/** `!D0`. */
export const disconnect = header('!D0');

/** `n` fixed, varied bytes (templates must not depend on anything but the seed). */
export function patternBytes(n: number, salt: number): Buffer {
  return Buffer.from(Array.from({ length: n }, (_, i) => (i * 73 + salt * 31 + 11) & 0xff));
}

export const LENGTHS = [
  '0',
  '1',
  '63',
  '64',
  '4096',
  '1048577',
  String(2 ** 40),
  String(2 ** 40 + 1),
  '9'.repeat(30),
  '-1',
  'abc',
  '1 2',
  '1.5',
  '0x10',
  '',
  '1e3',
  '+5',
];
export const CODES = [
  '!E',
  '!C',
  '!R',
  '!D',
  '!F',
  '!S',
  '!X',
  '!N',
  '!Z',
  '!T',
  '  ',
  '\0\0',
  '!s',
  'E!',
];
export const FLAG_SETS = [
  'S  ',
  'SI ',
  'SIF',
  '!NF',
  '!ZF',
  '   ',
  'XYZ',
  '123',
  's  ',
  '!!!',
  'SSS',
];
export const SIZES = [
  '-1',
  'abc',
  '9'.repeat(25),
  '1e3',
  ' 3',
  '3 ',
  '',
  '0',
  '18446744073709551616',
  '68719476737',
];

/** One mutation, drawn by fast-check; its numbers pick targets modulo what exists. */
export interface Mutation {
  readonly op: (typeof OPS)[number];
  readonly a: number;
  readonly b: number;
  readonly junk: Uint8Array;
}

export const OPS = [
  'length',
  'length-delta',
  'code',
  'flags',
  'name',
  'name-keep-length',
  'size',
  'content',
  'flip',
  'insert-junk',
  'insert-header',
  'delete',
  'duplicate',
  'swap',
  'splice',
  'pad-request',
  'leading-spaces',
  'truncate',
] as const;

export function pick<T>(items: readonly T[], n: number): T {
  const item = items[n % items.length];
  if (item === undefined) throw new Error('pick from an empty list');
  return item;
}

export function indexOfKind(pieces: readonly Piece[], kinds: readonly PieceKind[], n: number) {
  const at = pieces.flatMap((p, i) => (kinds.includes(p.kind) ? [i] : []));
  return at.length === 0 ? undefined : pick(at, n);
}

/** Rewrites a header's length field (everything after the code, or after `!S` + flags). */
export function withLength(h: Buffer, length: string): Buffer {
  const start = h[0] === 0x21 && h[1] === 0x53 ? 5 : 2;
  const out = Buffer.alloc(64, SPACE);
  h.copy(out, 0, 0, start);
  out.write(length.slice(0, 64 - start), start, 'latin1');
  return out;
}

export function headerLength(h: Buffer): number {
  const start = h[0] === 0x21 && h[1] === 0x53 ? 5 : 2;
  const n = Number(h.subarray(start).toString('latin1').trim());
  return Number.isSafeInteger(n) ? n : 0;
}

/** What mutations draw from: other transcripts to splice in, names, and random bytes. */
export interface MutationSources {
  /** Transcripts a `splice` inserts whole. */
  readonly splices: ReadonlyArray<readonly Piece[]>;
  /** Hostile file names a `name` mutation puts in place of a name. */
  readonly names: readonly Buffer[];
  /** Turns drawn bytes into the junk to insert (the server fuzzer keeps them shell-safe). */
  readonly junk: (bytes: Uint8Array) => Buffer;
}

/**
 * Applies `mutations` to a transcript and returns its bytes. Commands are never changed
 * byte by byte (see server-fuzz.ts); every other piece may be.
 */
export function applyMutations(
  base: readonly Piece[],
  mutations: readonly Mutation[],
  sources: MutationSources,
): Buffer {
  const { names, junk } = sources;
  let pieces = [...base];
  let truncateAt: number | undefined;
  const set = (i: number, piece: Piece) => {
    pieces[i] = piece;
  };
  for (const m of mutations) {
    switch (m.op) {
      case 'length':
      case 'length-delta': {
        const i = indexOfKind(pieces, ['header'], m.a);
        if (i === undefined) break;
        const h = (pieces[i] as Piece).bytes;
        const n = headerLength(h);
        const value =
          m.op === 'length'
            ? pick(LENGTHS, m.b)
            : String(Math.max(0, n + pick([-2, -1, 1, 2, 17, 100, 70_000], m.b)));
        set(i, { kind: 'header', bytes: withLength(h, value) });
        break;
      }
      case 'code': {
        const i = indexOfKind(pieces, ['header', 'request'], m.a);
        if (i === undefined) break;
        const bytes = Buffer.from((pieces[i] as Piece).bytes);
        bytes.write(pick(CODES, m.b), 0, 'latin1');
        set(i, { kind: (pieces[i] as Piece).kind, bytes });
        break;
      }
      case 'flags': {
        const i = indexOfKind(pieces, ['header'], m.a);
        if (i === undefined) break;
        const bytes = Buffer.from((pieces[i] as Piece).bytes);
        bytes.write(`!S${pick(FLAG_SETS, m.b)}`, 0, 'latin1');
        set(i, { kind: 'header', bytes });
        break;
      }
      case 'name':
      case 'name-keep-length': {
        const i = indexOfKind(pieces, ['name'], m.a);
        if (i === undefined) break;
        const name = pick(names, m.b);
        set(i, { kind: 'name', bytes: name });
        const h = pieces[i - 1];
        if (m.op === 'name' && h?.kind === 'header') {
          set(i - 1, { kind: 'header', bytes: withLength(h.bytes, String(name.length)) });
        }
        break;
      }
      case 'size': {
        const i = indexOfKind(pieces, ['size'], m.a);
        if (i === undefined) break;
        const size = pick(SIZES, m.b);
        set(i, { kind: 'size', bytes: Buffer.from(size, 'latin1') });
        const h = pieces[i - 1];
        if (h?.kind === 'header') {
          set(i - 1, { kind: 'header', bytes: withLength(h.bytes, String(size.length)) });
        }
        break;
      }
      case 'content': {
        const i = indexOfKind(pieces, ['content'], m.a);
        if (i === undefined) break;
        const old = (pieces[i] as Piece).bytes;
        const bytes =
          m.b % 2 === 0
            ? old.subarray(0, m.b % (old.length + 1))
            : Buffer.concat([old, junk(m.junk)]);
        set(i, { kind: 'content', bytes });
        break;
      }
      case 'flip': {
        const i = indexOfKind(
          pieces,
          ['header', 'name', 'size', 'content', 'request', 'junk'],
          m.a,
        );
        if (i === undefined) break;
        const bytes = Buffer.from((pieces[i] as Piece).bytes);
        if (bytes.length === 0) break;
        const safe = junk(m.junk.length > 0 ? m.junk : Uint8Array.of(m.b));
        for (let k = 0; k < Math.min(3, safe.length); k++) {
          bytes[(m.b + k * 7) % bytes.length] = safe[k] ?? SPACE;
        }
        set(i, { kind: (pieces[i] as Piece).kind, bytes });
        break;
      }
      case 'insert-junk':
        pieces.splice(m.a % (pieces.length + 1), 0, { kind: 'junk', bytes: junk(m.junk) });
        break;
      case 'insert-header': {
        const text = `${pick(CODES, m.a)}${pick(FLAG_SETS, m.b).trim()}${pick(LENGTHS, m.a + m.b)}`;
        pieces.splice(m.b % (pieces.length + 1), 0, header(text.slice(0, 64)));
        break;
      }
      case 'delete':
        if (pieces.length > 1) pieces.splice(m.a % pieces.length, 1 + (m.b % 2));
        break;
      case 'duplicate': {
        // A 'delete' may have left nothing: 0 % 0 is NaN, which would insert a hole.
        if (pieces.length === 0) break;
        const i = m.a % pieces.length;
        pieces.splice(i, 0, pieces[i] as Piece);
        break;
      }
      case 'swap': {
        if (pieces.length < 2) break;
        const i = m.a % (pieces.length - 1);
        const [x, y] = [pieces[i] as Piece, pieces[i + 1] as Piece];
        pieces[i] = y;
        pieces[i + 1] = x;
        break;
      }
      case 'splice': {
        const other = sources.splices.length > 0 ? pick(sources.splices, m.b) : [];
        pieces.splice(m.a % (pieces.length + 1), 0, ...other);
        break;
      }
      case 'pad-request': {
        const i = indexOfKind(pieces, ['request'], m.a);
        if (i === undefined) break;
        const r = (pieces[i] as Piece).bytes;
        const bytes =
          m.b % 2 === 0
            ? Buffer.concat([Buffer.alloc(m.b % 70, SPACE), r])
            : Buffer.from(r.toString('latin1').padEnd(64, ' '), 'latin1');
        set(i, { kind: 'request', bytes });
        break;
      }
      case 'leading-spaces':
        pieces.splice(m.a % (pieces.length + 1), 0, {
          kind: 'junk',
          bytes: Buffer.alloc(1 + (m.b % 200), SPACE),
        });
        break;
      case 'truncate':
        truncateAt = m.a;
        break;
    }
    if (pieces.length > 200) pieces = pieces.slice(0, 200);
  }
  const bytes = Buffer.concat(pieces.map((p) => p.bytes));
  return truncateAt === undefined ? bytes : bytes.subarray(0, truncateAt % (bytes.length + 1));
}
