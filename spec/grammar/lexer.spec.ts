// The chevrotain lexer and parser themselves (issue 19, "The grammar"): word-level tokens
// read in lexer modes, indentation as INDENT/DEDENT tokens from state kept per lexer run,
// refused lines as chevrotain lexing errors, misplaced lines as chevrotain parsing errors
// after which recovery goes on.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRakefileLexer } from '../../grammar/lexer.js';
import { parseRakefile } from '../../grammar/parse.js';
import { RakefileParser } from '../../grammar/parser.js';

const lexer = createRakefileLexer();

/** The token names of `text`, as the parser sees them. */
function names(text: string): string[] {
  const lexed = lexer.tokenize(text);
  assert.deepEqual(lexed.errors, []);
  return lexed.tokens.map((t) => t.tokenType.name);
}

describe('the lexer', () => {
  it('reads words, one mode per kind of line, with INDENT and DEDENT for nesting', () => {
    const text = [
      'PORT = 6238   # default',
      'HOSTS = a b:1',
      '',
      'x:',
      '\tremote-cc -c a.c  ',
      '\t\trequires a.c  b.h',
      '\t# commented out',
      '\techo hi # there',
      'y :',
      '\techo',
    ].join('\n');
    assert.deepEqual(names(text), [
      ...['Port', 'PortEquals', 'PortValue'],
      ...['Hosts', 'HostsEquals', 'HostWord', 'HostWord'],
      ...['Name', 'Colon', 'Indent'],
      ...['Remote', 'Command', 'Indent', 'Requires', 'Path', 'Path', 'Dedent'],
      ...['Command', 'Dedent'],
      ...['Name', 'Colon', 'Indent', 'Command', 'Dedent'],
    ]);
    const images = lexer.tokenize(text).tokens.map((t) => t.image);
    assert.deepEqual(images.slice(0, 7), ['PORT', '=', '6238', 'HOSTS', '=', 'a', 'b:1']);
    // "The rest of the line is a command": blanks inside it stay, trailing ones go.
    assert.equal(images[11], 'cc -c a.c');
    assert.deepEqual(images.slice(14, 16), ['a.c', 'b.h']);
  });

  it('keeps words apart by mode: `requires` and `remote-` are words after `remote-`', () => {
    assert.deepEqual(names('x:\n\tremote-requires y\n\t\trequires requires remote-\n'), [
      ...['Name', 'Colon', 'Indent', 'Remote', 'Command'],
      ...['Indent', 'Requires', 'Path', 'Path', 'Dedent', 'Dedent'],
    ]);
  });

  it('takes `remote-` only right after the indentation, as the line-token grammar did', () => {
    // Other white space first makes the rest a command: `remote-x` runs here.
    const parsed = parseRakefile('x:\n\t\vremote-x\n \uFEFF remote-y\n', { file: 'R' });
    assert.ok(parsed.ok);
    assert.deepEqual(
      parsed.rakefile.actionsets[0]?.actions.map((a) => [a.command, a.remote, a.position.column]),
      [
        ['remote-x', false, 2],
        ['remote-y', false, 2],
      ],
    );
  });

  it('starts every run at level 0: the state belongs to one run', () => {
    const deep = lexer.tokenize('x:\n\ta\n\t\trequires f');
    assert.equal(deep.tokens.at(-1)?.tokenType.name, 'Dedent');
    assert.deepEqual(names('\techo\n'), ['Indent', 'Command', 'Dedent']);
  });

  it('puts a `requires` line with no action above it at the level of an action', () => {
    // Under a header, two `requires` lines stay at level 1 (no INDENT between them), where
    // the parser finds them in the place of an action.
    assert.deepEqual(names('x:\n\t\trequires a\n\t\trequires b\n\techo\n'), [
      ...['Name', 'Colon', 'Indent', 'Requires', 'Path', 'Requires', 'Path'],
      ...['Command', 'Dedent'],
    ]);
  });

  it('refuses a line no token matches with a lexing error, and resumes at the next line', () => {
    const text = 'x:\n\t\t\tdeep\n\t\t\tdeeper\n\n\techo\nbuild\n';
    const lexed = lexer.tokenize(text);
    // Refused lines in a row are one error, up to the next line a token matches.
    assert.deepEqual(
      lexed.errors.map((e) => text.slice(e.offset, e.offset + e.length)),
      ['\t\t\tdeep\n\t\t\tdeeper\n', 'build\n'],
    );
    assert.deepEqual(
      lexed.tokens.map((t) => t.tokenType.name),
      ['Name', 'Colon', 'Indent', 'Command', 'Dedent'],
    );
  });

  it('refuses text after a header colon inside the line', () => {
    const text = 'x: a b\n\techo\n';
    const lexed = lexer.tokenize(text);
    assert.deepEqual(
      lexed.errors.map((e) => [e.offset, text.slice(e.offset, e.offset + e.length)]),
      [
        [3, 'a'],
        [5, 'b'],
      ],
    );
  });
});

describe('the parser', () => {
  const parser = new RakefileParser();

  it('reports misplaced lines as chevrotain errors and recovers after each', () => {
    const text = 'HOSTS = a\n\techo 1\n\techo 2\nx:\n\t\trequires a\n\techo 3\ny:\n\techo 4\n';
    const out = parser.parse(lexer.tokenize(text).tokens);
    assert.deepEqual(
      out.errors.map((e) => [e.name, e.token.tokenType.name, e.token.startOffset]),
      [
        ['MismatchedTokenException', 'Indent', 10],
        ['MismatchedTokenException', 'Requires', 31],
      ],
    );
    // The stray run is skipped whole; everything after the errors is parsed.
    assert.deepEqual(
      out.nodes.map((n) =>
        n.kind === 'action' ? n.command.image : n.kind === 'header' ? n.name.image : n.kind,
      ),
      ['hosts', 'x', 'echo 3', 'y', 'echo 4'],
    );
  });

  it('gives each action the paths of every requires line under it', () => {
    const text = 'x:\n\tcc\n\t\trequires a b\n\t\trequires\n\t\trequires c\n';
    const out = parser.parse(lexer.tokenize(text).tokens);
    assert.deepEqual(out.errors, []);
    const action = out.nodes.find((n) => n.kind === 'action');
    assert.deepEqual(action?.kind === 'action' ? action.paths.map((p) => p.image) : [], [
      'a',
      'b',
      'c',
    ]);
  });
});
