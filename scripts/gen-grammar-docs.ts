/**
 * Regenerates the language reference in grammar/ from the parser: rakefile.html (railroad
 * diagrams) and rakefile.ebnf. Run `npm run gen:grammar` after changing grammar/parser.ts
 * or grammar/lexer.ts; spec/grammar/docs.spec.ts fails until the files are up to date.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { renderGrammarDocs } from '../grammar/docs.js';

const dir = fileURLToPath(new URL('../grammar/', import.meta.url));
for (const [name, text] of Object.entries(renderGrammarDocs())) {
  writeFileSync(`${dir}${name}`, text);
  console.log(`wrote grammar/${name}`);
}
