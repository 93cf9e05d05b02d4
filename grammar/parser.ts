/**
 * The Rakefile parser: checks the order of the line tokens and hands each line, in file
 * order, to a `LineSink` (grammar/analyze.ts), which reads inside it and builds the model.
 * Handing lines over as they are recognised, instead of building a tree first, keeps a
 * 100,000-action file within its memory budget (docs/benchmarks.md).
 *
 * The grammar is deliberately a little wider than the language: an action or a `requires`
 * line may appear where it has no owner (`strayAction`, `strayRequires`). They parse so the
 * analyzer can say precisely what is wrong with them, all at once, instead of the parser
 * stopping at the first surprise. grammar/rakefile.ebnf and grammar/rakefile.html are
 * generated from this class by scripts/gen-grammar-docs.ts.
 */
import type { IToken } from 'chevrotain';
import { EmbeddedActionsParser } from './chevrotain.js';
import {
  ActionLine,
  HeaderLine,
  HostsLine,
  PortLine,
  parserTokens,
  RequiresLine,
} from './lexer.js';

/**
 * Receives the lines of a Rakefile in file order. Where a line belongs follows from the
 * order: a `requires` line belongs to the last action since the last header or setting.
 */
export interface LineSink {
  port(line: IToken): void;
  hosts(line: IToken): void;
  header(line: IToken): void;
  action(line: IToken): void;
  requires(line: IToken): void;
}

const NO_SINK: LineSink = {
  port: () => {},
  hosts: () => {},
  header: () => {},
  action: () => {},
  requires: () => {},
};

/** Chevrotain's embedded-actions parser: no CST, no tree; lines go straight to the sink. */
export class RakefileParser extends EmbeddedActionsParser {
  /**
   * Outside `parse` this is a sink that ignores everything, which is why the rules call it
   * without `this.ACTION(...)`: while chevrotain records the grammar the calls do nothing,
   * and no closure is allocated per line.
   */
  #sink: LineSink = NO_SINK;

  /**
   * `validate` runs chevrotain's grammar checks (ambiguity, left recursion); they cost
   * tens of milliseconds on every start, so parse.ts skips them and the specs run them.
   */
  constructor(options: { validate?: boolean } = {}) {
    super(parserTokens as never, {
      maxLookahead: 1,
      recoveryEnabled: false,
      skipValidations: options.validate !== true,
    });
    this.performSelfAnalysis();
  }

  /**
   * Parses `tokens` (from grammar/lexer.ts), feeding `sink`. Returns the parser's errors,
   * which are always empty for the lexer's output: every sequence of lines is in the grammar.
   */
  parse(tokens: IToken[], sink: LineSink): readonly unknown[] {
    this.input = tokens;
    this.#sink = sink;
    try {
      this.rakefile();
      return this.errors;
    } finally {
      this.#sink = NO_SINK;
      this.input = [];
    }
  }

  // The alternatives and loop bodies below are built once, not on every call: per line,
  // an inline `this.OR([...])` would allocate an array, objects and closures.

  readonly #statement = [
    { ALT: () => this.SUBRULE(this.setting) },
    { ALT: () => this.SUBRULE(this.actionset) },
    { ALT: () => this.SUBRULE(this.strayAction) },
    { ALT: () => this.SUBRULE(this.strayRequires) },
  ];
  readonly #statements = () => {
    this.OR(this.#statement);
  };

  readonly rakefile = this.RULE('rakefile', () => {
    this.MANY(this.#statements);
  });

  readonly #settingKind = [
    { ALT: () => this.#sink.port(this.CONSUME(PortLine)) },
    { ALT: () => this.#sink.hosts(this.CONSUME(HostsLine)) },
  ];

  readonly setting = this.RULE('setting', () => {
    this.OR(this.#settingKind);
  });

  readonly #actionsetLine = [
    { ALT: () => this.SUBRULE(this.action) },
    { ALT: () => this.SUBRULE(this.strayRequires) },
  ];
  readonly #actionsetLines = () => {
    this.OR(this.#actionsetLine);
  };

  readonly actionset = this.RULE('actionset', () => {
    this.#sink.header(this.CONSUME(HeaderLine));
    this.MANY(this.#actionsetLines);
  });

  readonly #requiresLines = () => {
    this.#sink.requires(this.CONSUME(RequiresLine));
  };

  readonly action = this.RULE('action', () => {
    this.#sink.action(this.CONSUME(ActionLine));
    this.MANY(this.#requiresLines);
  });

  /** An action before any header: an error, named apart so the diagrams show where. */
  readonly strayAction = this.RULE('strayAction', () => {
    this.SUBRULE(this.action);
  });

  /** A `requires` line with no action above it: an error, named apart likewise. */
  readonly strayRequires = this.RULE('strayRequires', () => {
    this.#sink.requires(this.CONSUME(RequiresLine));
  });
}
