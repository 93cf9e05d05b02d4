/**
 * The language's reference, generated from the parser and the lexer themselves: railroad
 * diagrams (grammar/rakefile.html) and an EBNF (grammar/rakefile.ebnf) of the parser's rules,
 * and the tokens of each lexer mode with their patterns. scripts/gen-grammar-docs.ts writes
 * them; spec/grammar/docs.spec.ts fails when the checked-in copies are stale.
 */
import {
  createSyntaxDiagramsCode,
  type ISerializedGast,
  type TokenPattern,
  type TokenType,
} from 'chevrotain';
import { Lexer } from './chevrotain.js';
import { customTokenSyntax, lexerModes } from './lexer.js';
import { RakefileParser } from './parser.js';

/** The generated files, by name under grammar/. */
export interface GrammarDocs {
  readonly 'rakefile.html': string;
  readonly 'rakefile.ebnf': string;
}

const HEADER = [
  '/* The Rakefile grammar (rake-ts). Generated from grammar/parser.ts and grammar/lexer.ts',
  '   by scripts/gen-grammar-docs.ts: do not edit; run `npm run gen:grammar`.',
  '   Prose reference: docs/rakefile.md.',
  '',
  "   Rules are the parser's; quoted words and lower-case names are tokens (below). A line",
  '   the lexer matches no token for is an error of its own (unknown-line, too-many-tabs, ...);',
  '   a token the parser finds where its rule has no place (an indented line before any',
  "   header, `requires` where an action should be, text after a header's colon) is skipped",
  '   with an error, and parsing goes on. */',
];

/** Renders both files from a fresh parser. */
export function renderGrammarDocs(): GrammarDocs {
  const gast = new RakefileParser({ validate: true }).getSerializedGastProductions();
  return {
    'rakefile.html': createSyntaxDiagramsCode(gast),
    'rakefile.ebnf': renderEbnf(gast),
  };
}

/** W3C-style EBNF (as in the XML spec): `::=`, `|`, `?`, `*`, `+`, parentheses. */
function renderEbnf(rules: readonly ISerializedGast[]): string {
  const named = rules as readonly (ISerializedGast & { name: string })[];
  const width = Math.max(...named.map((r) => r.name.length));
  const lines = [...HEADER, '', '/* Rules (grammar/parser.ts) */', ''];
  for (const rule of named) {
    const body = sequence(rule.definition ?? []);
    const bare = rule.definition?.length === 1 && rule.definition[0]?.type === 'Alternation';
    lines.push(`${rule.name.padEnd(width)} ::= ${bare ? body.slice(2, -2) : body}`);
  }
  lines.push(
    '',
    '/* Tokens (grammar/lexer.ts), by lexer mode. Every line starts in mode `line`; a token',
    '   marked -> switches the mode for the rest of the line, and newline ends it. Skipped',
    '   tokens reach no rule. Blanks are every white space but LF. */',
  );
  for (const [mode, tokens] of Object.entries(lexerModes)) {
    lines.push('', `/* mode ${mode} */`);
    const shown = tokens.map((t) => ({ token: t, name: tokenName(t) }));
    const pad = Math.max(...shown.map((s) => s.name.length));
    for (const { token, name } of shown) {
      const mode = token.PUSH_MODE === undefined ? '' : `  -> ${token.PUSH_MODE}`;
      lines.push(`${name.padEnd(pad)} ::= ${patternOf(token)}${mode}`);
    }
  }
  lines.push('', '/* made by the line matchers, never matched by themselves */');
  for (const token of customTokenSyntax.keys()) {
    if (token.PATTERN === Lexer.NA) lines.push(`${tokenName(token)} ::= ${patternOf(token)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** How a token is shown: its label, or `(skipped Name)` for a token the parser never sees. */
function tokenName(token: TokenType): string {
  if (token.GROUP === Lexer.SKIPPED) return `(skipped ${token.name})`;
  return token.LABEL ?? token.name;
}

function patternOf(token: TokenType): string {
  const custom = customTokenSyntax.get(token);
  if (custom !== undefined) return custom;
  const pattern: TokenPattern | undefined = token.PATTERN;
  if (pattern instanceof RegExp) return `/${pattern.source}/`;
  if (typeof pattern === 'string') return `'${pattern}'`;
  throw new Error(`grammar/docs.ts: no syntax for token ${token.name}`);
}

function sequence(items: readonly ISerializedGast[]): string {
  return items.map(term).join(' ');
}

function term(node: ISerializedGast): string {
  const inner = () => sequence(node.definition ?? []);
  switch (node.type) {
    case 'NonTerminal':
      return (node as ISerializedGast & { name: string }).name;
    case 'Terminal': {
      const terminal = node as ISerializedGast & { label?: string; name: string };
      return terminal.label ?? terminal.name;
    }
    case 'Option':
      return `${group(node, inner)}?`;
    case 'Repetition':
      return `${group(node, inner)}*`;
    case 'RepetitionMandatory':
      return `${group(node, inner)}+`;
    case 'Alternation':
      return `( ${(node.definition ?? []).map((alt) => sequence(alt.definition ?? [])).join(' | ')} )`;
    default:
      throw new Error(`grammar/docs.ts: no EBNF for ${node.type}`);
  }
}

/** A name or an alternation needs no (more) parentheses before `?`, `*` or `+`. */
function group(node: ISerializedGast, inner: () => string): string {
  const only = node.definition?.[0];
  const single =
    node.definition?.length === 1 &&
    (only?.type === 'Terminal' || only?.type === 'NonTerminal' || only?.type === 'Alternation');
  return single ? inner() : `( ${inner()} )`;
}
