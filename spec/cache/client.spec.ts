// `--cache` in the client (issue 21): a remote action whose key the local cache holds is not
// run; its stdout, output files and modes come back as a run's would, and the events say
// `cached`. Real servers on loopback, real commands, real files.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { LocalCache } from '../../src/cache/store.js';
import type { RakeEvent } from '../../src/client/events.js';
import { renderReport } from '../../src/observe/report.js';
import { formatSummaryLine, hostStats } from '../../src/observe/summary.js';
import { buildTimeline } from '../../src/observe/timeline.js';
import { chromeTrace } from '../../src/observe/trace.js';
import { serve } from '../../src/server/index.js';
import {
  closeAll,
  freePort,
  only,
  project,
  removeDir,
  runAll,
  summary,
} from '../client/support.js';
import { startBaseServer } from '../helpers/base-server.js';

const T = { timeout: 120_000 };

/** The lines of the counter file: one per time the command really ran. */
function runs(counter: string): number {
  return existsSync(counter)
    ? readFileSync(counter, 'utf8')
        .split('\n')
        .filter((l) => l).length
    : 0;
}

async function setup() {
  const dir = await project({ 'in.txt': 'hello cache\n' });
  const cacheDir = await mkdtemp(join(tmpdir(), 'rake-cache-dir-'));
  const counter = join(cacheDir, 'counter');
  return { dir, cacheDir, counter };
}

function rakefile(port: number, hosts: string, command: string): string {
  return [
    `PORT = ${port}`,
    `HOSTS = ${hosts}`,
    '',
    'build:',
    `\tremote-${command}`,
    '\t\trequires in.txt',
    '',
  ].join('\n');
}

function succeeded(events: readonly RakeEvent[]) {
  const ok = only(events, 'action-succeeded');
  assert.equal(ok.length, 1, JSON.stringify(only(events, 'action-failed')));
  return ok[0] as (typeof ok)[0];
}

describe('the local action cache in a run', () => {
  it(
    'a second run takes the result from the cache: stdout, files and modes restored, nothing run',
    T,
    async () => {
      const { dir, cacheDir, counter } = await setup();
      try {
        // Nothing listens at the host's port: the run serves it with an embedded server, which
        // is this process (its platform is known).
        const text = rakefile(
          await freePort(),
          `127.0.0.1:${await freePort()}`,
          `sh -c 'echo ran >> ${counter}; tr a-z A-Z < in.txt > out.txt; chmod 750 out.txt; printf "printed\\n"'`,
        );
        const cache = new LocalCache(cacheDir);
        const first = await runAll(dir, text, { cache });
        assert.equal(summary(first).exitStatus, 0);
        assert.equal(succeeded(first).cached, undefined);
        assert.equal(runs(counter), 1);
        const bytes = readFileSync(join(dir, 'out.txt'));
        const mode = statSync(join(dir, 'out.txt')).mode & 0o777;
        assert.equal(bytes.toString(), 'HELLO CACHE\n');
        assert.equal(mode, 0o750);

        await unlink(join(dir, 'out.txt'));
        const second = await runAll(dir, text, { cache });
        const ok = succeeded(second);
        assert.match(ok.cached?.key ?? '', /^[0-9a-f]{64}$/);
        assert.equal(runs(counter), 1, 'the command did not run again');
        assert.deepEqual(ok.files, ['out.txt']);
        assert.deepEqual(readFileSync(join(dir, 'out.txt')), bytes);
        assert.equal(statSync(join(dir, 'out.txt')).mode & 0o777, mode);
        assert.deepEqual(
          only(second, 'output').map((e) => e.stdout.text()),
          ['printed\n'],
        );
        assert.equal(summary(second).cached, 1);
        assert.deepEqual(summary(second).perHost, {}, 'no host ran anything');
        assert.equal(only(second, 'upload-done').length, 0);
        // The timeline, trace and report say it; no host counts it as work.
        const timeline = buildTimeline(second);
        assert.deepEqual(
          timeline.actions.map((a) => a.cached),
          [true],
        );
        assert.ok(hostStats(timeline).every((h) => h.actions === 0 && h.busyMs === 0));
        assert.equal(timeline.actions[0]?.timings.run, 0);
        const traced = chromeTrace(timeline).traceEvents.filter(
          (e) => (e.args as { cached?: boolean } | undefined)?.cached === true,
        );
        assert.equal(traced.length, 1);
        assert.match(
          renderReport(timeline),
          /from the local action cache \(--cache\): nothing ran/,
        );
        assert.match(
          formatSummaryLine(summary(second)),
          /1\/1 actions succeeded, 1 from the cache/,
        );

        // A changed input is a miss: it runs again.
        await writeFile(join(dir, 'in.txt'), 'changed\n');
        const third = await runAll(dir, text, { cache });
        assert.equal(succeeded(third).cached, undefined);
        assert.equal(runs(counter), 2);
        assert.equal(readFileSync(join(dir, 'out.txt'), 'utf8'), 'CHANGED\n');

        // Without the cache nothing is looked up.
        const fourth = await runAll(dir, text, {});
        assert.equal(succeeded(fourth).cached, undefined);
        assert.equal(runs(counter), 3);
      } finally {
        await removeDir(dir);
        await rm(cacheDir, { recursive: true, force: true });
      }
    },
  );

  it(
    "a hit shows the command's warnings (stderr of a success) again, as ccache does",
    T,
    async () => {
      const { dir, cacheDir, counter } = await setup();
      try {
        const text = rakefile(
          await freePort(),
          `127.0.0.1:${await freePort()}`,
          `sh -c 'echo ran >> ${counter}; echo "in.txt:1: warning: shouting" >&2; tr a-z A-Z < in.txt'`,
        );
        const cache = new LocalCache(cacheDir);
        const first = await runAll(dir, text, { cache });
        assert.equal(succeeded(first).stderr, 'in.txt:1: warning: shouting\n');
        const second = await runAll(dir, text, { cache });
        const ok = succeeded(second);
        assert.ok(ok.cached, 'a hit');
        assert.equal(runs(counter), 1);
        assert.equal(ok.stderr, 'in.txt:1: warning: shouting\n');
        assert.deepEqual(
          only(second, 'output').map((e) => e.stdout.text()),
          ['HELLO CACHE\n'],
        );
      } finally {
        await removeDir(dir);
        await rm(cacheDir, { recursive: true, force: true });
      }
    },
  );

  it('only a success is stored', T, async () => {
    const { dir, cacheDir, counter } = await setup();
    try {
      const text = rakefile(
        await freePort(),
        `127.0.0.1:${await freePort()}`,
        `sh -c 'echo ran >> ${counter}; exit 3'`,
      );
      const cache = new LocalCache(cacheDir);
      for (let n = 1; n <= 2; n++) {
        const events = await runAll(dir, text, { cache });
        assert.equal(summary(events).exitStatus, 1);
        assert.equal(runs(counter), n);
      }
    } finally {
      await removeDir(dir);
      await rm(cacheDir, { recursive: true, force: true });
    }
  });

  it(
    'a rakeserver says its platform when asked: hits on it, and its labels are part of the key',
    T,
    async () => {
      const { dir, cacheDir, counter } = await setup();
      const gcc12 = await serve({ port: 0, graceSeconds: 0, platform: { cc: 'gcc-12' } });
      const gcc13 = await serve({ port: 0, graceSeconds: 0, platform: { cc: 'gcc-13' } });
      try {
        const command = `sh -c 'echo ran >> ${counter}; cat in.txt'`;
        const on = async (port: number) => rakefile(await freePort(), `127.0.0.1:${port}`, command);
        const cache = new LocalCache(cacheDir);
        const first = await runAll(dir, await on(gcc12.port), { cache, embedded: false });
        assert.equal(succeeded(first).cached, undefined);
        const second = await runAll(dir, await on(gcc12.port), { cache, embedded: false });
        assert.ok(succeeded(second).cached, 'the same kind of host: a hit');
        assert.equal(runs(counter), 1);
        const other = await runAll(dir, await on(gcc13.port), { cache, embedded: false });
        assert.equal(succeeded(other).cached, undefined, 'another label: a miss');
        assert.equal(runs(counter), 2);
      } finally {
        await closeAll([gcc12, gcc13]);
        await removeDir(dir);
        await rm(cacheDir, { recursive: true, force: true });
      }
    },
  );

  it('a base-protocol host has no platform: no hits, nothing stored', T, async () => {
    const { dir, cacheDir } = await setup();
    const base = await startBaseServer();
    try {
      const text = rakefile(base.port, `127.0.0.1:${base.port}`, 'cat in.txt');
      const cache = new LocalCache(cacheDir);
      for (let n = 1; n <= 2; n++) {
        const events = await runAll(dir, text, { cache, embedded: false });
        assert.equal(succeeded(events).cached, undefined);
        assert.equal(base.commands.length, n);
      }
      assert.equal(existsSync(join(cacheDir, 'entries')), false);
    } finally {
      await base.close();
      await removeDir(dir);
      await rm(cacheDir, { recursive: true, force: true });
    }
  });
});
