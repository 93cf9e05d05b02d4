import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as fromPackage from 'chevrotain';
import { createToken, EmbeddedActionsParser, Lexer } from '../../grammar/chevrotain.js';
import { parseRakefile } from '../../grammar/parse.js';

describe('grammar/chevrotain.ts', () => {
  it('loads the bundled file, not the ~700-module package tree (start-up time)', () => {
    // The package entry would hand out the very same class objects.
    assert.notEqual(Lexer, fromPackage.Lexer);
    assert.notEqual(EmbeddedActionsParser, fromPackage.EmbeddedActionsParser);
    assert.equal(typeof createToken, 'function');
  });

  it('parses a Rakefile with it', () => {
    const r = parseRakefile('HOSTS = a b\n\nall:\n\tremote-true\n\t\trequires x.c\n', {
      file: 't',
    });
    assert.equal(r.ok, true);
  });
});
