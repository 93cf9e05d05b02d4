/**
 * The Rakefile lexer. A Rakefile is a list of lines, and each line is one token: its kind
 * is decided at the line's start by `classifyLine`, from the indentation and the first word
 * (docs/rakefile.md, "Indentation"). Blank and comment lines are skipped. Lines that cannot
 * be right go, whole, into the `invalid` token group with the reason attached, so the parser
 * only sees well-formed lines while every bad line still becomes a diagnostic.
 *
 * One token per line, rather than per word, keeps tokens few (a 100,000-action file has
 * 200,000 lines), and grammar/parse.ts runs the lexer over a block of lines at a time, so
 * few are alive at once (docs/benchmarks.md). What is inside a line is read by
 * grammar/lines.ts.
 */
import type { CustomPatternMatcherReturn, ILexingResult, IToken, TokenType } from 'chevrotain';
import { createToken, Lexer } from './chevrotain.js';
import type { DiagnosticCode } from './diagnostics.js';
import { contentEnd } from './lines.js';

/** What `classifyLine` found, for a line that may be right. */
export type LineKind = 'blank' | 'port' | 'hosts' | 'header' | 'action' | 'requires';

/** Why a line was set aside, and which characters to underline. */
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
const REMOTE_ONLY = /remote-[^\S\n]*(?:#[^\n]*)?(?:\n|$)/y;
const REQUIRES = 'requires';

/**
 * Decides what the line starting at `offset` is. Pure and cheap: it reads the indentation
 * and the first word (and more only for a line that turns out to be wrong).
 *
 * Tabs are canonical: one tab is an action, two tabs a `requires` line. Indentation holding
 * spaces is accepted too, and then the first word decides (`requires` or not), unless the
 * line looks like a header or a setting: that is ambiguous, so it is rejected.
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

  const isRequires = text.startsWith(REQUIRES, at) && isWordEnd(text, at + REQUIRES.length);
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
  if (
    spaces > 0 &&
    !text.startsWith('remote-', at) &&
    (matchesAt(HEADER_ONLY, text, at) ||
      matchesAt(PORT_LINE, text, at) ||
      matchesAt(HOSTS_LINE, text, at))
  ) {
    return invalid(text, 'indented-top-level', offset, at, at - offset);
  }
  if (text.startsWith('remote-', at) && matchesAt(REMOTE_ONLY, text, at)) {
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
  return at >= text.length || /[\s#]/.test(text.charAt(at));
}

function firstWordLength(text: string, at: number): number {
  const word = /[^\s#]+/y;
  word.lastIndex = at;
  return word.exec(text)?.[0].length ?? 1;
}

/** An invalid line: underline `length` characters from `start` (default: all its content). */
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

/** A token for one whole line (newline included): of `kind`, or any invalid line. */
function lineToken(
  name: string,
  kind: LineKind | 'invalid',
  options: { label?: string; group?: string } = {},
): TokenType {
  return createToken({
    name,
    ...options,
    line_breaks: true,
    pattern: {
      exec: (text, offset) => {
        const line = classifyLine(text, offset);
        const invalid = typeof line !== 'string';
        if (invalid ? kind !== 'invalid' : line !== kind) return null;
        const end = text.indexOf('\n', offset);
        const match: CustomPatternMatcherReturn = [
          text.slice(offset, end === -1 ? text.length : end + 1),
        ];
        if (invalid) match.payload = line;
        return match;
      },
    },
  });
}

// Labels are what grammar/rakefile.html shows in the railroad diagrams.
export const ActionLine = lineToken('ActionLine', 'action', { label: 'TAB [remote-]command' });
export const RequiresLine = lineToken('RequiresLine', 'requires', {
  label: 'TAB TAB requires path…',
});
export const BlankLine = lineToken('BlankLine', 'blank', { group: Lexer.SKIPPED });
export const PortLine = lineToken('PortLine', 'port', { label: 'PORT = port' });
export const HostsLine = lineToken('HostsLine', 'hosts', { label: 'HOSTS = host…' });
export const HeaderLine = lineToken('HeaderLine', 'header', { label: 'name:' });
/** A line that cannot be right; its payload is an `InvalidLine`. Never reaches the parser. */
export const InvalidLineToken = lineToken('InvalidLine', 'invalid', { group: 'invalid' });

/** Every token type the parser can see, for its vocabulary. */
export const parserTokens: readonly TokenType[] = [
  ActionLine,
  RequiresLine,
  PortLine,
  HostsLine,
  HeaderLine,
];

/**
 * The inside of each line token, in the EBNF of grammar/rakefile.ebnf. Kept beside the
 * classifier so a change to one shows up next to the other.
 */
export const lineSyntax: readonly string[] = [
  "PortLine     ::= 'PORT' blank* '=' blank* port? blank* comment? newline",
  "HostsLine    ::= 'HOSTS' blank* '=' blank* ( host ( blank+ host )* )? blank* comment? newline",
  "HeaderLine   ::= name blank* ':' blank* comment? newline",
  "ActionLine   ::= indent1 ( 'remote-' blank* )? command blank* comment? newline",
  "RequiresLine ::= indent2 'requires' ( blank+ path )* blank* comment? newline",
  '',
  '/* Tabs are canonical. Indentation holding spaces is accepted: then the first word',
  "   decides between indent1 and indent2 ('requires' or not), and a header or setting",
  '   indented with spaces is an error. A line of three or more tabs is an error. */',
  "indent1      ::= TAB | ( TAB | ' ' )* ' ' ( TAB | ' ' )*",
  "indent2      ::= TAB TAB | ( TAB | ' ' )* ' ' ( TAB | ' ' )*",
  '',
  'port         ::= [0-9]+                        /* 1..65535 */',
  "host         ::= hostname ( ':' port )? | ipv4 ( ':' port )? | '[' ipv6 ']' ( ':' port )?",
  'hostname     ::= [A-Za-z0-9_] [A-Za-z0-9_.-]*',
  'name         ::= [^ \\t:#=]+',
  "command      ::= [^#\\n]+                      /* first word not 'requires' */",
  'path         ::= [^ \\t#\\n]+',
  "comment      ::= '#' [^\\n]*",
  "blank        ::= ' ' | TAB | CR                 /* or other Unicode white space but LF */",
  'newline      ::= LF | EOF',
  'blank-line   ::= blank* comment? newline       /* ignored anywhere */',
];

/**
 * Builds the lexer. It holds no state between calls (line classification is a pure
 * function of the text), so one instance serves every parse. `validate` runs chevrotain's
 * checks of the token definitions (skipped at run time, run by the specs).
 */
export function createRakefileLexer(options: { validate?: boolean } = {}): {
  tokenize(text: string): ILexingResult;
} {
  const lexer = new Lexer(
    [ActionLine, RequiresLine, BlankLine, PortLine, HostsLine, HeaderLine, InvalidLineToken],
    {
      // Lines and columns come from a LineIndex, only for the nodes that need them.
      positionTracking: 'onlyOffset',
      ensureOptimizations: false,
      skipValidations: options.validate !== true,
    },
  );
  return { tokenize: (text) => lexer.tokenize(text) };
}

/** The payload `InvalidLine` tokens carry. */
export function invalidLineOf(token: IToken): InvalidLine | undefined {
  return token.payload as InvalidLine | undefined;
}
