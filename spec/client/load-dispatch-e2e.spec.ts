// Slot-filling dispatch from pushed loads (issue 20) with real servers on loopback and the
// client's real engine: no cost poll per action, one connection per action plus one per host
// per run (counted from the servers' own logs), each host's slots kept full, two clients on
// the same servers seeing each other's jobs.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type RunOptions, run } from '../../src/client/run.js';
import { OFFER_ANNEX } from '../../src/protocol/extensions.js';
import { encodeHeader } from '../../src/protocol/header.js';
import { startBaseServer } from '../helpers/base-server.js';
import { startRecordingProxy } from '../helpers/recording-proxy.js';
import { startServer, type TestServer } from '../server/support.js';
import { only, parse, project, removeDir, runWithStreams, summary, waitFor } from './support.js';

const T = { timeout: 120_000 };

/**
 * A Rakefile with `actions` remote actions on `ports`; `{i}` in `command` becomes the action's
 * index. (It was the first `N`, which also matched an `N` in a mkdtemp path: a gate file
 * `/tmp/rake-client-sBaN5T/go` became `/tmp/rake-client-sBa05T/go`, a file nobody wrote, and the
 * old two-clients case, whose job waited for that gate, hung in about 1 run in 10.)
 */
function rakefile(ports: readonly number[], actions: number, command: string): string {
  return [
    `PORT = ${ports[0]}`,
    `HOSTS = ${ports.map((p) => `127.0.0.1:${p}`).join(' ')}`,
    '',
    'all:',
    ...Array.from(
      { length: actions },
      (_, i) => `\tremote-${command.replaceAll('{i}', String(i))}`,
    ),
    '',
  ].join('\n');
}

const runIn = runWithStreams;

/** The servers' `connection` log lines (one per TCP connection accepted, when it ends). */
const connections = (servers: readonly TestServer[]) =>
  servers.flatMap((s) => s.logs.filter((l) => l.msg === 'connection'));

describe('load streams in a run', () => {
  let servers: TestServer[] = [];
  let dir = '';
  before(async () => {
    servers = await Promise.all([1, 2, 3, 4].map(() => startServer({ maxJobs: 1 })));
    dir = await project();
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await removeDir(dir);
  });

  it(
    '40 actions on 4 one-slot hosts: no cost poll, one stream per host, job connections reused',
    T,
    async () => {
      const ports = servers.map((s) => s.port);
      for (const s of servers) s.logs.length = 0;
      const events = await runIn(dir, rakefile(ports, 40, 'sh -c "sleep 0.05; echo {i}"'));
      assert.equal(summary(events).exitStatus, 0, JSON.stringify(only(events, 'action-failed')));
      assert.equal(summary(events).succeeded, 40);
      assert.equal(only(events, 'cost-polled').length, 0, 'no action polled');
      const reasons = new Set(only(events, 'host-chosen').map((e) => e.reason));
      assert.ok(
        [...reasons].every(
          (r) => r === 'most-free' || r === 'tie-first-listed' || r === 'only-host',
        ),
        [...reasons].join(),
      );
      // Every host took its share: its one slot kept busy, never a pile on the first hosts.
      const perHost = Object.values(summary(events).perHost);
      assert.equal(perHost.length, 4);
      assert.ok(Math.min(...perHost) >= 6, JSON.stringify(summary(events).perHost));
      // The load streams and the kept job connections end with the run (the client sends
      // !D): every connection is logged once closed, with its jobs counted.
      const commands = () =>
        connections(servers).reduce(
          (n, l) => n + (typeof l.commands === 'number' ? l.commands : 0),
          0,
        );
      await waitFor(
        () => commands() === 40 && connections(servers).filter((l) => l.commands === 0).length >= 4,
        10_000,
        'every connection to end',
      );
      const all = connections(servers);
      const watches = all.filter((l) => l.commands === 0 && l.mode !== 'base');
      const pollsOnly = all.filter((l) => l.commands === 0 && l.mode === 'base');
      const jobs = all.filter((l) => (l.commands as number) > 0);
      assert.equal(watches.length, 4, 'one load stream per host');
      assert.equal(pollsOnly.length, 0, 'no connection for a cost query alone');
      // Each stream's opening connection, its cost query answered, carried that host's first
      // jobs (docs/protocol.md, "A warm connection"); the watch went on over a new one.
      assert.equal(watches.filter((l) => l.costQueries === 0).length, 4, JSON.stringify(all));
      assert.equal(jobs.filter((l) => l.costQueries === 1).length, 4, JSON.stringify(all));
      // Job connections are kept (extension reuse): about one per slot and queue place of
      // each host, far fewer than one per action.
      assert.ok(jobs.length <= 16, `${jobs.length} job connections for 40 actions on 4 hosts`);
      assert.ok(all.length <= 40 + 4, `${all.length} connections for 40 actions on 4 hosts`);
    },
  );

  it('two clients on the same servers: the second sees the first one’s jobs', {
    timeout: 30_000,
  }, async () => {
    const [a, b] = servers as [TestServer, TestServer];
    // Client 1 fills host a's only slot with a long job; it is cancelled (unsubscribed: the
    // server kills the job) once client 2 is done. (Before fbc5621 the job waited for a gate
    // file that the test wrote; its hangs were the test's own: see `rakefile` above.)
    const first = run(parse(rakefile([a.port], 1, 'sleep 60')), {
      directory: dir,
      embedded: false,
      fallback: false,
      loadStreams: true,
    }).subscribe();
    try {
      await waitFor(() => a.handle.cost() === 1, 10_000, 'client 1’s job on a');
      // Client 2, with a listed first and no queue beyond the slots, puts its three actions
      // on b, one after the other, never behind client 1's job on a.
      const events = await runIn(dir, rakefile([a.port, b.port], 3, 'echo {i}'), {
        dispatchQueue: 0,
      });
      assert.equal(summary(events).exitStatus, 0);
      assert.deepEqual(summary(events).perHost, { [`127.0.0.1:${b.port}`]: 3 });
    } finally {
      first.unsubscribe();
    }
    await waitFor(() => a.handle.cost() === 0, 10_000, 'client 1’s job to be killed');
  });

  it(
    'base-protocol servers with load streams on: the very connections and bytes of a run without',
    T,
    async () => {
      const bases = await Promise.all([startBaseServer(), startBaseServer()]);
      const proxies = await Promise.all(bases.map((b) => startRecordingProxy(b.port)));
      const ports = proxies.map((p) => p.port);
      const query = encodeHeader({ kind: 'plain', code: '!E', length: 0, annex: OFFER_ANNEX });
      /** Per server: its connections, each as `query` (the cost query, byte-exact) or `job`. */
      const conversations = async (options: RunOptions) => {
        for (const p of proxies) p.connections.length = 0;
        const events = await runIn(dir, rakefile(ports, 4, 'echo {i}'), options);
        assert.equal(summary(events).exitStatus, 0, JSON.stringify(only(events, 'action-failed')));
        await Promise.all(proxies.map((p) => p.settled()));
        const kinds = proxies.map((p) =>
          p.connections
            .map((c) => {
              if (c.toServer.equals(query)) return 'query';
              assert.ok(!c.toServer.includes('!X'), 'an extension message reached a base server');
              assert.ok(c.toServer.includes('!C'), `neither a query nor a job: ${c.toServer}`);
              return 'job';
            })
            .sort(),
        );
        return { events, kinds };
      };
      try {
        for (const jobs of [undefined, 1]) {
          // All 4 actions at once: one shared round (one query per server); with -j 1 each
          // action polls on its own: 4 queries per server. Streams on or off, the same.
          const on = await conversations(jobs === undefined ? {} : { jobs });
          const off = await conversations({ loadStreams: false, ...(jobs ? { jobs } : {}) });
          const queries = (k: string[][]) => k.map((c) => c.filter((x) => x === 'query').length);
          assert.deepEqual(queries(on.kinds), jobs === 1 ? [4, 4] : [1, 1], `-j ${jobs}`);
          assert.deepEqual(queries(on.kinds), queries(off.kinds), `-j ${jobs}`);
          assert.equal(on.kinds.flat().filter((x) => x === 'job').length, 4);
          // Each action chose from a poll's answers, as without load streams.
          assert.equal(only(on.events, 'cost-polled').length, 4 * 2);
        }
        assert.deepEqual(
          bases.flatMap((b) => b.commands).filter((c) => c === 'echo 0').length,
          4,
          'echo 0 ran once per run',
        );
      } finally {
        await Promise.all(proxies.map((p) => p.close()));
        await Promise.all(bases.map((b) => b.close()));
      }
    },
  );
});
