/**
 * The language's reference, generated from the parser itself: railroad diagrams
 * (grammar/rakefile.html) and an EBNF (grammar/rakefile.ebnf). scripts/gen-grammar-docs.ts
 * writes them; spec/grammar/docs.spec.ts fails when the checked-in copies are stale.
 */
import { createSyntaxDiagramsCode, type ISerializedGast } from 'chevrotain';
import { lineSyntax } from './lexer.js';
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
  '   The parser reads one token per line. `strayAction` and `strayRequires` are lines in',
  '   the wrong place: they parse so that every one of them can be reported, and each is',
  '   an error (action-before-actionset, requires-before-action). */',
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
  const width = Math.max(...named.map((r) => r.name.length), 'RequiresLine'.length);
  const lines = [...HEADER, '', '/* Lines, in order */', ''];
  for (const rule of named) {
    const body = sequence(rule.definition ?? []);
    const bare = rule.definition?.length === 1 && rule.definition[0]?.type === 'Alternation';
    lines.push(`${rule.name.padEnd(width)} ::= ${bare ? body.slice(2, -2) : body}`);
  }
  lines.push('', '/* Inside a line */', '', ...lineSyntax);
  return `${lines.join('\n')}\n`;
}

function sequence(items: readonly ISerializedGast[]): string {
  return items.map(term).join(' ');
}

function term(node: ISerializedGast): string {
  const inner = () => sequence(node.definition ?? []);
  switch (node.type) {
    case 'NonTerminal':
    case 'Terminal':
      return (node as ISerializedGast & { name: string }).name;
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
