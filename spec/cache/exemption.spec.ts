// The exemption from the action cache (issue 21): `# rake-ts: no-cache` on an action's line.
// A comment, so base tools read the Rakefile unchanged; the model, `check`, `--print`,
// `--json` carry it; with --cache such an action always runs, its neighbours are cached.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { rakefileToJson } from '../../grammar/json.js';
import { parseRakefile } from '../../grammar/parse.js';
import { printRakefile } from '../../grammar/print.js';
import { LocalCache } from '../../src/cache/store.js';
import { summarize } from '../../src/cli/commands/check.js';
import { freePort, only, parse, project, removeDir, runAll, summary } from '../client/support.js';

const T = { timeout: 120_000 };

function actions(text: string) {
  const r = parseRakefile(text);
  assert.ok(r.ok, JSON.stringify(!r.ok && r.diagnostics));
  return r.rakefile.actionsets.flatMap((s) => s.actions);
}

describe('# rake-ts: no-cache', () => {
  it('marks the action on whose line it stands, and only that one', T, () => {
    const got = actions(
      [
        'HOSTS = a',
        '',
        'build:',
        '\tremote-date > stamp   # rake-ts: no-cache',
        '\t\trequires x.c',
        '\tremote-cc -c x.c # rake-ts: no-cache-please',
        '\techo local\t#rake-ts:no-cache because it prints the time\r',
        '\tremote-cc -c y.c # see rake-ts: no-cache',
        '#\tremote-cc -c old.c # rake-ts: no-cache',
        '',
      ].join('\n'),
    ).map((a) => [a.command, a.noCache === true]);
    assert.deepEqual(got, [
      ['date > stamp', true],
      ['cc -c x.c', false],
      ['echo local', true],
      ['cc -c y.c', false],
    ]);
  });

  it('survives check --print and shows in --json and the check summary', T, () => {
    const text = 'HOSTS = a\n\nb:\n\tremote-date > stamp # rake-ts: no-cache\n\tremote-cc -c x.c\n';
    const r = parseRakefile(text);
    assert.ok(r.ok);
    const printed = printRakefile(r.rakefile);
    assert.match(printed, /\tremote-date > stamp {2}# rake-ts: no-cache\n/);
    assert.deepEqual(
      actions(printed).map((a) => a.noCache === true),
      [true, false],
    );
    const json = rakefileToJson(r.rakefile) as {
      actionsets: { actions: { noCache?: boolean }[] }[];
    };
    assert.deepEqual(
      json.actionsets[0]?.actions.map((a) => a.noCache),
      [true, undefined],
    );
    assert.match(
      summarize(r.rakefile),
      /note {8}1 action\(s\) exempt from --cache \(# rake-ts: no-cache\); base-protocol tools read the mark as a comment/,
    );
    assert.doesNotMatch(summarize(parse('HOSTS = a\n\nb:\n\tremote-x\n')), /exempt/);
  });

  it('with --cache an exempt action runs every time; its neighbour is cached', T, async () => {
    const dir = await project({ 'in.txt': 'x\n' });
    const cacheDir = await mkdtemp(join(tmpdir(), 'rake-cache-exempt-'));
    const stamps = join(cacheDir, 'stamps');
    const builds = join(cacheDir, 'builds');
    try {
      const text = [
        `PORT = ${await freePort()}`,
        `HOSTS = 127.0.0.1:${await freePort()}`,
        '',
        'build:',
        `\tremote-sh -c 'echo ran >> ${stamps}; date > stamp' # rake-ts: no-cache`,
        '\t\trequires in.txt',
        `\tremote-sh -c 'echo ran >> ${builds}; cp in.txt out.txt'`,
        '\t\trequires in.txt',
        '',
      ].join('\n');
      const cache = new LocalCache(cacheDir);
      const count = (f: string) =>
        existsSync(f) ? readFileSync(f, 'utf8').split('\n').length - 1 : 0;
      for (let n = 1; n <= 2; n++) {
        const events = await runAll(dir, text, { cache });
        assert.equal(summary(events).exitStatus, 0, JSON.stringify(only(events, 'action-failed')));
        const cached = only(events, 'action-succeeded').map((e) => [
          e.action.index,
          e.cached !== undefined,
        ]);
        assert.deepEqual(cached.sort(), [
          [0, false],
          [1, n === 2],
        ]);
        assert.equal(count(stamps), n, 'the exempt action ran each time');
        assert.equal(count(builds), 1, 'the other one ran once');
      }
    } finally {
      await removeDir(dir);
      await rm(cacheDir, { recursive: true, force: true });
    }
  });
});
