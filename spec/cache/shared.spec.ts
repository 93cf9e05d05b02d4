// The shared action cache (issue 21, extension `results`): a rakeserver keeps the results of
// the jobs it ran, under its own key, and answers a client's `!X lookup` from them, so a
// second clone with an empty local cache gets hits. Real servers on loopback, real commands,
// real files; the wire part from a raw peer that shares no code with src/.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { LocalCache } from '../../src/cache/store.js';
import { type ServeArgs, serveOptionsFrom } from '../../src/cli/commands/serve.js';
import { renderReport } from '../../src/observe/report.js';
import { buildTimeline } from '../../src/observe/timeline.js';
import { only, project, removeDir, runAll, summary } from '../client/support.js';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import { assertHealthy, startServer, type TestServer, waitFor } from '../server/support.js';

const T = { timeout: 120_000 };

const cat = (...parts: Array<Buffer | string>) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p)));

const jobsRun = (server: TestServer) => server.logs.filter((l) => l.msg === 'job start').length;
const hits = (server: TestServer) => server.logs.filter((l) => l.msg === 'result hit').length;

/** Every file under `dir`, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));
}

/** One job with `!X lookup` on a fresh raw connection; returns the `hit` line, if any. */
async function lookupJob(server: TestServer, command: string): Promise<string | undefined> {
  const peer = await RawPeer.connect(server.port);
  await peer.send(pkt('!X', 'hello rake/1 ext=results'));
  await peer.expect(pkt('!X', 'ok ext=results'));
  await peer.send(pkt('!X', 'lookup'), pkt('!C', command));
  let hit: string | undefined;
  const head = (await peer.read(64)).toString('latin1').trimEnd();
  if (head.startsWith('!X')) {
    hit = (await peer.read(Number(head.slice(2)))).toString();
    await peer.expect(hdr('!SSI 4'));
  } else {
    assert.equal(head, '!SSI 4');
  }
  await peer.expect(cat('out\n', hdr('!SSIF1')));
  await peer.send('!N');
  await peer.expect(cat(hdr('!S!NF1'), 'o'));
  await peer.send('!Z');
  await peer.expect(cat(hdr('!S!ZF1'), '2'));
  await peer.send('!T');
  await peer.expect('hi');
  await peer.send(hdr('!D0'));
  assert.equal((await peer.readToEnd()).length, 0);
  return hit;
}

describe('the shared action cache (extension results)', () => {
  it('the platform is asked once per host and run, not once per action', T, async () => {
    const server = await startServer({});
    const dir = await project({ 'in.txt': 'platform once\n' });
    const cacheDir = await mkdtemp(join(tmpdir(), 'rake-cache-once-'));
    // A connection of our client that neither asks the cost nor sends a command is the hello
    // that asks the platform (`platform?`).
    const platformHellos = () =>
      server.logs.filter(
        (l) =>
          l.msg === 'connection' &&
          l.commands === 0 &&
          l.costQueries === 0 &&
          l.mode === 'extended',
      ).length;
    try {
      const text = [
        `PORT = ${server.port}`,
        `HOSTS = 127.0.0.1:${server.port}`,
        '',
        'build:',
        ...Array.from({ length: 8 }, (_, i) => [
          `\tremote-sh -c 'cat in.txt; echo ${i}'`,
          '\t\trequires in.txt',
        ]).flat(),
        '',
      ].join('\n');
      const cache = new LocalCache(cacheDir);
      const first = await runAll(dir, text, { cache, embedded: false });
      assert.equal(summary(first).exitStatus, 0);
      assert.equal(jobsRun(server), 8);
      // Logged as the connection ends, early in the run; more than one would show here.
      assert.ok(await waitFor(() => platformHellos() >= 1));
      assert.equal(platformHellos(), 1, 'the first run asked once');
      const second = await runAll(dir, text, { cache, embedded: false });
      assert.equal(summary(second).cached, 8, 'every action a local hit');
      assert.equal(jobsRun(server), 8);
      assert.ok(await waitFor(() => platformHellos() >= 2));
      assert.equal(platformHellos(), 2, 'the second run asked once');
    } finally {
      await server.close();
      await removeDir(dir);
      await rm(cacheDir, { recursive: true, force: true });
    }
  });

  it('a second clone with an empty local cache runs 0 jobs on the server', T, async () => {
    const server = await startServer({});
    const files = { 'in.txt': 'shared cache\n' };
    const a = await project(files);
    const b = await project(files);
    const cacheA = await mkdtemp(join(tmpdir(), 'rake-cache-a-'));
    const cacheB = await mkdtemp(join(tmpdir(), 'rake-cache-b-'));
    try {
      const text = [
        `PORT = ${server.port}`,
        `HOSTS = 127.0.0.1:${server.port}`,
        '',
        'build:',
        `\tremote-sh -c 'tr a-z A-Z < in.txt > out.txt; chmod 750 out.txt; printf "printed\\n"'`,
        '\t\trequires in.txt',
        '',
      ].join('\n');
      const first = await runAll(a, text, { cache: new LocalCache(cacheA), embedded: false });
      assert.equal(summary(first).exitStatus, 0);
      assert.equal(jobsRun(server), 1);
      assert.equal(hits(server), 0);

      const second = await runAll(b, text, { cache: new LocalCache(cacheB), embedded: false });
      assert.equal(summary(second).exitStatus, 0);
      assert.equal(jobsRun(server), 1, 'the teammate ran nothing on the server');
      assert.equal(hits(server), 1);
      const ok = only(second, 'action-succeeded');
      assert.match(ok[0]?.cached?.key ?? '', /^[0-9a-f]{64}$/);
      assert.equal(ok[0]?.cached?.server, true);
      assert.match(renderReport(buildTimeline(second)), /results its host stored .*nothing ran/);
      assert.deepEqual(readFileSync(join(b, 'out.txt')), readFileSync(join(a, 'out.txt')));
      assert.equal(readFileSync(join(b, 'out.txt'), 'utf8'), 'SHARED CACHE\n');
      assert.equal(statSync(join(b, 'out.txt')).mode & 0o777, 0o750);
      assert.deepEqual(
        only(second, 'output').map((e) => e.stdout.text()),
        ['printed\n'],
      );

      // Another input is another key: it runs.
      writeFileSync(join(b, 'in.txt'), 'changed\n');
      await runAll(b, text, { cache: new LocalCache(cacheB), embedded: false });
      assert.equal(jobsRun(server), 2);
      assert.equal(readFileSync(join(b, 'out.txt'), 'utf8'), 'CHANGED\n');
      assert.deepEqual(await assertHealthy(server), []);
    } finally {
      await server.close();
      await removeDir(a);
      await removeDir(b);
      await rm(cacheA, { recursive: true, force: true });
      await rm(cacheB, { recursive: true, force: true });
    }
  });

  it(
    'an action exempt from the cache (# rake-ts: no-cache) is neither answered nor stored',
    T,
    async () => {
      const server = await startServer({});
      const dirs = [await project({}), await project({})];
      try {
        const text = [
          `PORT = ${server.port}`,
          `HOSTS = 127.0.0.1:${server.port}`,
          '',
          'stamp:',
          '\tremote-date +%N > stamp   # rake-ts: no-cache',
          '',
        ].join('\n');
        for (const [i, dir] of dirs.entries()) {
          const cacheDir = join(dir, '.cache-dir');
          const events = await runAll(dir, text, {
            cache: new LocalCache(cacheDir),
            embedded: false,
          });
          assert.equal(summary(events).exitStatus, 0);
          assert.equal(only(events, 'action-succeeded')[0]?.cached, undefined);
          assert.equal(jobsRun(server), i + 1);
        }
        const store = join(server.workdir, 'results');
        assert.equal(existsSync(store) ? filesUnder(store).length : 0, 0, 'nothing stored');
      } finally {
        await server.close();
        for (const d of dirs) await removeDir(d);
      }
    },
  );

  it(
    'a client cannot supply a result: hit is refused, lookup only when negotiated',
    T,
    async () => {
      const server = await startServer({});
      try {
        const forged = `hit ${'ab'.repeat(32)}`;
        const peer = await RawPeer.connect(server.port);
        await peer.send(pkt('!X', 'hello rake/1 ext=results'));
        await peer.expect(pkt('!X', 'ok ext=results'));
        await peer.send(pkt('!X', forged));
        const refusal = await peer.packet();
        assert.match(refusal.payload.toString(), /^rakeserver: refused: bad-extension: /);
        assert.equal((await peer.packet()).payload.toString(), '2');

        const other = await RawPeer.connect(server.port);
        await other.send(pkt('!X', 'hello rake/1 ext=stderr'));
        await other.expect(pkt('!X', 'ok ext=stderr'));
        await other.send(pkt('!X', 'lookup'));
        const refused = await other.packet();
        assert.match(refused.payload.toString(), /^rakeserver: refused: bad-extension: /);
        assert.equal((await other.packet()).payload.toString(), '2');
        const store = join(server.workdir, 'results');
        assert.equal(existsSync(store) ? filesUnder(store).length : 0, 0, 'nothing stored');
      } finally {
        await server.close();
      }
    },
  );

  it(
    'hits on the wire; a corrupt entry is a miss and the job runs; the store is bounded',
    T,
    async () => {
      const server = await startServer({ resultsSize: 2048 });
      try {
        const command = 'printf hi > o; echo out';
        assert.equal(await lookupJob(server, command), undefined);
        assert.equal(jobsRun(server), 1);
        const hit = await lookupJob(server, command);
        assert.match(hit ?? '', /^hit [0-9a-f]{64}$/);
        assert.equal(jobsRun(server), 1);

        for (const f of filesUnder(join(server.workdir, 'results'))) writeFileSync(f, 'garbage');
        assert.equal(await lookupJob(server, command), undefined, 'corrupt: a miss');
        assert.equal(jobsRun(server), 2);
        assert.ok(server.logs.some((l) => l.part === 'results' && l.level === 40));
        assert.match((await lookupJob(server, command)) ?? '', /^hit /, 'stored again');

        // Many distinct results: the store stays under its bound.
        for (let n = 0; n < 30; n++) await lookupJob(server, `${command} # ${n}`);
        const bytes = filesUnder(join(server.workdir, 'results')).reduce(
          (sum, f) => sum + statSync(f).size,
          0,
        );
        assert.ok(bytes <= 2048, `${bytes} bytes stored`);
        assert.deepEqual(await assertHealthy(server), []);
      } finally {
        await server.close();
      }
    },
  );

  it(
    "entries are keyed by the server's own platform; --results-size 0 grants none",
    T,
    async () => {
      const workdir = await mkdtemp(join(tmpdir(), 'rake-results-wd-'));
      const command = 'printf hi > o; echo out';
      const on = async (cc: string, expectHit: boolean) => {
        const server = await startServer({ workdir, platform: { cc } });
        try {
          const hit = await lookupJob(server, command);
          assert.equal(hit !== undefined, expectHit, `cc=${cc}`);
          assert.equal(jobsRun(server), expectHit ? 0 : 1);
        } finally {
          await server.close();
        }
      };
      try {
        await on('gcc-12', false);
        await on('gcc-13', false); // the same job directory, another kind of host: a miss
        await on('gcc-12', true); // kept in the given workdir across a restart
      } finally {
        await rm(workdir, { recursive: true, force: true });
      }

      const opts = serveOptionsFrom(
        { 'cache-size': '1M', 'results-size': '0' } as unknown as ServeArgs,
        pino({ level: 'silent' }),
      );
      assert.equal(opts.resultsSize, 0);
      const off = await startServer({ resultsSize: 0 });
      try {
        const peer = await RawPeer.connect(off.port);
        await peer.send(pkt('!X', 'hello rake/1 ext=stderr,results'));
        await peer.expect(pkt('!X', 'ok ext=stderr'));
        peer.destroy();
        assert.equal(existsSync(join(off.workdir, 'results')), false);
      } finally {
        await off.close();
      }
    },
  );
});
