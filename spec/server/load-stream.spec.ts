// Extensions `load` and `reuse` on the wire (docs/protocol.md, "load", "reuse"): bytes from a
// raw peer that shares no code with src/. A watching connection hears the server's load at
// once, on every change made by any client's jobs, and again at the beat interval while
// nothing changes; a `reuse` connection runs job after job, each in a fresh directory.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import { waitUntil } from '../helpers/wait.js';
import { assertHealthy, startServer, type TestServer, waitFor } from './support.js';

const cat = (...parts: Array<Buffer | string>) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p)));

const load = (jobs: number, running: number, queued: number, slots: number, beat: number) =>
  pkt('!X', `load jobs=${jobs} running=${running} queued=${queued} slots=${slots} beat=${beat}`);

/** Opens a watching connection: the offer, the hello, `watch`; returns it after the first load. */
async function watch(port: number, slots: number, beat: number): Promise<RawPeer> {
  const peer = await RawPeer.connect(port);
  // The load stream's connection asks the cost first (the offer), then says hello on it.
  await peer.send(hdr(`!E0${' '.repeat(55)}rake/1`));
  const reply = await peer.header();
  // The cost: connections of an earlier test may still be winding down.
  assert.match(reply, /^!E1 +rake\/1 /);
  assert.match((await peer.read(1)).toString('latin1'), /^\d$/);
  await peer.send(pkt('!X', 'hello rake/1 ext=load'), pkt('!X', 'watch'));
  await peer.expect(cat(pkt('!X', 'ok ext=load'), load(0, 0, 0, slots, beat)));
  return peer;
}

/** One `!X` message, header and payload, as sent. */
async function extension(peer: RawPeer, timeoutMs = 10_000): Promise<Buffer> {
  const head = await peer.header(timeoutMs);
  const m = /^!X(\d+)$/.exec(head);
  if (!m) throw new Error(`not an !X header: ${JSON.stringify(head)}`);
  return Buffer.concat([hdr(head), await peer.read(Number(m[1]), timeoutMs)]);
}

/** Reads `!X load` messages until one equals `want` (each must be a load message). */
async function until(peer: RawPeer, want: Buffer): Promise<string[]> {
  const seen: string[] = [];
  for (;;) {
    const message = await extension(peer);
    const text = message.subarray(64).toString('latin1');
    assert.match(text, /^load jobs=\d+ running=\d+ queued=\d+ slots=\d+ beat=\d+$/);
    seen.push(text);
    if (message.equals(want)) return seen;
  }
}

describe('extension load: the server pushes its load', { timeout: 60_000 }, () => {
  let server: TestServer;
  let gates = '';
  before(async () => {
    server = await startServer({ maxJobs: 1, heartbeatIntervalSeconds: 0.3 });
    gates = await mkdtemp(join(tmpdir(), 'rake-load-'));
  });
  after(async () => {
    await server.close();
    await rm(gates, { recursive: true, force: true });
  });

  it('every client’s jobs change the load, at once; silence is never longer than the beat', async () => {
    const watcher = await watch(server.port, 1, 300);
    const go = join(gates, 'go');
    const running = join(gates, 'running');
    // A base-mode client (another one: the reference's bytes) takes the only slot...
    const first = await RawPeer.connect(server.port);
    await first.send(
      pkt('!C', `touch ${running}; while [ ! -e ${go} ]; do sleep 0.01; done; echo one`),
    );
    await waitUntil(() => existsSync(running), { ms: 10_000, every: 10, what: 'the first job' });
    await until(watcher, load(1, 1, 0, 1, 300));
    // ...and a second job waits for it.
    const second = await RawPeer.connect(server.port);
    await second.send(pkt('!C', 'echo two'));
    await until(watcher, load(2, 1, 1, 1, 300));
    // Nothing changes while the first job waits for its gate: the same load comes again
    // (the beat), so a client tells an idle host from a silent one.
    assert.deepEqual(await extension(watcher, 5000), load(2, 1, 1, 1, 300));
    await writeFile(go, '');
    await first.expect(cat(hdr('!SS  4'), 'one\n'));
    await second.expect(cat(hdr('!SS  4'), 'two\n'));
    for (const peer of [first, second]) {
      await peer.send(hdr('!D0'));
      await peer.readToEnd();
    }
    const seen = await until(watcher, load(0, 0, 0, 1, 300));
    // Every message on the way down is a possible state: never more running than slots.
    for (const text of seen) {
      const [jobs, run, queued] = [...text.matchAll(/=(\d+)/g)].map((m) => Number(m[1]));
      assert.ok((run ?? 0) <= 1 && (queued ?? 0) <= (jobs ?? 0), text);
    }
    await watcher.send(hdr('!D0'));
    assert.equal(await watcher.waitClosed(), true);
    assert.deepEqual(await assertHealthy(server), []);
  });

  it('a watching connection carries no job: a command on it is refused', async () => {
    const watcher = await watch(server.port, 1, 300);
    await watcher.send(pkt('!C', 'echo hi'));
    const rest = (await watcher.readToEnd(10_000)).toString('latin1');
    assert.match(
      rest,
      /!F\d+ +rakeserver: refused: unexpected-code: expected !D \(a connection that watches the load carries nothing else\), received !C7/,
    );
  });

  it('watch is refused where load was not granted, and after a job began', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!X', 'hello rake/1 ext=stderr'), pkt('!X', 'watch'));
    await peer.expect(pkt('!X', 'ok ext=stderr'));
    const rest = (await peer.readToEnd(10_000)).toString('latin1');
    assert.match(rest, /bad-extension/);
    const late = await RawPeer.connect(server.port);
    await late.send(pkt('!X', 'hello rake/1 ext=load,reuse'));
    await late.expect(pkt('!X', 'ok ext=load,reuse'));
    await late.send(pkt('!R0'), hdr('!SSIF0'), pkt('!X', 'watch'));
    assert.match((await late.readToEnd(10_000)).toString('latin1'), /bad-extension/);
  });

  it('a server with a --cost-offset says it in every load (offset=), as its cost includes it', async () => {
    const dear = await startServer({ maxJobs: 1, heartbeatIntervalSeconds: 0.3, costOffset: 7 });
    try {
      const peer = await RawPeer.connect(dear.port);
      await peer.send(pkt('!X', 'hello rake/1 ext=load'), pkt('!X', 'watch'));
      await peer.expect(
        cat(
          pkt('!X', 'ok ext=load'),
          pkt('!X', 'load jobs=0 running=0 queued=0 slots=1 beat=300 offset=7'),
        ),
      );
      peer.destroy();
    } finally {
      await dear.close();
    }
  });

  it('a server without a heartbeat does not grant load', async () => {
    const quiet = await startServer({ heartbeatIntervalSeconds: 0 });
    try {
      const peer = await RawPeer.connect(quiet.port);
      await peer.send(pkt('!X', 'hello rake/1 ext=load,reuse'));
      await peer.expect(pkt('!X', 'ok ext=reuse'));
      peer.destroy();
    } finally {
      await quiet.close();
    }
  });
});

describe('extension reuse: several jobs over one connection', { timeout: 60_000 }, () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({});
  });
  after(() => server.close());

  it('each job after a reply starts in a fresh directory, without the last cwd', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!X', 'hello rake/1 ext=cwd,reuse'));
    await peer.expect(pkt('!X', 'ok ext=cwd,reuse'));
    // Job 1: a requirement, a cwd, a command that writes a file.
    await peer.send(pkt('!R0'), hdr('!SSIF1'));
    await peer.serveFile('in.txt', Buffer.from('one\n'));
    await peer.send(
      pkt('!X', 'cwd sub'),
      pkt('!C', 'cat ../in.txt > out.txt; pwd | sed "s:.*/::"'),
    );
    await peer.expect(cat(hdr('!SSI 4'), 'sub\n', hdr('!SSIF1')));
    const files = await peer.pullFiles(1);
    assert.deepEqual(files, [{ name: 'sub/out.txt', content: Buffer.from('one\n') }]);
    // Job 2 on the same connection: nothing of job 1 is left, and it runs at the top.
    await peer.send(pkt('!C', 'ls -A; pwd | sed "s:.*/::" | cut -c1-4'));
    await peer.expect(cat(hdr('!SS  5'), 'job-\n'));
    // Job 3: a failure ends a job too; job 4 still runs.
    await peer.send(pkt('!C', 'exit 3'));
    await peer.expect(cat(pkt('!F'), pkt('!F', '3')));
    await peer.send(pkt('!C', 'echo four'));
    await peer.expect(cat(hdr('!SS  5'), 'four\n'));
    await peer.send(hdr('!D0'));
    assert.equal((await peer.readToEnd()).length, 0);
    assert.deepEqual(await assertHealthy(server), []);
    assert.ok(
      await waitFor(() => server.logs.some((l) => l.msg === 'connection' && l.commands === 4)),
      'the four jobs were one connection',
    );
  });

  it('a job that left nothing leaves its directory, as new, to the next job; one that left a file does not', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!X', 'hello rake/1 ext=reuse'));
    await peer.expect(pkt('!X', 'ok ext=reuse'));
    /** The stdout of a successful job that wrote no file. */
    const stdout = async (command: string): Promise<string> => {
      await peer.send(pkt('!C', command));
      const m = /^!SS +(\d+)$/.exec(await peer.header());
      assert.ok(m, 'a success without files');
      return (await peer.read(Number(m[1]))).toString('utf8');
    };
    // Job 1 leaves its directory empty but read-only.
    const first = await stdout('pwd; chmod 500 .');
    // Job 2 runs there again (no directory given back and taken), writable as a new one.
    assert.equal(await stdout('pwd; stat -c %a .; ls -A'), `${first}700\n`);
    // Job 3 leaves a file: job 4 gets another directory, with nothing in it.
    await peer.send(pkt('!C', 'echo x > f'));
    await peer.expect(hdr('!SSI 0'));
    await peer.expect(hdr('!SSIF1'));
    await peer.pullFiles(1);
    const fourth = await stdout('pwd; ls -A');
    assert.notEqual(fourth, first);
    assert.match(fourth, /^\/.*\/job-[^/\n]*\n$/);
    await peer.send(hdr('!D0'));
    assert.equal((await peer.readToEnd()).length, 0);
    assert.deepEqual(await assertHealthy(server), []);
  });

  it('without reuse a later command runs in the same directory, as in base mode', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!X', 'hello rake/1 ext=cwd'));
    await peer.expect(pkt('!X', 'ok ext=cwd'));
    await peer.send(pkt('!C', 'echo x > kept'));
    await peer.expect(hdr('!SSI 0'));
    await peer.expect(hdr('!SSIF1'));
    await peer.pullFiles(1);
    await peer.send(pkt('!C', 'cat kept'));
    await peer.expect(cat(hdr('!SS  2'), 'x\n'));
    peer.destroy();
  });
});
