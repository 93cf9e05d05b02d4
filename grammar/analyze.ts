/**
 * The semantic checks: from the parser's nodes and chevrotain's errors to the model or the
 * diagnostics. Checks what the grammar cannot (ports, hosts, repeated names and settings,
 * empty actionsets, remote actions without hosts) and maps each lexing and parsing error to
 * its diagnostic, collecting every problem so a wrong Rakefile gets them all at once.
 */
import type { ILexingResult, IRecognitionException, IToken } from 'chevrotain';
import type { Diagnostic, DiagnosticCode } from './diagnostics.js';
import { parseHostEntry, parsePortNumber } from './hosts.js';
import {
  Command,
  classifyLine,
  Indent,
  type InvalidLine,
  NAME,
  Remote,
  Requires,
} from './lexer.js';
import { contentEnd, skipIndent } from './lines.js';
import type { Action, Actionset, HostSpec, Rakefile, Requirement } from './model.js';
import { DEFAULT_PORT, isNoCacheComment } from './model.js';
import type { ActionNode, HostsNode, ParseOutput, SettingNode } from './parser.js';
import type { LineIndex } from './positions.js';

/** Either a whole model or the reasons there is none; never both, never half a model. */
export type ParseResult =
  | { readonly ok: true; readonly rakefile: Rakefile }
  | { readonly ok: false; readonly diagnostics: readonly Diagnostic[] };

/** Refused lines that may have been meant as an actionset header. */
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
  readonly tls?: true;
  readonly offset: number;
}

/** The actionset whose header was read last, while its actions are still coming. */
interface OpenActionset {
  readonly name: string;
  readonly offset: number;
  readonly actions: Action[];
  /** A misplaced `requires` line was reported already (one per actionset is enough). */
  strayReported: boolean;
}

/** Consecutive actions with no header above them, reported together. */
interface StrayRun {
  /** Where the first one's content starts and its command ends. */
  readonly start: number;
  end: number;
  /** Start of the line before the run, to spot a broken header there. */
  readonly after: number;
  count: number;
}

/** A line the lexer refused: where it starts, and why. */
interface RefusedLine {
  readonly offset: number;
  readonly code: DiagnosticCode;
}

/**
 * Builds one Rakefile's model. The lexer and parser run over the text a piece at a time
 * (grammar/parse.ts); `feed` takes each piece's lexing result and parse, whose offsets count
 * from `base`, the piece's start in the whole text. Everything here works on whole-text
 * offsets.
 */
export class Analyzer {
  readonly #text: string;
  readonly #lines: LineIndex;
  /** Offset of the current piece in the whole text. */
  #base = 0;
  readonly #refused: RefusedLine[] = [];
  readonly #found: { offset: number; diagnostic: Diagnostic }[] = [];
  /** Some line was not blank (refused lines aside). */
  #anyLine = false;

  /** The first PORT line; `value` stays undefined when that line is wrong. */
  #port: { value: number | undefined; line: number } | undefined;
  /** The first HOSTS line, with its valid entries. */
  #hosts: { entries: HostEntryAt[]; line: number } | undefined;
  readonly #actionsets: Actionset[] = [];
  /** Actionset names, and the line each was first defined on. */
  readonly #names = new Map<string, number>();
  #open: OpenActionset | undefined;
  /** Start of the last line handed over in column 1 or in a stray run. */
  #previousLine = 0;
  /** Indented lines with no actionset, while more may follow (they can span pieces). */
  #strayRun: StrayRun | undefined;
  /** A `requires` line with no actionset was reported for each line since the last setting,
   * until a stray action: the lines after it are its files. */
  #strayAction = false;
  #remoteActions = 0;
  #firstRemote: number | undefined;
  /** Start of a PORT/HOSTS line that came after an actionset (and so ended it), for hints. */
  #settingAfterActionset: number | undefined;

  constructor(text: string, lines: LineIndex) {
    this.#text = text;
    this.#lines = lines;
  }

  /**
   * Takes one piece: first the lines the lexer refused, then the parser's nodes and errors,
   * merged in file order. `continued`: the piece starts inside the open actionset, and its
   * tokens with a stand-in header (grammar/parse.ts).
   */
  feed(lexed: ILexingResult, parsed: ParseOutput, base: number, continued = false): void {
    this.#base = base;
    // A lexing error at the start of a line spans the refused lines in a row (chevrotain
    // resumes at the next line it can match): each gets its diagnostic. One inside a line
    // can only be after a header's colon.
    let trailingLine = -1;
    for (const error of lexed.errors) {
      const start = base + error.offset;
      if (start > 0 && this.#text.charCodeAt(start - 1) !== 10) {
        const line = this.#text.lastIndexOf('\n', start - 1) + 1;
        if (line !== trailingLine) this.#headerTrailing(line, start);
        trailingLine = line;
        continue;
      }
      const end = start + error.length;
      for (let at = start; at < end; ) {
        this.#refusedLine(at);
        const newline = this.#text.indexOf('\n', at);
        at = newline === -1 ? end : newline + 1;
      }
    }
    if (lexed.tokens.length > 0) this.#anyLine = true;
    const { nodes, errors } = parsed;
    let e = 0;
    for (const node of nodes) {
      const at = nodeOffset(node);
      while (e < errors.length && (errors[e] as IRecognitionException).token.startOffset < at) {
        this.#error(errors[e++] as IRecognitionException);
      }
      switch (node.kind) {
        case 'setting':
          this.#portSetting(node);
          break;
        case 'hosts':
          this.#hostsSetting(node);
          break;
        case 'header':
          // A piece that continues the open actionset starts with a stand-in header.
          if (!continued || node !== nodes[0]) this.#header(node.name);
          break;
        case 'action':
          this.#action(node);
          break;
      }
    }
    while (e < errors.length) this.#error(errors[e++] as IRecognitionException);
  }

  /** True when an actionset is open: an action line now would be one of its actions. */
  get inActionset(): boolean {
    return this.#open !== undefined;
  }

  /** Once every piece has been fed: the model, or every diagnostic. */
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
      ...(h.tls ? { tls: h.tls } : {}),
      position: this.#lines.position(h.offset),
    }));
    return {
      ok: true,
      rakefile: { file: this.#lines.file, port, hosts, actionsets: this.#actionsets },
    };
  }

  // ---- nodes -------------------------------------------------------------------------------

  #header(token: IToken): void {
    const offset = this.#base + token.startOffset;
    this.#topLevel(offset);
    this.#previousLine = offset;
    this.#settingAfterActionset = undefined;
    const name = this.#text.slice(offset, offset + token.image.length);
    const first = this.#names.get(name);
    if (first !== undefined) {
      this.#report('repeated-actionset', offset, name.length, {
        message: `actionset ${quote(name)} is defined twice`,
        hint: `the first \`${name}:\` is on line ${first}; give each actionset its own name`,
      });
    } else {
      this.#names.set(name, this.#lines.lineOf(offset));
    }
    this.#open = { name, offset, actions: [], strayReported: false };
  }

  #action(node: ActionNode): void {
    const base = this.#base;
    const text = this.#text;
    const start = contentStart(text, base + (node.remote ?? node.command).startOffset);
    if (node.remote !== undefined) {
      this.#remoteActions++;
      this.#firstRemote ??= start;
    }
    const position = this.#lines.position(start);
    const requires: Requirement[] = new Array(node.paths.length);
    for (let i = 0; i < node.paths.length; i++) {
      const path = node.paths[i] as IToken;
      const at = base + path.startOffset;
      requires[i] = {
        path: text.slice(at, at + path.image.length),
        position: this.#lines.position(at),
      };
    }
    const command = node.command;
    // A command never holds `#`: what follows it on its line is blanks and maybe a comment.
    const end = base + command.startOffset + command.image.length;
    const eol = text.indexOf('\n', end);
    const rest = text
      .slice(end, eol < 0 ? text.length : eol)
      .replace(/\r$/, '')
      .trimStart();
    this.#open?.actions.push({
      command: text.slice(base + command.startOffset, end),
      remote: node.remote !== undefined,
      requires,
      position,
      ...(isNoCacheComment(rest) ? { noCache: true as const } : {}),
    });
  }

  /** A line in column 1 at `offset` (or the end) ends the open actionset or stray run. */
  #topLevel(offset: number): void {
    if (this.#strayRun !== undefined) {
      this.#reportStrayRun(this.#strayRun);
      this.#strayRun = undefined;
    }
    this.#strayAction = false;
    const open = this.#open;
    if (open === undefined) return;
    if (open.actions.length === 0 && !this.#hasRefusedBetween(open.offset, offset)) {
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

  /** Problems of the file as a whole, found once every line has been read. */
  #checkWhole(): void {
    if (this.#hosts === undefined && this.#firstRemote !== undefined) {
      const count = this.#remoteActions;
      this.#report('remote-without-hosts', this.#firstRemote, 'remote-'.length, {
        message: `remote action but no HOSTS line${count > 1 ? ` (${count} remote actions in all)` : ''}`,
        hint: 'add `HOSTS = host1 host2` (for a test, `HOSTS = localhost`), or drop `remote-` to run the action here',
      });
    }
    if (!this.#anyLine && this.#refused.length === 0) {
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

  #portSetting(node: SettingNode): void {
    const offset = this.#base + node.keyword.startOffset;
    this.#topLevel(offset);
    this.#previousLine = offset;
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
    const value = node.value;
    if (value === undefined) {
      const after = this.#base + node.equals.startOffset + 1;
      this.#report('invalid-port', after, 1, { message: 'PORT has no value', hint: PORT_HINT });
      return;
    }
    const number = parsePortNumber(value.image);
    if (number === undefined) {
      const message = /^[0-9]+$/.test(value.image)
        ? `PORT ${quote(value.image)} is out of range`
        : `PORT ${quote(value.image)} is not a port number`;
      const at = this.#base + value.startOffset;
      this.#report('invalid-port', at, value.image.length, { message, hint: PORT_HINT });
      return;
    }
    if (port.line === line) port.value = number;
  }

  #hostsSetting(node: HostsNode): void {
    const base = this.#base;
    const offset = base + node.keyword.startOffset;
    this.#topLevel(offset);
    this.#previousLine = offset;
    const line = this.#lines.lineOf(offset);
    if (this.#hosts !== undefined) {
      this.#report('repeated-setting', offset, 'HOSTS'.length, {
        message: 'HOSTS is set twice',
        hint: `list every host on one HOSTS line (the first is on line ${this.#hosts.line})`,
      });
    }
    this.#noteSetting(offset);
    if (node.entries.length === 0) {
      this.#report('no-hosts', base + node.equals.startOffset + 1, 1, {
        message: 'HOSTS lists no hosts',
        hint: 'name at least one host, as in `HOSTS = localhost`, or delete the line if every action is local',
      });
    }
    const entries: HostEntryAt[] = [];
    for (const word of node.entries) {
      const at = base + word.startOffset;
      const entry = parseHostEntry(word.image);
      if (entry.ok) {
        entries.push({
          host: entry.host,
          port: entry.port,
          ...(entry.tls ? { tls: true } : {}),
          offset: at,
        });
      } else this.#report('invalid-host', at + entry.start, entry.length, entry);
    }
    this.#hosts ??= { entries, line };
  }

  #noteSetting(offset: number): void {
    if (this.#names.size > 0) this.#settingAfterActionset = offset;
  }

  // ---- what chevrotain reported ------------------------------------------------------------

  /**
   * One parsing error, after recovery. Each kind of misplaced text stops the parser at a
   * token of its own: INDENT (indented lines where a setting or header should be), `requires`
   * (where an action should be), text after a header's colon (where its newline should be).
   */
  #error(error: IRecognitionException): void {
    const token = error.token;
    const type = token.tokenType;
    if (type === Indent) this.#strayLines([token, ...(error.resyncedTokens ?? [])]);
    else if (type === Requires) this.#strayRequires(this.#base + token.startOffset);
    else {
      // The lexer only lets through lines the grammar has a place for; this is a bug.
      throw new Error(`Rakefile parser: unexpected ${error.name} at ${token.startOffset}`);
    }
  }

  /** Text after the colon of the header on the line at `line`, from `start`. */
  #headerTrailing(line: number, start: number): void {
    NAME.lastIndex = line;
    const name = NAME.exec(this.#text)?.[0] ?? '';
    const junk = this.#text.slice(start, contentEnd(this.#text, start));
    this.#report('header-trailing-text', start, junk.length, {
      message: `unexpected ${quote(junk)} after actionset header \`${name}:\``,
      hint: 'a header is only `name:`; put each command on its own line below it, indented with one tab',
    });
  }

  /**
   * Indented lines with no header above them (the parser skipped them, from the INDENT to the
   * next line in column 1): the first action gets one diagnostic for the whole run, and each
   * `requires` line before it one of its own.
   */
  #strayLines(tokens: readonly IToken[]): void {
    const base = this.#base;
    let previous: IToken | undefined;
    for (const token of tokens) {
      const type = token.tokenType;
      const afterRemote = previous?.tokenType === Remote;
      previous = token;
      // Each line starts with `requires`, `remote-` or a command (not one after `remote-`).
      if (type === Command && afterRemote) {
        const run = this.#strayRun;
        if (run !== undefined && run.end === 0)
          run.end = base + token.startOffset + token.image.length;
        continue;
      }
      if (type !== Requires && type !== Remote && type !== Command) continue;
      const at = base + token.startOffset;
      const line = this.#text.lastIndexOf('\n', at - 1) + 1;
      if (type === Requires) {
        if (!this.#strayAction) {
          this.#report('requires-before-action', at, 'requires'.length, {
            message: '`requires` line outside any actionset',
            hint: REQUIRES_HINT,
          });
        }
      } else {
        const start = contentStart(this.#text, at);
        if (type === Remote) {
          this.#remoteActions++;
          this.#firstRemote ??= start;
        }
        this.#strayAction = true;
        if (this.#strayRun !== undefined) this.#strayRun.count++;
        else {
          const end = type === Remote ? 0 : at + token.image.length;
          this.#strayRun = { start, end, after: this.#previousLine, count: 1 };
        }
      }
      this.#previousLine = line;
    }
  }

  /** The run of stray actions, once a line in column 1 (or the end) has ended it. */
  #reportStrayRun(run: StrayRun): void {
    // A broken header above them has its own diagnostic; do not pile on.
    if (this.#hasRefusedBetween(run.after, run.start, BROKEN_HEADER)) return;
    const suffix = run.count > 1 ? ` (and ${run.count - 1} more after it)` : '';
    const length = run.end - run.start;
    const setting = this.#settingAfterActionset;
    if (setting === undefined) {
      this.#report('action-before-actionset', run.start, length, {
        message: `action before any actionset${suffix}`,
        hint: 'start an actionset with a header line `name:` above it',
      });
    } else {
      const keyword = this.#text.startsWith('PORT', setting) ? 'PORT' : 'HOSTS';
      this.#report('action-before-actionset', run.start, length, {
        message: `action outside any actionset${suffix}`,
        hint: `the ${keyword} line on line ${this.#lines.lineOf(setting)} ended the actionset above; move it before the first actionset`,
      });
    }
  }

  /** A `requires` line where an action of the open actionset should be. */
  #strayRequires(keyword: number): void {
    const open = this.#open;
    if (open === undefined) throw new Error('Rakefile parser: `requires` outside an actionset');
    // One per actionset; and none when the action above was a refused line.
    if (open.strayReported || this.#hasRefusedBetween(open.offset, keyword)) return;
    open.strayReported = true;
    this.#report('requires-before-action', keyword, 'requires'.length, {
      message: `\`requires\` line before any action of actionset ${quote(open.name)}`,
      hint: REQUIRES_HINT,
    });
  }

  /** A line chevrotain's lexer matched no token for, starting at `offset`: ask why. */
  #refusedLine(offset: number): void {
    const problem = classifyLine(this.#text, offset);
    if (typeof problem === 'string') {
      throw new Error(`Rakefile lexer: refused a ${problem} line at offset ${offset}`);
    }
    this.#refused.push({ offset, code: problem.code });
    this.#report(problem.code, problem.start, problem.length, describeInvalidLine(problem));
  }

  /** True when a refused line (with one of `codes`, if given) starts in `[from, to)`. */
  #hasRefusedBetween(from: number, to: number, codes?: ReadonlySet<DiagnosticCode>): boolean {
    const refused = this.#refused;
    let lo = 0;
    let hi = refused.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((refused[mid]?.offset ?? 0) < from) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < refused.length; i++) {
      const line = refused[i] as RefusedLine;
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

/** Where a node's line starts being content (its first token), in its piece. */
function nodeOffset(node: ParseOutput['nodes'][number]): number {
  switch (node.kind) {
    case 'setting':
    case 'hosts':
      return node.keyword.startOffset;
    case 'header':
      return node.name.startOffset;
    case 'action':
      return (node.remote ?? node.command).startOffset;
  }
}

/** Where an action's content starts: after its indentation (tabs and spaces), from its first token. */
function contentStart(text: string, first: number): number {
  return skipIndent(text, text.lastIndexOf('\n', first - 1) + 1);
}

/** Message and hint for a line the lexer refused. */
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
