// grammar/rakefile.html and grammar/rakefile.ebnf are generated from the parser; they must
// match what the parser generates today.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { renderGrammarDocs } from '../../grammar/docs.js';
import { Command, lexerModes } from '../../grammar/lexer.js';

const grammarDir = new URL('../../grammar/', import.meta.url);

describe('generated grammar docs', () => {
  for (const [name, fresh] of Object.entries(renderGrammarDocs())) {
    it(`grammar/${name} is up to date`, () => {
      let onDisk = '';
      try {
        onDisk = readFileSync(new URL(name, grammarDir), 'utf8');
      } catch {
        // Missing counts as stale.
      }
      assert.ok(onDisk === fresh, `grammar/${name} is stale: run npm run gen:grammar`);
    });
  }

  it('the EBNF lists every lexer mode with the patterns the lexer uses', () => {
    const ebnf = renderGrammarDocs()['rakefile.ebnf'];
    for (const [mode, tokens] of Object.entries(lexerModes)) {
      assert.match(ebnf, new RegExp(`^/\\* mode ${mode} \\*/$`, 'm'));
      for (const token of tokens) {
        if (token.PATTERN instanceof RegExp) assert.ok(ebnf.includes(`/${token.PATTERN.source}/`));
      }
    }
    const command = ebnf.split('\n').find((l) => /^command +::= /.test(l));
    assert.equal(
      command?.replace(/ +::= /, ' ::= '),
      `command ::= /${(Command.PATTERN as RegExp).source}/`,
    );
  });

  it('the EBNF names every parser rule', () => {
    const ebnf = renderGrammarDocs()['rakefile.ebnf'];
    for (const rule of ['rakefile', 'setting', 'hosts', 'actionset', 'action', 'requires']) {
      assert.match(ebnf, new RegExp(`^${rule} +::= `, 'm'));
    }
  });
});
