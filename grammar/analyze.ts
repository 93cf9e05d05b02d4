/**
 * From lines to model: receives the parser's lines in file order (as a `LineSink`), reads
 * inside each, and checks everything the grammar cannot (ports, hosts, names, what belongs
 * to what), collecting every problem so a wrong Rakefile gets all its diagnostics at once.
 */
import type { ILexingResult, IToken } from 'chevrotain';
import type { Diagnostic, DiagnosticCode } from './diagnostics.js';
import { parseHostEntry, parsePortNumber } from './hosts.js';
import { type InvalidLine, invalidLineOf } from './lexer.js';
import {
  type ActionParts,
  contentEnd,
  isBlank,
  readAction,
  readHeader,
  readSetting,
  readWords,
  skipBlanks,
  skipIndent,
} from './lines.js';
import type {
  Action,
  Actionset,
  HostSpec,
  Rakefile,
  Requirement,
  SourcePosition,
} from './model.js';
import { DEFAULT_PORT } from './model.js';
import type { LineSink, RakefileParser } from './parser.js';
import type { LineIndex } from './positions.js';

/** Either a whole model or the reasons there is none; never both, never half a model. */
export type ParseResult =
  | { readonly ok: true; readonly rakefile: Rakefile }
  | { readonly ok: false; readonly diagnostics: readonly Diagnostic[] };

/** Rejected lines that may have been meant as an actionset header. */
const BROKEN_HEADER: ReadonlySet<DiagnosticCode> = new Set(['unknown-line', 'indented-top-level']);

/** Longest excerpt of a line quoted in a message. */
const QUOTE_MAX = 40;

const INDENT_HINT = 'indent actions with one tab and their `requires` lines with two';
const ACTIONSET_HINT =
  'a Rakefile needs at least one actionset: a line `name:` followed by commands indented with one tab';
const PORT_HINT = 'PORT must be an integer between 1 and 65535, as in `PORT = 6238`';
const REQUIRES_HINT =
  'a `requires` line lists the files of the action just above it; put it under that action, indented with two tabs';

interface HostEntryAt {
  readonly host: string;
  readonly port: number | undefined;
  readonly offset: number;
}

/** The actionset whose header was read last, while its lines are still coming. */
interface OpenActionset {
  readonly name: string;
  readonly offset: number;
  readonly actions: Action[];
  /** A misplaced `requires` line was reported already (one per actionset is enough). */
  strayReported: boolean;
}

/** Consecutive actions with no header above them, reported together. */
interface StrayRun {
  /** Start of the first one's line. */
  readonly first: number;
  /** Start of the line before the run, to spot a broken header there. */
  readonly after: number;
  count: number;
}

/** A line the lexer rejected: where it starts, and why. */
interface RejectedLine {
  readonly offset: number;
  readonly code: DiagnosticCode;
}

/**
 * Builds one Rakefile's model. The lexer and parser run over the text a block of lines at
 * a time (grammar/parse.ts); `feed` takes each block's tokens, whose offsets count from
 * `base`, the block's start in the whole text. Everything here works on whole-text offsets.
 */
export class Analyzer implements LineSink {
  readonly #text: string;
  readonly #lines: LineIndex;
  /** Offset of the current block in the whole text. */
  #base = 0;
  readonly #rejected: RejectedLine[] = [];
  readonly #found: { offset: number; diagnostic: Diagnostic }[] = [];

  /** The first PORT line; `value` stays undefined when that line is wrong. */
  #port: { value: number | undefined; line: number } | undefined;
  /** The first HOSTS line, with its valid entries. */
  #hosts: { entries: HostEntryAt[]; line: number } | undefined;
  readonly #actionsets: Actionset[] = [];
  /** Actionset names, and the line each was first defined on. */
  readonly #names = new Map<string, number>();
  #open: OpenActionset | undefined;
  /** The last action line, while `requires` lines may still follow it, and their files. */
  #pending: { readonly parts: ActionParts; readonly position: SourcePosition } | undefined;
  readonly #pendingRequires: Requirement[] = [];
  #strayRun: StrayRun | undefined;
  /** Start of the last line handed over, and how many there were. */
  #previousLine = 0;
  #lineCount = 0;
  #remoteActions = 0;
  #firstRemote: number | undefined;
  /** Start of a PORT/HOSTS line that came after an actionset (and so ended it), for hints. */
  #settingAfterActionset: number | undefined;

  constructor(text: string, lines: LineIndex) {
    this.#text = text;
    this.#lines = lines;
  }

  /** Hands over one block: its rejected lines, then its lines through `parser`. */
  feed(lexed: ILexingResult, base: number, parser: RakefileParser): void {
    this.#base = base;
    for (const token of lexed.groups.invalid ?? []) this.#invalidLine(token);
    const errors = parser.parse(lexed.tokens, this);
    if (errors.length > 0) {
      // Every sequence of line tokens is in the grammar; reaching this is a bug, not bad input.
      throw new Error(`Rakefile parser failed: ${String((errors[0] as Error).message)}`);
    }
  }

  // ---- LineSink ----------------------------------------------------------------------------

  port(line: IToken): void {
    const offset = this.#base + line.startOffset;
    this.#topLevel(offset);
    this.#portSetting(offset);
    this.#handled(offset);
  }

  hosts(line: IToken): void {
    const offset = this.#base + line.startOffset;
    this.#topLevel(offset);
    this.#hostsSetting(offset);
    this.#handled(offset);
  }

  header(line: IToken): void {
    const offset = this.#base + line.startOffset;
    this.#topLevel(offset);
    this.#settingAfterActionset = undefined;
    const { name, trailing } = readHeader(this.#text, offset);
    const first = this.#names.get(name);
    if (first !== undefined) {
      this.#report('repeated-actionset', offset, name.length, {
        message: `actionset ${quote(name)} is defined twice`,
        hint: `the first \`${name}:\` is on line ${first}; give each actionset its own name`,
      });
    } else {
      this.#names.set(name, this.#lines.lineOf(offset));
    }
    if (trailing !== undefined) {
      const junk = this.#text.slice(trailing.start, trailing.end);
      this.#report('header-trailing-text', trailing.start, trailing.end - trailing.start, {
        message: `unexpected ${quote(junk)} after actionset header \`${name}:\``,
        hint: 'a header is only `name:`; put each command on its own line below it, indented with one tab',
      });
    }
    this.#open = { name, offset, actions: [], strayReported: false };
    this.#handled(offset);
  }

  action(line: IToken): void {
    const offset = this.#base + line.startOffset;
    this.#closeAction();
    const parts = readAction(this.#text, offset);
    if (parts.remote) {
      this.#remoteActions++;
      this.#firstRemote ??= parts.start;
    }
    // The position now, while the line index's cursor is on this line.
    this.#pending = { parts, position: this.#lines.position(parts.start) };
    if (this.#open === undefined) {
      if (this.#strayRun !== undefined) this.#strayRun.count++;
      else this.#strayRun = { first: offset, after: this.#previousLine, count: 1 };
    }
    this.#handled(offset);
  }

  requires(line: IToken): void {
    const text = this.#text;
    const offset = this.#base + line.startOffset;
    const keyword = skipIndent(text, offset);
    if (this.#pending === undefined) this.#strayRequires(keyword);
    else {
      // The paths: blank-separated words up to the end of the content.
      const requires = this.#pendingRequires;
      const lineNumber = this.#lines.lineOf(offset);
      const stop = contentEnd(text, keyword);
      let at = skipBlanks(text, keyword + 'requires'.length);
      while (at < stop) {
        const start = at;
        while (at < stop && !isBlank(text.charCodeAt(at))) at++;
        requires.push({
          path: text.slice(start, at),
          position: this.#lines.positionOn(lineNumber, start),
        });
        at = skipBlanks(text, at);
      }
    }
    this.#handled(offset);
  }

  /** Builds the last action, now that no more `requires` lines can follow it. */
  #closeAction(): void {
    const pending = this.#pending;
    if (pending === undefined) return;
    const { parts, position } = pending;
    this.#pending = undefined;
    // Copied, so each action's array is exactly as long as it needs to be.
    const requires = this.#pendingRequires.slice();
    this.#pendingRequires.length = 0;
    this.#open?.actions.push({
      command: this.#text.slice(parts.commandStart, parts.commandEnd),
      remote: parts.remote,
      requires,
      position,
    });
  }

  /** Once every line has been handed over: the model, or every diagnostic. */
  finish(): ParseResult {
    this.#topLevel(this.#text.length);
    this.#checkWhole();
    if (this.#found.length > 0) {
      const sorted = this.#found.sort((a, b) => a.offset - b.offset);
      return { ok: false, diagnostics: sorted.map((f) => f.diagnostic) };
    }
    const port = this.#port?.value ?? DEFAULT_PORT;
    const hosts: HostSpec[] = (this.#hosts?.entries ?? []).map((h) => ({
      host: h.host,
      port: h.port ?? port,
      position: this.#lines.position(h.offset),
    }));
    return {
      ok: true,
      rakefile: { file: this.#lines.file, port, hosts, actionsets: this.#actionsets },
    };
  }

  #handled(offset: number): void {
    this.#previousLine = offset;
    this.#lineCount++;
  }

  /** A line in column 1 at `offset` (or the end) ends the open actionset and stray run. */
  #topLevel(offset: number): void {
    this.#closeAction();
    const open = this.#open;
    if (open !== undefined) {
      if (open.actions.length === 0 && !this.#hasInvalidBetween(open.offset, offset)) {
        this.#report('empty-actionset', open.offset, open.name.length, {
          message: `actionset ${quote(open.name)} has no actions`,
          hint: `add commands below \`${open.name}:\`, indented with one tab, or delete the header`,
        });
      }
      this.#actionsets.push({
        name: open.name,
        actions: open.actions,
        position: this.#lines.position(open.offset),
      });
      this.#open = undefined;
    }
    if (this.#strayRun !== undefined) {
      this.#reportStrayRun(this.#strayRun);
      this.#strayRun = undefined;
    }
  }

  /** Problems of the file as a whole, found once every line has been read. */
  #checkWhole(): void {
    if (this.#hosts === undefined && this.#firstRemote !== undefined) {
      const count = this.#remoteActions;
      this.#report('remote-without-hosts', this.#firstRemote, 'remote-'.length, {
        message: `remote action but no HOSTS line${count > 1 ? ` (${count} remote actions in all)` : ''}`,
        hint: 'add `HOSTS = host1 host2` (for a test, `HOSTS = localhost`), or drop `remote-` to run the action here',
      });
    }
    if (this.#lineCount === 0 && this.#rejected.length === 0) {
      this.#report('empty-file', 0, 1, {
        message:
          this.#text.trim() === ''
            ? 'the Rakefile is empty'
            : 'the Rakefile holds only comments and blank lines',
        hint: ACTIONSET_HINT,
      });
    } else if (this.#actionsets.length === 0 && this.#found.length === 0) {
      this.#report('no-actionsets', 0, 1, {
        message: 'the Rakefile has no actionsets, so nothing would run',
        hint: ACTIONSET_HINT,
      });
    }
  }

  // ---- settings ----------------------------------------------------------------------------

  #portSetting(offset: number): void {
    const line = this.#lines.lineOf(offset);
    if (this.#port !== undefined) {
      this.#report('repeated-setting', offset, 'PORT'.length, {
        message: 'PORT is set twice',
        hint: `PORT is already set on line ${this.#port.line}; keep one PORT line`,
      });
    }
    this.#noteSetting(offset);
    this.#port ??= { value: undefined, line };
    const port = this.#port;
    const { after } = readSetting(this.#text, offset);
    const words = readWords(this.#text, after);
    const first = words[0];
    if (first === undefined) {
      this.#report('invalid-port', after, 1, { message: 'PORT has no value', hint: PORT_HINT });
      return;
    }
    const end = contentEnd(this.#text, first.start);
    const value = this.#text.slice(first.start, end);
    const number = parsePortNumber(value);
    if (number === undefined) {
      const message = /^[0-9]+$/.test(value)
        ? `PORT ${quote(value)} is out of range`
        : `PORT ${quote(value)} is not a port number`;
      this.#report('invalid-port', first.start, end - first.start, { message, hint: PORT_HINT });
      return;
    }
    if (port.line === line) port.value = number;
  }

  #hostsSetting(offset: number): void {
    const line = this.#lines.lineOf(offset);
    if (this.#hosts !== undefined) {
      this.#report('repeated-setting', offset, 'HOSTS'.length, {
        message: 'HOSTS is set twice',
        hint: `list every host on one HOSTS line (the first is on line ${this.#hosts.line})`,
      });
    }
    this.#noteSetting(offset);
    const { after } = readSetting(this.#text, offset);
    const words = readWords(this.#text, after);
    if (words.length === 0) {
      this.#report('no-hosts', after, 1, {
        message: 'HOSTS lists no hosts',
        hint: 'name at least one host, as in `HOSTS = localhost`, or delete the line if every action is local',
      });
    }
    const entries: HostEntryAt[] = [];
    for (const word of words) {
      const entry = parseHostEntry(this.#text.slice(word.start, word.end));
      if (entry.ok) entries.push({ host: entry.host, port: entry.port, offset: word.start });
      else {
        this.#report('invalid-host', word.start + entry.start, entry.length, entry);
      }
    }
    this.#hosts ??= { entries, line };
  }

  #noteSetting(offset: number): void {
    if (this.#names.size > 0) this.#settingAfterActionset = offset;
  }

  // ---- misplaced lines --------------------------------------------------------------------

  #reportStrayRun(run: StrayRun): void {
    const first = readAction(this.#text, run.first);
    // A broken header above them has its own diagnostic; do not pile on.
    if (this.#hasInvalidBetween(run.after, first.start, BROKEN_HEADER)) return;
    const suffix = run.count > 1 ? ` (and ${run.count - 1} more after it)` : '';
    const length = first.commandEnd - first.start;
    const setting = this.#settingAfterActionset;
    if (setting === undefined) {
      this.#report('action-before-actionset', first.start, length, {
        message: `action before any actionset${suffix}`,
        hint: 'start an actionset with a header line `name:` above it',
      });
    } else {
      const keyword = this.#text.startsWith('PORT', setting) ? 'PORT' : 'HOSTS';
      this.#report('action-before-actionset', first.start, length, {
        message: `action outside any actionset${suffix}`,
        hint: `the ${keyword} line on line ${this.#lines.lineOf(setting)} ended the actionset above; move it before the first actionset`,
      });
    }
  }

  #strayRequires(keyword: number): void {
    const open = this.#open;
    if (open === undefined) {
      this.#report('requires-before-action', keyword, 'requires'.length, {
        message: '`requires` line outside any actionset',
        hint: REQUIRES_HINT,
      });
      return;
    }
    // One per actionset; and none when the action above was a rejected line.
    if (open.strayReported || this.#hasInvalidBetween(open.offset, keyword)) return;
    open.strayReported = true;
    this.#report('requires-before-action', keyword, 'requires'.length, {
      message: `\`requires\` line before any action of actionset ${quote(open.name)}`,
      hint: REQUIRES_HINT,
    });
  }

  // ---- lines the lexer set aside -----------------------------------------------------------

  #invalidLine(token: IToken): void {
    const problem = invalidLineOf(token);
    if (problem === undefined) return;
    const base = this.#base;
    this.#rejected.push({ offset: base + token.startOffset, code: problem.code });
    this.#report(problem.code, base + problem.start, problem.length, describeInvalidLine(problem));
  }

  /** True when a rejected line (with one of `codes`, if given) starts in `[from, to)`. */
  #hasInvalidBetween(from: number, to: number, codes?: ReadonlySet<DiagnosticCode>): boolean {
    const rejected = this.#rejected;
    let lo = 0;
    let hi = rejected.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((rejected[mid]?.offset ?? 0) < from) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < rejected.length; i++) {
      const line = rejected[i] as RejectedLine;
      if (line.offset >= to) return false;
      if (codes === undefined || codes.has(line.code)) return true;
    }
    return false;
  }

  #report(
    code: DiagnosticCode,
    offset: number,
    length: number,
    text: { readonly message: string; readonly hint: string },
  ): void {
    this.#found.push({
      offset,
      diagnostic: {
        code,
        position: this.#lines.position(offset),
        message: text.message,
        hint: text.hint,
        length: Math.max(1, length),
      },
    });
  }
}

/** Message and hint for a line the lexer rejected. */
function describeInvalidLine(p: InvalidLine): { message: string; hint: string } {
  const content = p.content;
  switch (p.code) {
    case 'too-many-tabs':
      return { message: `line indented with ${p.length} tabs`, hint: INDENT_HINT };
    case 'expected-requires': {
      const word = /^[^\s#]*/.exec(content)?.[0] ?? '';
      return {
        message: `a line indented with two tabs must be a \`requires\` line, not ${quote(word)}`,
        hint: 'indent actions with one tab; two tabs are for `requires file1 file2` under an action',
      };
    }
    case 'requires-one-tab':
      return {
        message: '`requires` indented with one tab would be an action',
        hint: 'indent `requires` lines with two tabs, under their action',
      };
    case 'indented-top-level': {
      const what = /^PORT\b/.test(content)
        ? 'the PORT setting'
        : /^HOSTS\b/.test(content)
          ? 'the HOSTS setting'
          : `actionset header ${quote(content)}`;
      return {
        message: `${what} is indented with spaces`,
        hint: 'start it in column 1; if it is a command, indent it with one tab',
      };
    }
    case 'remote-without-command':
      return {
        message: '`remote-` with no command after it',
        hint: 'write the command right after the prefix, as in `remote-cc -c program.c`',
      };
    case 'unknown-line':
      return {
        message: `${quote(content)} is not a setting or an actionset header`,
        hint: unknownLineHint(content),
      };
    default:
      return { message: `unexpected line ${quote(content)}`, hint: INDENT_HINT };
  }
}

function unknownLineHint(content: string): string {
  const keyword = /^(port|hosts)\b/i.exec(content)?.[1];
  if (keyword !== undefined) {
    const upper = keyword.toUpperCase();
    const example = upper === 'PORT' ? '`PORT = 6238`' : '`HOSTS = host1 host2:6333`';
    return keyword === upper
      ? `a setting needs \`=\`, as in ${example}`
      : `settings are written in upper case, as in ${example}`;
  }
  if (/^[^\s:#=]+$/.test(content)) {
    return `an actionset header ends with a colon: \`${content}:\``;
  }
  if (content.includes(':')) {
    return 'an actionset header is `name:`, where the name has no blanks, `#` or `=`';
  }
  if (/^[^\s=]+[ \t]*=/.test(content)) {
    return 'the only settings are `PORT = n` and `HOSTS = host1 host2`';
  }
  return 'a line in column 1 is `PORT = n`, `HOSTS = host1 host2` or an actionset header `name:`; indent actions with one tab';
}

/** `text` in backticks, shortened when long. */
function quote(text: string): string {
  const chars = Array.from(text);
  const short = chars.length > QUOTE_MAX ? `${chars.slice(0, QUOTE_MAX - 1).join('')}…` : text;
  return `\`${short}\``;
}
