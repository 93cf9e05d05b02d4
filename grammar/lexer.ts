/**
 * The Rakefile lexer: word-level chevrotain tokens, with lexer modes and indentation tokens
 * (docs/rakefile.md, "The grammar, generated").
 *
 * Every line starts in the `line` mode, where custom matchers read its indentation and first
 * word once (`classifyLine`) and decide what the line is:
 *
 * - a blank or comment line is skipped whole;
 * - a line in column 1 is `PORT`, `HOSTS` or an actionset `name`, each switching to the mode
 *   that reads the rest of that kind of line (`=`, values, `:`);
 * - an indented line is an action (mode `action`: `remote-`, then the rest of the line is one
 *   `command`) or a `requires` line (mode `requires`: the keyword, then `path` words).
 *
 * Indentation becomes INDENT and DEDENT tokens, as in chevrotain's Python-indentation example:
 * the matchers keep the current level in state that lives for one lexer run. An action is at
 * level 1, a `requires` line at level 2 under an action (at level 1 where nothing above owns
 * it, which the parser then reports), settings and headers at level 0.
 *
 * A line that cannot be right is matched by no token in the `line` mode: chevrotain reports
 * it as a lexing error and resumes at the next line a token matches (the `line` matchers
 * match only at the start of a line), so the parser never sees it and every such line gets
 * its own diagnostic (grammar/analyze.ts asks `classifyLine` why it was refused). Text after
 * a header's colon is a lexing error too: the `headerEnd` mode has no token for it.
 */
import type { CustomPatternMatcherReturn, ILexingResult, IToken, TokenType } from 'chevrotain';
import { createToken, Lexer } from './chevrotain.js';
import type { DiagnosticCode } from './diagnostics.js';
import { contentEnd, isBlank, skipIndent } from './lines.js';

/** What `classifyLine` found, for a line that may be right. */
export type LineKind = 'blank' | 'port' | 'hosts' | 'header' | 'action' | 'requires';

/** Why a line was refused, and which characters to underline. */
export interface InvalidLine {
  readonly code: DiagnosticCode;
  /** Offset of the first character to underline. */
  readonly start: number;
  readonly length: number;
  /** The line's content (indentation, comment and trailing blanks removed), for messages. */
  readonly content: string;
}

const PORT_LINE = /PORT[ \t]*=/y;
const HOSTS_LINE = /HOSTS[ \t]*=/y;
/** An actionset name (anything up to a blank, `:`, `#` or `=`), then the colon. */
const HEADER_LINE = /[^\s:#=]+[ \t]*:/y;
/** `name:` alone on its line (blanks and a comment allowed after it). */
const HEADER_ONLY = /[^\s:#=]+[ \t]*:[^\S\n]*(?:#[^\n]*)?(?:\n|$)/y;
/** What is left of a line that holds nothing: blanks, maybe a comment, the newline. */
const BLANK_REST = /[^\S\n]*(?:#[^\n]*)?(?:\n|$)/y;
const REQUIRES = 'requires';

/**
 * Decides what the line starting at `offset` is, from its indentation and first word (and
 * more only for a line that turns out to be wrong). The `line`-mode matchers call it once
 * per line; grammar/analyze.ts calls it again for a refused line, to say why.
 *
 * Tabs are canonical: one tab is an action, two tabs a `requires` line. Indentation holding
 * spaces is accepted too, and then the first word decides (`requires` or not), unless the
 * line looks like a header or a setting: that is ambiguous, so it is refused.
 */
export function classifyLine(text: string, offset: number): LineKind | InvalidLine {
  let at = offset;
  let tabs = 0;
  let spaces = 0;
  for (;;) {
    const c = text.charCodeAt(at);
    if (c === 9) tabs++;
    else if (c === 32) spaces++;
    else break;
    at++;
  }
  // Most lines start with a plain character: no need for the blank-line pattern.
  const first = text.charCodeAt(at);
  const plain = first > 32 && first < 127 && first !== 35;
  if (!plain && matchesAt(BLANK_REST, text, at)) return 'blank';

  if (at === offset) {
    if (matchesAt(PORT_LINE, text, at)) return 'port';
    if (matchesAt(HOSTS_LINE, text, at)) return 'hosts';
    if (matchesAt(HEADER_LINE, text, at)) return 'header';
    return invalid(text, 'unknown-line', at, at);
  }
  if (tabs >= 3) return invalid(text, 'too-many-tabs', offset, at, at - offset);

  const isRequires = first === 114 && text.startsWith(REQUIRES, at) && isWordEnd(text, at + 8);
  if (spaces === 0 && tabs === 2) {
    if (isRequires) return 'requires';
    return invalid(text, 'expected-requires', at, at, firstWordLength(text, at));
  }
  if (isRequires) {
    if (spaces === 0) return invalid(text, 'requires-one-tab', at, at, REQUIRES.length);
    return 'requires';
  }
  // `remote-` marks an action; anything else indented with spaces that reads as a header or
  // a setting is ambiguous.
  const remote = first === 114 && text.startsWith('remote-', at);
  if (
    spaces > 0 &&
    !remote &&
    (matchesAt(HEADER_ONLY, text, at) ||
      matchesAt(PORT_LINE, text, at) ||
      matchesAt(HOSTS_LINE, text, at))
  ) {
    return invalid(text, 'indented-top-level', offset, at, at - offset);
  }
  if (remote && isLineEnd(text, skipBlanks(text, at + 'remote-'.length))) {
    return invalid(text, 'remote-without-command', at, at, 'remote-'.length);
  }
  return 'action';
}

function matchesAt(pattern: RegExp, text: string, at: number): boolean {
  pattern.lastIndex = at;
  return pattern.test(text);
}

/** True when `at` ends a word: a blank, a comment, the end of the line or of the text. */
function isWordEnd(text: string, at: number): boolean {
  const c = text.charCodeAt(at);
  return Number.isNaN(c) || c === 10 || c === 35 || isBlank(c);
}

/** True when nothing but a comment is left on the line at `at`. */
function isLineEnd(text: string, at: number): boolean {
  const c = text.charCodeAt(at);
  return Number.isNaN(c) || c === 10 || c === 35;
}

function skipBlanks(text: string, at: number): number {
  while (isBlank(text.charCodeAt(at))) at++;
  return at;
}

function firstWordLength(text: string, at: number): number {
  const word = /[^\s#]+/y;
  word.lastIndex = at;
  return word.exec(text)?.[0].length ?? 1;
}

/** A refused line: underline `length` characters from `start` (default: all its content). */
function invalid(
  text: string,
  code: DiagnosticCode,
  start: number,
  contentStart: number,
  length?: number,
): InvalidLine {
  const stop = contentEnd(text, contentStart);
  const content = text.slice(contentStart, stop);
  return { code, start, length: length ?? Math.max(1, stop - start), content };
}

// ---- state of one lexer run ------------------------------------------------------------------

/**
 * What the `line`-mode matchers remember while one text is lexed: the indentation level so
 * far, what the last line was, and the classification of the line they are looking at (each
 * matcher of the mode asks about the same line; it is classified once).
 */
interface RunState {
  level: 0 | 1 | 2;
  last: LineKind | undefined;
  lineOffset: number;
  line: LineKind | InvalidLine | undefined;
}

/** The state of the run in progress; `tokenizeRakefile` sets a fresh one for each run. */
let run: RunState = freshState();

function freshState(): RunState {
  return { level: 0, last: undefined, lineOffset: -1, line: undefined };
}

/** The classification of the line starting at `offset`, or undefined mid-line. */
function lineAt(text: string, offset: number): LineKind | InvalidLine | undefined {
  // Mid-line offsets are only tried while chevrotain skips a refused line: no match there,
  // so it resumes at the next line.
  if (offset !== 0 && text.charCodeAt(offset - 1) !== 10) return undefined;
  if (run.lineOffset !== offset) {
    run.lineOffset = offset;
    run.line = classifyLine(text, offset);
  }
  return run.line;
}

/**
 * A line of `kind` starts at `offset`: emits the INDENT or DEDENT tokens that take the level
 * from the last line's to this one's. A `requires` line is at level 2 only under an action
 * (or under another `requires` line there); elsewhere it stays at level 1, where the parser
 * finds it in the place of an action and reports it.
 */
function enterLine(kind: LineKind, offset: number, tokens: IToken[]): void {
  const target =
    kind === 'action'
      ? 1
      : kind === 'requires'
        ? run.last === 'action' || (run.last === 'requires' && run.level === 2)
          ? 2
          : 1
        : 0;
  while (run.level < target) {
    tokens.push(levelToken(Indent, offset));
    run.level++;
  }
  while (run.level > target) {
    tokens.push(levelToken(Dedent, offset));
    run.level--;
  }
  run.last = kind;
}

/**
 * An INDENT or DEDENT at `offset`. Built in the shape of the lexer's own tokens (with
 * `positionTracking: 'onlyOffset'`: image, startOffset, tokenTypeIdx, tokenType), not with
 * createTokenInstance's wider one, so the parser sees tokens of one shape: mixing two made
 * its token accesses polymorphic, and parsing measurably slower.
 */
function levelToken(type: TokenType, offset: number): IToken {
  return {
    image: '',
    startOffset: offset,
    tokenTypeIdx: type.tokenTypeIdx as number,
    tokenType: type,
  } as IToken;
}

/**
 * A `line`-mode token: matches where the line starting at `offset` is of `kind`, consuming
 * `length(text, offset)` characters.
 */
function lineStart(
  kind: LineKind,
  length: (text: string, offset: number) => number,
): (text: string, offset: number, tokens: IToken[]) => CustomPatternMatcherReturn | null {
  return (text, offset, tokens) => {
    if (lineAt(text, offset) !== kind) return null;
    if (kind !== 'blank') enterLine(kind, offset, tokens);
    const n = length(text, offset);
    // The usual indentation, without a new string and array per line.
    if (n >= 1 && n <= 2 && text.startsWith(TABS[n] as string, offset))
      return TAB_MATCHES[n] ?? null;
    return [text.slice(offset, offset + n)];
  };
}

const TABS = ['', '\t', '\t\t'];
const TAB_MATCHES: readonly CustomPatternMatcherReturn[] = [[''], ['\t'], ['\t\t']];
/** A bare newline, the usual end of a line, without a new array per line. */
const NEWLINE: CustomPatternMatcherReturn = ['\n'];

/** Length of the indentation (tabs and spaces) at `offset`. */
function indentLength(text: string, offset: number): number {
  return skipIndent(text, offset) - offset;
}

/** Length of the line at `offset`, its newline included. */
function lineLength(text: string, offset: number): number {
  const end = text.indexOf('\n', offset);
  return end === -1 ? text.length - offset : end + 1 - offset;
}

/** An actionset name, as the `Name` token reads it. */
export const NAME = /[^\s:#=]+/y;
/** Trailing blanks, a comment and the newline (or the end of the text). */
const LINE_END = /[^\S\n]*(?:#[^\n]*)?(?:\n|$)/y;
/** The rest of a line's content: from a non-blank to the last non-blank before `#`. */
const REST = /[^\s#](?:[^#\n]*[^\s#])?/;
/** One blank-separated word. */
const WORD = /[^\s#]+/;

// ---- first characters -------------------------------------------------------------------------

/**
 * Every character `\s` matches but the newline (ECMAScript's WhiteSpace and LineTerminator):
 * what a blank can start with.
 */
const BLANK_CHARS: readonly number[] = [
  0x09, 0x0b, 0x0c, 0x0d, 0x20, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005,
  0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff,
];

/**
 * `start_chars_hint` for a token that can start with any character but `except` and the
 * blanks. With a hint on every token of a mode, chevrotain's lexer picks the tokens to try
 * by the next character instead of trying each in turn (its "first char optimization",
 * which it cannot work out by itself from a negated character class). Above 255 it groups
 * characters 255 to a bucket, so one character per bucket stands for the bucket (every
 * bucket holds characters that are not blanks).
 */
function startCharsExcept(except: string): number[] {
  const codes: number[] = [];
  for (let c = 0; c < 256; c++) {
    if (c !== 10 && !except.includes(String.fromCharCode(c)) && !BLANK_CHARS.includes(c)) {
      codes.push(c);
    }
  }
  for (let c = 256; c < 65536; c += 255) codes.push(c);
  return codes;
}

const WORD_START = startCharsExcept('#');
const LINE_END_START = [...BLANK_CHARS, 10, 35];

// ---- tokens ---------------------------------------------------------------------------------

// Labels are what grammar/rakefile.html and grammar/rakefile.ebnf show.

/** Level up: the first action under a header, the first `requires` line under an action. */
export const Indent = createToken({ name: 'Indent', label: 'INDENT', pattern: Lexer.NA });
/** Level down: emitted before the line that goes back out. */
export const Dedent = createToken({ name: 'Dedent', label: 'DEDENT', pattern: Lexer.NA });

/** A line holding only blanks and maybe a comment: skipped wherever it is. */
export const BlankLine = createToken({
  name: 'BlankLine',
  group: Lexer.SKIPPED,
  line_breaks: true,
  start_chars_hint: LINE_END_START,
  pattern: { exec: lineStart('blank', lineLength) },
});
/** The indentation of an action line; the rest of the line is read in the `action` mode. */
export const ActionIndent = createToken({
  name: 'ActionIndent',
  group: Lexer.SKIPPED,
  push_mode: 'action',
  start_chars_hint: ['\t', ' '],
  pattern: { exec: lineStart('action', indentLength) },
});
/** The indentation of a `requires` line; the rest is read in the `requires` mode. */
export const RequiresIndent = createToken({
  name: 'RequiresIndent',
  group: Lexer.SKIPPED,
  push_mode: 'requires',
  start_chars_hint: ['\t', ' '],
  pattern: { exec: lineStart('requires', indentLength) },
});
export const Port = createToken({
  name: 'Port',
  label: "'PORT'",
  push_mode: 'port',
  start_chars_hint: ['P'],
  pattern: { exec: lineStart('port', () => 'PORT'.length) },
});
export const Hosts = createToken({
  name: 'Hosts',
  label: "'HOSTS'",
  push_mode: 'hosts',
  start_chars_hint: ['H'],
  pattern: { exec: lineStart('hosts', () => 'HOSTS'.length) },
});
/** An actionset's name, in column 1, before its colon. */
export const Name = createToken({
  name: 'Name',
  label: 'name',
  push_mode: 'header',
  start_chars_hint: startCharsExcept(':#='),
  pattern: {
    exec: lineStart('header', (text, offset) => {
      NAME.lastIndex = offset;
      return NAME.exec(text)?.[0].length ?? 0;
    }),
  },
});

/** Blanks inside a line (every white space but the newline). */
export const Blank = createToken({
  name: 'Blank',
  group: Lexer.SKIPPED,
  start_chars_hint: BLANK_CHARS as number[],
  pattern: /[^\S\n]+/,
});
/**
 * Trailing blanks, a comment and the newline (or the end of the text): ends every mode. The
 * parser needs no newline token: each line starts with a token of its own (a keyword, a
 * name, an action's first token), and INDENT and DEDENT carry the nesting.
 */
export const LineEnd = createToken({
  name: 'LineEnd',
  group: Lexer.SKIPPED,
  line_breaks: true,
  pop_mode: true,
  start_chars_hint: LINE_END_START,
  pattern: {
    exec: (text, offset) => {
      if (text.charCodeAt(offset) === 10) return NEWLINE;
      LINE_END.lastIndex = offset;
      const match = LINE_END.exec(text);
      return match === null || match[0].length === 0 ? null : [match[0]];
    },
  },
});
/**
 * White space other than tabs and spaces between an action's indentation and its first
 * word: the `remote-` prefix counts only right after the indentation, so what follows is
 * a command (`\t\vremote-x` runs `remote-x` here, as it always has).
 */
export const ActionBlank = createToken({
  name: 'ActionBlank',
  group: Lexer.SKIPPED,
  start_chars_hint: BLANK_CHARS as number[],
  pattern: /[^\S\n]+/,
  pop_mode: true,
  push_mode: 'command',
});
export const PortEquals = createToken({
  name: 'PortEquals',
  label: "'='",
  pattern: '=',
  pop_mode: true,
  push_mode: 'portValue',
});
export const HostsEquals = createToken({
  name: 'HostsEquals',
  label: "'='",
  pattern: '=',
  pop_mode: true,
  push_mode: 'hostWords',
});
/** The value of `PORT`: the rest of the line's content (checked to be a port by the analyser). */
export const PortValue = createToken({
  name: 'PortValue',
  label: 'port',
  start_chars_hint: WORD_START,
  pattern: REST,
});
/** One `HOSTS` entry (read by grammar/hosts.ts). */
export const HostWord = createToken({
  name: 'HostWord',
  label: 'host',
  start_chars_hint: WORD_START,
  pattern: WORD,
});
export const Colon = createToken({
  name: 'Colon',
  label: "':'",
  pattern: ':',
  pop_mode: true,
  push_mode: 'headerEnd',
});
export const Remote = createToken({
  name: 'Remote',
  label: "'remote-'",
  pattern: 'remote-',
  pop_mode: true,
  push_mode: 'command',
});
/** "The rest of the line is a command": up to a comment, trailing blanks removed. */
export const Command = createToken({
  name: 'Command',
  label: 'command',
  start_chars_hint: WORD_START,
  pattern: REST,
});
export const Requires = createToken({
  name: 'Requires',
  label: "'requires'",
  pattern: REQUIRES,
  pop_mode: true,
  push_mode: 'paths',
});
export const Path = createToken({
  name: 'Path',
  label: 'path',
  start_chars_hint: WORD_START,
  pattern: WORD,
});

/**
 * What the tokens with custom matchers accept, for grammar/rakefile.ebnf (the others show
 * their own patterns). Built from the patterns the matchers use.
 */
export const customTokenSyntax: ReadonlyMap<TokenType, string> = new Map([
  [Indent, "'' /* emitted before a line one level deeper than the last */"],
  [Dedent, "'' /* emitted before a line one level shallower, and at the end */"],
  [BlankLine, `( TAB | ' ' )* /${BLANK_REST.source}/ /* a whole line */`],
  [
    ActionIndent,
    "( TAB | ( TAB | ' ' )* ' ' ( TAB | ' ' )* ) /* before a first word that is not 'requires'; with a space, not before a header or setting */",
  ],
  [
    RequiresIndent,
    "( TAB TAB | ( TAB | ' ' )* ' ' ( TAB | ' ' )* ) /* before the word 'requires' */",
  ],
  [Port, `'PORT' /* in column 1, before /${PORT_LINE.source.slice(4)}/ */`],
  [Hosts, `'HOSTS' /* in column 1, before /${HOSTS_LINE.source.slice(5)}/ */`],
  [
    Name,
    `/${NAME.source}/ /* in column 1, before /${HEADER_LINE.source.slice(NAME.source.length)}/ */`,
  ],
  [LineEnd, `/${LINE_END.source}/`],
]);

/** The lexer's modes, each with its tokens in the order they are tried. */
export const lexerModes: Readonly<Record<string, readonly TokenType[]>> = {
  // The most frequent first: each is tried in turn.
  line: [ActionIndent, RequiresIndent, BlankLine, Name, Port, Hosts],
  port: [Blank, PortEquals],
  portValue: [Blank, PortValue, LineEnd],
  hosts: [Blank, HostsEquals],
  hostWords: [Blank, HostWord, LineEnd],
  header: [Blank, Colon],
  // Nothing but blanks and a comment may follow a header's colon: anything else is a
  // lexing error (header-trailing-text).
  headerEnd: [Blank, LineEnd],
  action: [ActionBlank, Remote, Command, LineEnd],
  command: [Blank, Command, LineEnd],
  requires: [Requires],
  paths: [Blank, Path, LineEnd],
};

/** Every token type the parser can see, for its vocabulary. */
export const parserTokens: readonly TokenType[] = [
  Indent,
  Dedent,
  Port,
  Hosts,
  Name,
  PortEquals,
  HostsEquals,
  PortValue,
  HostWord,
  Colon,
  Remote,
  Command,
  Requires,
  Path,
];

/** What a lexer run gives: chevrotain's result, with the last DEDENTs added. */
export type RakefileLexer = { tokenize(text: string): ILexingResult };

/**
 * Builds the lexer. One instance serves every parse: its only state is the run's, reset at
 * the start of each `tokenize`. `validate` runs chevrotain's checks of the token definitions
 * (skipped at run time, run by the specs).
 */
export function createRakefileLexer(options: { validate?: boolean } = {}): RakefileLexer {
  const lexer = new Lexer(
    { modes: lexerModes as Record<string, TokenType[]>, defaultMode: 'line' },
    {
      // Lines and columns come from a LineIndex, only for the nodes that need them.
      positionTracking: 'onlyOffset',
      ensureOptimizations: false,
      skipValidations: options.validate !== true,
    },
  );
  return {
    tokenize(text) {
      run = freshState();
      const result = lexer.tokenize(text);
      const tokens = result.tokens;
      // Every level is closed at the end.
      for (; run.level > 0; run.level--) tokens.push(levelToken(Dedent, text.length));
      run = freshState();
      return result;
    },
  };
}
