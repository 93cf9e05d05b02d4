// `rake-ts --cache` / RAKE_CACHE=1 as a user runs it (a child process): the second run takes
// the action from the local cache in --cache-dir, prints its stdout, and the summary says so.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { freePort, project, removeDir } from '../client/support.js';
import { type Ran, runProcess } from '../helpers/run-process.js';

const T = { timeout: 120_000 };
const CLI = new URL('../net/rake-cli.ts', import.meta.url).pathname;

function rake(cwd: string, args: string[], env: NodeJS.ProcessEnv): Promise<Ran> {
  return runProcess([process.execPath, '--import', import.meta.resolve('tsx'), CLI, ...args], {
    cwd,
    env,
  });
}

/**
 * A project whose one remote action reverses `in.txt` into `out.txt`, prints `built` and
 * appends a line to `counter` each time it really runs; `cacheDir` is for the cache.
 */
async function reversingProject(): Promise<{ dir: string; cacheDir: string; counter: string }> {
  const dir = await project({ 'in.txt': 'abc\n' });
  const cacheDir = await mkdtemp(join(tmpdir(), 'rake-cache-cli-'));
  const counter = join(cacheDir, 'counter');
  await writeFile(
    join(dir, 'Rakefile'),
    [
      `PORT = ${await freePort()}`,
      `HOSTS = 127.0.0.1:${await freePort()}`,
      '',
      'build:',
      `\tremote-sh -c 'echo ran >> ${counter}; rev in.txt > out.txt; echo built'`,
      '\t\trequires in.txt',
      '',
    ].join('\n'),
  );
  return { dir, cacheDir, counter };
}

describe('rake-ts --cache', () => {
  it('RAKE_CACHE=1 and --cache-dir: the second run is answered from the cache', T, async () => {
    const { dir, cacheDir, counter } = await reversingProject();
    try {
      const args = ['--cache-dir', join(cacheDir, 'c'), '--progress', 'never'];
      const env = { ...process.env, RAKE_CACHE: '1' };
      const first = await rake(dir, args, env);
      assert.equal(first.code, 0, first.stderr);
      assert.equal(first.stdout, 'built\n');
      assert.doesNotMatch(first.stderr, /from the cache/);
      await unlink(join(dir, 'out.txt'));

      const second = await rake(dir, args, env);
      assert.equal(second.code, 0, second.stderr);
      assert.equal(second.stdout, 'built\n', 'the cached stdout is printed as the run would');
      assert.match(second.stderr, /1\/1 actions succeeded, 1 from the cache/);
      assert.equal(readFileSync(join(dir, 'out.txt'), 'utf8'), 'cba\n');
      assert.equal(readFileSync(counter, 'utf8'), 'ran\n', 'the command ran once');
      assert.ok(existsSync(join(cacheDir, 'c', 'entries')));

      // Without RAKE_CACHE or --cache it runs.
      const third = await rake(dir, args, { ...process.env, RAKE_CACHE: '' });
      assert.equal(third.code, 0, third.stderr);
      assert.equal(readFileSync(counter, 'utf8'), 'ran\nran\n');
    } finally {
      await removeDir(dir);
      await rm(cacheDir, { recursive: true, force: true });
    }
  });

  it(
    'a damaged entry: the user is told which file, it is removed, and the action runs',
    T,
    async () => {
      const { dir, cacheDir, counter } = await reversingProject();
      try {
        const args = ['--cache', '--cache-dir', join(cacheDir, 'c'), '--progress', 'never'];
        const first = await rake(dir, args, process.env);
        assert.equal(first.code, 0, first.stderr);
        const entries = readdirSync(join(cacheDir, 'c', 'entries'), {
          recursive: true,
          withFileTypes: true,
        })
          .filter((e) => e.isFile() && /^[0-9a-f]{64}$/.test(e.name))
          .map((e) => join(e.parentPath, e.name));
        assert.equal(entries.length, 1);
        const entry = entries[0] as string;
        const bytes = readFileSync(entry);
        bytes[bytes.length - 2] = (bytes[bytes.length - 2] as number) ^ 1;
        writeFileSync(entry, bytes);

        const second = await rake(dir, args, process.env);
        assert.equal(second.code, 0, second.stderr);
        assert.ok(second.stderr.includes(entry), `the warning names ${entry}: ${second.stderr}`);
        assert.match(second.stderr, /is damaged \(.*\): removed, taken as a miss/);
        assert.doesNotMatch(second.stderr, /from the cache/);
        assert.equal(readFileSync(counter, 'utf8'), 'ran\nran\n', 'the action ran again');
        assert.equal(second.stdout, 'built\n');
        // Stored again, whole: the third run is a hit without a warning.
        const third = await rake(dir, args, process.env);
        assert.equal(third.code, 0, third.stderr);
        assert.match(third.stderr, /1 from the cache/);
        assert.doesNotMatch(third.stderr, /damaged/);
      } finally {
        await removeDir(dir);
        await rm(cacheDir, { recursive: true, force: true });
      }
    },
  );
});
