// `npm run bench` writes docs/benchmarks.md from its parts; sections it does not write (those
// of other scripts, or a part skipped) must survive, or a run would erase them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sectionsNotIn } from '../../scripts/bench/lib/markdown.js';

const PAGE = `# Benchmarks

intro

## This run

- load 0.1

## Build: rake-ts against make -j2

old build table

## Action cache: a second build with \`--cache\`

| row | figure |
|---|---|

### where the time goes

text
## Scale (issue 20)

scale text
## What was made faster

old
`;

describe('benchmarks page: sections carried over', () => {
  it('keeps every section the run does not write, whole, subsections included, in order', () => {
    const kept = sectionsNotIn(PAGE, [
      'This run',
      'What was made faster',
      'Build: rake-ts against make -j2',
    ]);
    assert.deepEqual(kept, [
      '## Action cache: a second build with `--cache`\n\n| row | figure |\n|---|---|\n\n### where the time goes\n\ntext',
      '## Scale (issue 20)\n\nscale text',
    ]);
  });

  it('keeps nothing the run writes anew, and nothing from a page with no sections', () => {
    assert.deepEqual(sectionsNotIn('# Benchmarks\n\nintro\n', ['This run']), []);
    assert.deepEqual(
      sectionsNotIn(PAGE, [
        'This run',
        'Build: rake-ts against make -j2',
        'Action cache: a second build with `--cache`',
        'Scale (issue 20)',
        'What was made faster',
      ]),
      [],
    );
  });
});
