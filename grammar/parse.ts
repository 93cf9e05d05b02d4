import { Buffer } from 'node:buffer';
import { open } from 'node:fs/promises';
import type { IToken } from 'chevrotain';
import { Analyzer, type ParseResult } from './analyze.js';
import { decodeRakefile } from './decode.js';
import type { Diagnostic } from './diagnostics.js';
import { Colon, classifyLine, createRakefileLexer, Name, type RakefileLexer } from './lexer.js';
import { RakefileParser } from './parser.js';
import { LineIndex } from './positions.js';

export type { ParseResult } from './analyze.js';

/** Options for `parseRakefile`. */
export interface ParseOptions {
  /** The label every position carries: the path as the user gave it, or `<stdin>`. */
  readonly file?: string;
}

/** What `readRakefile` returns: the parse, plus the text that diagnostics point into. */
export type ReadResult = ParseResult & {
  /** The decoded file (lossily, when it is not text), for `formatDiagnostics`. */
  readonly source: string;
};

// Chevrotain's self-analysis costs tens of milliseconds, so both are built once, on first use.
// Each lexer run starts from fresh state, and parsing is synchronous, so sharing is safe.
let shared: { lexer: RakefileLexer; parser: RakefileParser } | undefined;

/**
 * Parses a whole Rakefile. Never throws on bad input: the result is the model, or every
 * diagnostic the file deserves. `text` may be bytes, which are checked to be UTF-8 text.
 */
export function parseRakefile(text: string | Uint8Array, options: ParseOptions = {}): ParseResult {
  const file = options.file ?? '<input>';
  const decoded = decodeRakefile(text, file);
  if (!decoded.ok) return { ok: false, diagnostics: [decoded.diagnostic] };
  return parseText(decoded.text, file);
}

/**
 * Characters lexed and parsed at a time, at least. A large file is cut into pieces, each
 * starting at a setting or header line, or at an action line. At a setting or header every
 * rule of the grammar is closed and the indentation is back to level 0, so the piece is a
 * Rakefile of its own to chevrotain. A piece that starts at an action inside an actionset
 * gets a stand-in header token in front (the analyser knows it is one), so the actions
 * still parse as the actionset's. Only one piece's tokens are alive at a time
 * (docs/benchmarks.md); the analyser carries what spans pieces (names, settings, the open
 * actionset, a run of misplaced lines).
 */
const PIECE = 1 << 16;

/** The stand-in header of a piece that continues an actionset. */
const CONTINUED: readonly IToken[] = [Name, Colon].map(
  (type) =>
    ({ image: '', startOffset: -1, tokenTypeIdx: type.tokenTypeIdx, tokenType: type }) as IToken,
);

/**
 * Parses decoded text; `piece` is exported for the spec that checks that where the pieces
 * end changes nothing.
 */
export function parseText(text: string, file: string, piece = PIECE): ParseResult {
  shared ??= { lexer: createRakefileLexer(), parser: new RakefileParser() };
  const { lexer, parser } = shared;
  const analyzer = new Analyzer(text, new LineIndex(file, text));
  for (let start = 0; start < text.length; ) {
    const end = pieceEnd(text, start + piece);
    const lexed = lexer.tokenize(
      start === 0 && end === text.length ? text : text.slice(start, end),
    );
    const continued = start > 0 && analyzer.inActionset && classifyLine(text, start) === 'action';
    const tokens = continued ? [...CONTINUED, ...lexed.tokens] : lexed.tokens;
    analyzer.feed(lexed, parser.parse(tokens), start, continued);
    start = end;
  }
  return analyzer.finish();
}

/** The start of the first setting, header or action line at or after `from`, or the end. */
function pieceEnd(text: string, from: number): number {
  if (from >= text.length) return text.length;
  for (let at = text.indexOf('\n', from - 1); at !== -1; at = text.indexOf('\n', at + 1)) {
    const kind = classifyLine(text, at + 1);
    if (kind === 'port' || kind === 'hosts' || kind === 'header' || kind === 'action') {
      return at + 1;
    }
  }
  return text.length;
}

/**
 * Reads and parses the Rakefile at `path`. A file that cannot be read is a diagnostic too
 * (`cannot-read`), so callers handle one kind of failure.
 */
export async function readRakefile(
  path: string,
  options: ParseOptions & {
    /**
     * Given the decoded text before it is parsed, and awaited (the CLI dials the hosts it
     * names, and lets the connects leave before the parse holds the thread:
     * src/client/early-dial.ts).
     */
    readonly beforeParse?: (text: string) => undefined | Promise<void>;
  } = {},
): Promise<ReadResult> {
  const file = options.file ?? path;
  let bytes: Uint8Array;
  try {
    bytes = await readWhole(path);
  } catch (error: unknown) {
    return { ok: false, diagnostics: [cannotRead(file, error)], source: '' };
  }
  const decoded = decodeRakefile(bytes, file);
  if (!decoded.ok) return { ok: false, diagnostics: [decoded.diagnostic], source: decoded.text };
  await options.beforeParse?.(decoded.text);
  return { ...parseText(decoded.text, file), source: decoded.text };
}

/**
 * The file's bytes, read with as few system calls as possible (fs.promises.readFile reads in
 * 512 KiB pieces, which costs a large Rakefile more than parsing a fifth of it).
 */
async function readWhole(path: string): Promise<Uint8Array> {
  const handle = await open(path, 'r');
  try {
    let buffer = Buffer.allocUnsafe((await handle.stat()).size + 1);
    let length = 0;
    for (;;) {
      if (length === buffer.length) {
        const bigger = Buffer.allocUnsafe(buffer.length * 2);
        buffer.copy(bigger, 0, 0, length);
        buffer = bigger;
      }
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) return buffer.subarray(0, length);
      length += bytesRead;
    }
  } finally {
    await handle.close();
  }
}

function cannotRead(file: string, error: unknown): Diagnostic {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  const reason =
    code === 'ENOENT'
      ? 'no such file'
      : code === 'EISDIR'
        ? 'it is a directory'
        : code === 'EACCES'
          ? 'permission denied'
          : error instanceof Error
            ? error.message
            : String(error);
  return {
    code: 'cannot-read',
    position: { file, line: 1, column: 1 },
    message: `cannot read the Rakefile: ${reason}`,
    hint: 'check the path; rake-ts reads ./Rakefile unless given another with -f FILE or -C DIR',
  };
}
