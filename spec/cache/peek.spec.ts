// The shared action cache across servers (issue 21, extension `results`): `!X lookup only`
// asks a server for a stored result without letting it run the command (a miss is answered
// `!X miss`), so a client can ask every server of the run before it runs an action on one.
// The wire part from a raw peer that shares no code with src/; real servers on loopback,
// real commands and files.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { LocalCache } from '../../src/cache/store.js';
import { only, project, removeDir, runAll, summary } from '../client/support.js';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import { assertHealthy, startServer, type TestServer } from '../server/support.js';

const T = { timeout: 120_000 };

const cat = (...parts: Array<Buffer | string>) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p)));

const jobsRun = (server: TestServer) => server.logs.filter((l) => l.msg === 'job start').length;

/** The rest of a stored result's reply for `printf hi > o; echo out`: stdout and the file `o`. */
async function expectResult(peer: RawPeer): Promise<void> {
  await peer.expect(cat(hdr('!SSI 4'), 'out\n', hdr('!SSIF1')));
  await peer.send('!N');
  await peer.expect(cat(hdr('!S!NF1'), 'o'));
  await peer.send('!Z');
  await peer.expect(cat(hdr('!S!ZF1'), '2'));
  await peer.send('!T');
  await peer.expect('hi');
}

/**
 * One job with `!X lookup` (or `lookup only`) on a fresh raw connection; returns the `!X`
 * message that came first (`hit …` or `miss`), or `undefined` when the command ran.
 */
async function ask(server: TestServer, command: string, verb: string): Promise<string | undefined> {
  const peer = await RawPeer.connect(server.port);
  try {
    await peer.send(pkt('!X', 'hello rake/1 ext=results'));
    await peer.expect(pkt('!X', 'ok ext=results'));
    await peer.send(pkt('!X', verb), pkt('!C', command));
    const head = await peer.header(15_000);
    if (head.startsWith('!X')) {
      const said = (await peer.read(Number(head.slice(2)))).toString('latin1');
      if (said !== 'miss') await expectResult(peer);
      await peer.send(hdr('!D0'));
      assert.equal((await peer.readToEnd()).length, 0);
      return said;
    }
    // The command ran: its ordinary reply.
    assert.equal(head, '!SSI 4');
    await peer.expect(cat('out\n', hdr('!SSIF1')));
    await peer.send('!N');
    await peer.expect(cat(hdr('!S!NF1'), 'o'));
    await peer.send('!Z');
    await peer.expect(cat(hdr('!S!ZF1'), '2'));
    await peer.send('!T');
    await peer.expect('hi');
    await peer.send(hdr('!D0'));
    assert.equal((await peer.readToEnd()).length, 0);
    return undefined;
  } finally {
    peer.destroy();
  }
}

describe('lookup only: a stored result or nothing (extension results)', () => {
  it('a miss runs nothing and says miss; a hit is the reply of lookup', T, async () => {
    const server = await startServer({});
    const marks = await mkdtemp(join(tmpdir(), 'rake-peek-'));
    const ran = join(marks, 'ran');
    const command = `touch ${ran}; printf hi > o; echo out`;
    try {
      assert.equal(await ask(server, command, 'lookup only'), 'miss');
      assert.equal(existsSync(ran), false, 'the command did not run');
      assert.equal(jobsRun(server), 0);
      assert.ok(server.logs.some((l) => l.msg === 'result miss (lookup only): not run'));

      // An ordinary lookup misses, runs the command and stores its result.
      assert.equal(await ask(server, command, 'lookup'), undefined);
      assert.equal(existsSync(ran), true);
      assert.equal(jobsRun(server), 1);
      rmSync(ran);

      const hit = await ask(server, command, 'lookup only');
      assert.match(hit ?? '', /^hit [0-9a-f]{64}$/);
      assert.equal(await ask(server, command, 'lookup'), hit, 'the same key as lookup');
      assert.equal(existsSync(ran), false, 'a hit runs nothing');
      assert.equal(jobsRun(server), 1);
      assert.deepEqual(await assertHealthy(server), []);
    } finally {
      await server.close();
      await rm(marks, { recursive: true, force: true });
    }
  });

  it('with reuse, the job after a miss follows on the same connection', T, async () => {
    const server = await startServer({});
    try {
      const peer = await RawPeer.connect(server.port);
      await peer.send(pkt('!X', 'hello rake/1 ext=results,reuse'));
      await peer.expect(pkt('!X', 'ok ext=results,reuse'));
      await peer.send(pkt('!X', 'lookup only'), pkt('!C', 'echo first'));
      await peer.expect(pkt('!X', 'miss'));
      await peer.send(pkt('!C', 'echo second'));
      await peer.expect(cat(hdr('!SS  7'), 'second\n'));
      await peer.send(hdr('!D0'));
      assert.equal((await peer.readToEnd()).length, 0);
      assert.equal(jobsRun(server), 1, 'only the second command ran');
      assert.deepEqual(await assertHealthy(server), []);
    } finally {
      await server.close();
    }
  });

  it('a client cannot send miss; lookup only needs results', T, async () => {
    const server = await startServer({});
    try {
      const peer = await RawPeer.connect(server.port);
      await peer.send(pkt('!X', 'hello rake/1 ext=results'));
      await peer.expect(pkt('!X', 'ok ext=results'));
      await peer.send(pkt('!X', 'miss'));
      assert.match((await peer.packet()).payload.toString(), /^rakeserver: refused: bad-extension/);
      assert.equal((await peer.packet()).payload.toString(), '2');

      const other = await RawPeer.connect(server.port);
      await other.send(pkt('!X', 'hello rake/1 ext=stderr'));
      await other.expect(pkt('!X', 'ok ext=stderr'));
      await other.send(pkt('!X', 'lookup only'));
      assert.match(
        (await other.packet()).payload.toString(),
        /^rakeserver: refused: bad-extension/,
      );
      assert.equal((await other.packet()).payload.toString(), '2');
      assert.equal(jobsRun(server), 0);
    } finally {
      await server.close();
    }
  });
});

/** A Rakefile of `n` actions, each reading its own input and writing its own output. */
function rakefile(ports: readonly number[], n: number): string {
  return [
    `PORT = ${ports[0]}`,
    `HOSTS = ${ports.map((p) => `127.0.0.1:${p}`).join(' ')}`,
    '',
    'build:',
    ...Array.from({ length: n }, (_, i) => [
      `\tremote-sh -c 'tr a-z A-Z < in${i}.txt > out${i}.txt; chmod 750 out${i}.txt; echo printed ${i}'`,
      `\t\trequires in${i}.txt`,
    ]).flat(),
    '',
  ].join('\n');
}

const inputs = (n: number) =>
  Object.fromEntries(Array.from({ length: n }, (_, i) => [`in${i}.txt`, `input ${i}\n`]));

/** What the failed actions of a run said, for an assertion's message. */
const failures = (events: Parameters<typeof summary>[0]) =>
  only(events, 'action-failed')
    .map((e) => `${e.message} ${e.stderr}`)
    .join('; ');

/** Files the server received as requirements (each `requirements received` line). */
const uploaded = (server: TestServer) =>
  server.logs
    .filter((l) => l.msg === 'requirements received')
    .reduce((n, l) => n + Number(l.files), 0);

describe('a second clone asks every server of the run (client, --cache)', () => {
  it('results stored on A only: a clone with HOSTS = B, A runs 0 jobs', T, async () => {
    const n = 6;
    const aWork = await mkdtemp(join(tmpdir(), 'rake-peek-a-'));
    let a = await startServer({ workdir: aWork });
    const b = await startServer({});
    const first = await project(inputs(n));
    const clone = await project(inputs(n));
    const cacheA = await mkdtemp(join(tmpdir(), 'rake-peek-cache-a-'));
    const cacheB = await mkdtemp(join(tmpdir(), 'rake-peek-cache-b-'));
    try {
      const run1 = await runAll(first, rakefile([a.port], n), {
        cache: new LocalCache(cacheA),
        embedded: false,
      });
      assert.equal(summary(run1).exitStatus, 0, failures(run1));
      assert.equal(jobsRun(a), n, 'run 1 filled A');
      assert.equal(jobsRun(b), 0);
      // A again on its workdir (its results are kept there), now dearer than B: the cost
      // poll sends every action of the clone to B, which never saw them.
      await a.close();
      a = await startServer({ workdir: aWork, costOffset: 100 });

      // Placed by the cost poll (loadStreams: false): load streams do not see a cost offset,
      // they would spread the actions over A and B by free slots.
      const run2 = await runAll(clone, rakefile([b.port, a.port], n), {
        cache: new LocalCache(cacheB),
        embedded: false,
        loadStreams: false,
      });
      assert.equal(summary(run2).exitStatus, 0, failures(run2));
      assert.equal(jobsRun(a) + jobsRun(b), 0, 'the clone ran no job on either server');
      const ok = only(run2, 'action-succeeded');
      assert.equal(ok.length, n);
      for (const e of ok) {
        assert.equal(e.host, `127.0.0.1:${b.port}`, 'sent to B');
        assert.equal(e.cached?.server, true, 'answered from stored results');
        assert.equal(e.cached?.from, `127.0.0.1:${a.port}`, "A's");
      }
      for (let i = 0; i < n; i++) {
        assert.deepEqual(
          readFileSync(join(clone, `out${i}.txt`)),
          readFileSync(join(first, `out${i}.txt`)),
        );
        assert.equal(statSync(join(clone, `out${i}.txt`)).mode & 0o777, 0o750);
      }
      assert.deepEqual(
        only(run2, 'output')
          .map((e) => e.stdout.text())
          .sort(),
        Array.from({ length: n }, (_, i) => `printed ${i}\n`).sort(),
      );
      // The clone's own cache now holds them: a third run asks no server.
      const run3 = await runAll(clone, rakefile([b.port, a.port], n), {
        cache: new LocalCache(cacheB),
        embedded: false,
      });
      assert.equal(summary(run3).cached, n);
      assert.equal(jobsRun(a) + jobsRun(b), 0);
      // (A's cost is its offset, 100, by design: only B is checked for leftovers.)
      assert.deepEqual(await assertHealthy(b), []);
    } finally {
      await a.close();
      await b.close();
      await removeDir(first);
      await removeDir(clone);
      await rm(cacheA, { recursive: true, force: true });
      await rm(cacheB, { recursive: true, force: true });
      await rm(aWork, { recursive: true, force: true });
    }
  });

  it(
    'a first run on clean servers asks the other server but uploads each input once',
    T,
    async () => {
      const n = 6;
      const a = await startServer({});
      const b = await startServer({});
      // Inputs of 64 KiB or more go through the input cache (`have` → `need`): a server that
      // needs one never ran a job on it, so the peek ends there. (Smaller ones are pushed
      // without a `have`, not cached, and so sent with a peek: docs/client.md.)
      const big = Object.fromEntries(
        Object.entries(inputs(n)).map(([name, text]) => [name, text.repeat(8192)]),
      );
      const dir = await project(big);
      const cacheDir = await mkdtemp(join(tmpdir(), 'rake-peek-cache-'));
      try {
        const run1 = await runAll(dir, rakefile([a.port, b.port], n), {
          cache: new LocalCache(cacheDir),
          embedded: false,
        });
        assert.equal(summary(run1).exitStatus, 0, failures(run1));
        assert.equal(jobsRun(a) + jobsRun(b), n, 'every action ran once');
        // Every action was asked of the server it did not go to: a `have` there, answered with
        // a `need` (it never saw the input), and then nothing: no upload, no lookup.
        const peeks = (s: TestServer) =>
          s.logs.filter((l) => l.msg === 'have' && Number(l.need) > 0).length;
        assert.equal(peeks(a) + peeks(b), 2 * n, 'a have per action on each server');
        assert.equal(uploaded(a) + uploaded(b), n, 'each input uploaded once');
        const notRun = (s: TestServer) =>
          s.logs.filter((l) => l.msg === 'result miss (lookup only): not run').length;
        assert.equal(notRun(a) + notRun(b), 0, 'the need ended each peek');
      } finally {
        await a.close();
        await b.close();
        await removeDir(dir);
        await rm(cacheDir, { recursive: true, force: true });
      }
    },
  );
});
