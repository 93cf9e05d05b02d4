/**
 * The Rakefile parser. Its rules are the language (grammar/rakefile.ebnf is generated from
 * them):
 *
 * ```
 * rakefile  ::= ( setting | hosts | actionset )*
 * setting   ::= 'PORT' '=' port?
 * hosts     ::= 'HOSTS' '=' host*
 * actionset ::= name ':' ( INDENT action* DEDENT )?
 * action    ::= 'remote-'? command ( INDENT requires+ DEDENT )?
 * requires  ::= 'requires' path*
 * ```
 *
 * Each line starts with a token of its own, so no newline token is needed; INDENT and DEDENT
 * carry the nesting. Recovery is on, so a misplaced line does not stop the parse: chevrotain
 * skips it, records the error and goes on, and grammar/analyze.ts maps each error to a diagnostic. What the
 * parser recognises it hands over as nodes, in file order, from its embedded actions.
 */
import type { IRecognitionException, IToken, TokenType } from 'chevrotain';
import { EmbeddedActionsParser } from './chevrotain.js';
import {
  Colon,
  Command,
  Dedent,
  Hosts,
  HostsEquals,
  HostWord,
  Indent,
  Name,
  Path,
  Port,
  PortEquals,
  PortValue,
  parserTokens,
  Remote,
  Requires,
} from './lexer.js';

/** `PORT = value`; `value` is absent when the line has none. */
export interface SettingNode {
  readonly kind: 'setting';
  readonly keyword: IToken;
  readonly equals: IToken;
  readonly value: IToken | undefined;
}

/** `HOSTS = entry…`, each entry one token, read by grammar/hosts.ts. */
export interface HostsNode {
  readonly kind: 'hosts';
  readonly keyword: IToken;
  readonly equals: IToken;
  readonly entries: readonly IToken[];
}

/** `name:`, handed over before the actions under it. */
export interface HeaderNode {
  readonly kind: 'header';
  readonly name: IToken;
}

/** One action and the paths of every `requires` line under it. */
export interface ActionNode {
  readonly kind: 'action';
  readonly remote: IToken | undefined;
  readonly command: IToken;
  readonly paths: readonly IToken[];
}

export type RakefileNode = SettingNode | HostsNode | HeaderNode | ActionNode;

/** What one parse gives: the nodes in file order, and chevrotain's errors in file order. */
export interface ParseOutput {
  readonly nodes: readonly RakefileNode[];
  readonly errors: readonly IRecognitionException[];
}

/** Chevrotain's embedded-actions parser: no CST; the actions collect nodes. */
export class RakefileParser extends EmbeddedActionsParser {
  #nodes: RakefileNode[] = [];

  /**
   * `validate` runs chevrotain's grammar checks (ambiguity, left recursion); they cost
   * tens of milliseconds on every start, so parse.ts skips them and the specs run them.
   */
  constructor(options: { validate?: boolean } = {}) {
    super(parserTokens as TokenType[], {
      maxLookahead: 1,
      recoveryEnabled: true,
      skipValidations: options.validate !== true,
    });
    this.performSelfAnalysis();
  }

  /** Parses `tokens` (from grammar/lexer.ts, one run). */
  parse(tokens: IToken[]): ParseOutput {
    this.input = tokens;
    this.#nodes = [];
    try {
      this.rakefile();
      return { nodes: this.#nodes, errors: this.errors };
    } finally {
      this.#nodes = [];
      this.input = [];
    }
  }

  /**
   * Recovery only skips tokens, never invents one: a missing token would stand for text
   * that is not there, and every place one can be missing is a diagnostic of its own.
   */
  protected override canTokenTypeBeInsertedInRecovery(): boolean {
    return false;
  }

  // The alternatives and loop bodies that run once per line are built once, not on every
  // call: per line, an inline `this.OR([...])` would allocate an array and closures.

  readonly #topLevel = [
    { ALT: () => this.SUBRULE(this.setting) },
    { ALT: () => this.SUBRULE(this.hosts) },
    { ALT: () => this.SUBRULE(this.actionset) },
  ];
  readonly #topLevelItem = () => {
    this.OR(this.#topLevel);
  };

  readonly rakefile = this.RULE('rakefile', () => {
    this.MANY(this.#topLevelItem);
  });

  readonly #portValue = () => this.CONSUME(PortValue);

  readonly setting = this.RULE('setting', () => {
    const keyword = this.CONSUME(Port);
    const equals = this.CONSUME(PortEquals);
    const value = this.OPTION(this.#portValue);
    this.ACTION(() => this.#nodes.push({ kind: 'setting', keyword, equals, value }));
  });

  readonly hosts = this.RULE('hosts', () => {
    const keyword = this.CONSUME(Hosts);
    const equals = this.CONSUME(HostsEquals);
    const entries: IToken[] = [];
    this.MANY(() => {
      const entry = this.CONSUME(HostWord);
      this.ACTION(() => entries.push(entry));
    });
    this.ACTION(() => this.#nodes.push({ kind: 'hosts', keyword, equals, entries }));
  });

  readonly #action = () => {
    this.SUBRULE(this.action);
  };
  readonly #actions = () => {
    this.CONSUME(Indent);
    this.MANY(this.#action);
    this.CONSUME(Dedent);
  };

  readonly actionset = this.RULE('actionset', () => {
    const name = this.CONSUME(Name);
    this.CONSUME(Colon);
    this.ACTION(() => this.#nodes.push({ kind: 'header', name }));
    this.OPTION(this.#actions);
  });

  /** The paths of the action being parsed (its `requires` lines add to them). */
  #paths: IToken[] = [];
  readonly #remote = () => this.CONSUME(Remote);
  readonly #requiresLine = () => {
    this.SUBRULE(this.requires);
  };
  readonly #requiresLines = () => {
    this.CONSUME2(Indent);
    this.AT_LEAST_ONE(this.#requiresLine);
    this.CONSUME2(Dedent);
  };

  readonly action = this.RULE('action', () => {
    const remote = this.OPTION(this.#remote);
    const command = this.CONSUME(Command);
    this.ACTION(() => {
      this.#paths = [];
    });
    this.OPTION2(this.#requiresLines);
    this.ACTION(() => this.#nodes.push({ kind: 'action', remote, command, paths: this.#paths }));
  });

  readonly #path = () => {
    const path = this.CONSUME(Path);
    this.ACTION(() => this.#paths.push(path));
  };

  readonly requires = this.RULE('requires', () => {
    this.CONSUME(Requires);
    this.MANY(this.#path);
  });
}
