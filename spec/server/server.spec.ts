// Server behaviour beyond the golden transcripts: cost, the job queue, output files,
// limits on jobs, shutdown and logs.
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import {
  alive,
  assertHealthy,
  jobDirs,
  readPids,
  startServer,
  type TestServer,
  waitFor,
} from './support.js';

const bytes = (...parts: Array<Buffer | string>) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));

async function costOf(port: number): Promise<string> {
  const peer = await RawPeer.connect(port);
  await peer.send(hdr('!E0'));
  const reply = await peer.packet();
  peer.destroy();
  assert.match(reply.head, /^!E\d+$/);
  return reply.payload.toString();
}

describe('server', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ maxJobs: 1 });
  });
  after(async () => {
    await server.close();
  });

  it('reports cost: 0 idle, one per job managed, queued jobs included', async () => {
    assert.equal(await costOf(server.port), '0');
    const go = join(server.scratch, 'go');
    const first = await RawPeer.connect(server.port);
    await first.send(
      pkt(
        '!C',
        `i=0; while [ ! -e ${go} ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done; echo one`,
      ),
    );
    assert.ok(await waitFor(async () => (await costOf(server.port)) === '1'));
    const second = await RawPeer.connect(server.port);
    await second.send(pkt('!C', 'echo two'));
    assert.ok(await waitFor(async () => (await costOf(server.port)) === '2'));
    // maxJobs is 1: the second command waits, it is not refused.
    assert.equal(
      server.logs.filter((l) => l.msg === 'job start' && l.command === 'echo two').length,
      0,
    );
    writeFileSync(go, '');
    await first.expect(bytes(hdr('!SS  4'), 'one\n'));
    await second.expect(bytes(hdr('!SS  4'), 'two\n'));
    first.destroy();
    second.destroy();
    assert.ok(await waitFor(async () => (await costOf(server.port)) === '0'));
  });

  it('accepts a command sent as !E with a payload', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!E', 'echo hi'));
    await peer.expect(bytes(hdr('!SS  3'), 'hi\n'));
    peer.destroy();
  });

  it('counts lengths in bytes, not characters', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!C', "printf 'h\\303\\251'"));
    await peer.expect(bytes(hdr('!SS  3'), 'hé'));
    peer.destroy();
  });

  it('runs through /bin/sh: pipes, variables and && work', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!C', 'X=4; echo $((X*2)) | tr 8 9 && echo done'));
    await peer.expect(bytes(hdr('!SS  7'), '9\ndone\n'));
    peer.destroy();
  });

  it('answers an unknown program with !F, a clear message and 127', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!C', 'no-such-program-xyz --flag'));
    const stderr = (await peer.packet()).payload.toString();
    assert.match(stderr, /no-such-program-xyz: .*not found/);
    assert.match(stderr, /rakeserver: exit status 127: a program .* was not found on this server/);
    assert.deepEqual(await peer.packet(), { head: '!F3', payload: Buffer.from('127') });
    peer.destroy();
  });

  it('returns new and modified regular files, recursively, but not unchanged uploads', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(hdr('!R0'), hdr('!SSIF3'));
    await peer.serveFile('keep.txt', Buffer.from('same'));
    await peer.serveFile('edit.txt', Buffer.from('old'));
    await peer.serveFile('sub/in.txt', Buffer.from('nested upload'));
    await peer.send(
      pkt(
        '!C',
        'echo new > edit.txt; mkdir -p a/b empty; echo deep > a/b/c.txt; echo top > top.txt',
      ),
    );
    await peer.expect(bytes(hdr('!SSI 0'), hdr('!SSIF3')));
    const files = await peer.pullFiles(3);
    assert.deepEqual(
      files.map((f) => [f.name, f.content.toString()]),
      [
        ['a/b/c.txt', 'deep\n'],
        ['edit.txt', 'new\n'],
        ['top.txt', 'top\n'],
      ],
    );
    await peer.send(hdr('!D0'));
    assert.ok(await peer.waitClosed());
  });

  it('serves a second command on the same connection, returning only its own outputs', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!C', 'echo 1 > one'));
    await peer.expect(bytes(hdr('!SSI 0'), hdr('!SSIF1')));
    assert.equal((await peer.pullFiles(1, true))[0]?.name, 'one');
    await peer.send(pkt('!C', 'echo 2 > two'));
    await peer.expect(bytes(hdr('!SSI 0'), hdr('!SSIF1')));
    assert.equal((await peer.pullFiles(1))[0]?.name, 'two');
    peer.destroy();
  });

  it('kills what a job left in the background when the job ends', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!C', `sleep 30 & echo $! > ${server.scratch}/bg.pid; echo started`));
    await peer.expect(bytes(hdr('!SS  8'), 'started\n'));
    const [pid] = await readPids(server.scratch, ['bg.pid']);
    assert.ok(await waitFor(() => !alive(pid as number)), 'background sleep survived its job');
    peer.destroy();
  });

  it('logs job start and end with command, status, duration, bytes and files', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!C', 'echo logged > l.txt'));
    await peer.expect(bytes(hdr('!SSI 0'), hdr('!SSIF1')));
    await peer.pullFiles(1);
    await peer.send(hdr('!D0'));
    await peer.waitClosed();
    const end = server.logs.find((l) => l.msg === 'job end' && l.command === 'echo logged > l.txt');
    assert.ok(end);
    assert.equal(end.exitStatus, 0);
    assert.equal(end.files, 1);
    assert.equal(end.component, 'server');
    for (const key of ['durationMs', 'bytesIn', 'bytesOut'])
      assert.equal(typeof end[key], 'number');
    assert.ok(
      await waitFor(() =>
        server.logs.some(
          (l) => l.msg === 'connection' && l.conn === end.conn && l.outcome === 'ok',
        ),
      ),
    );
  });

  it('logs one line per job at info: its end (its start and a well-ended connection at debug)', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!C', 'echo once'));
    await peer.expect(bytes(hdr('!SS  5'), 'once\n'));
    await peer.send(hdr('!D0'));
    await peer.waitClosed();
    const conn = server.logs.find((l) => l.msg === 'job end' && l.command === 'echo once')?.conn;
    assert.ok(
      await waitFor(() => server.logs.some((l) => l.msg === 'connection' && l.conn === conn)),
    );
    const lines = server.logs.filter((l) => l.conn === conn);
    assert.deepEqual(
      lines.filter((l) => (l.level as number) >= 30).map((l) => l.msg),
      ['job end'],
    );
    assert.deepEqual(
      lines.filter((l) => (l.level as number) < 30).map((l) => l.msg),
      ['job start', 'connection'],
    );
  });

  it('is healthy afterwards', async () => {
    assert.deepEqual(await assertHealthy(server), []);
  });
});

describe('server limits on jobs', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({
      jobTimeoutSeconds: 0.3,
      costOffset: 5,
      limits: { maxOutputBytes: 1000 },
    });
  });
  after(async () => {
    await server.close();
  });

  it('adds the cost offset', async () => {
    assert.equal(await costOf(server.port), '5');
  });

  it('kills a job past --job-timeout: !F with a message, then 124', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!C', `echo $$ > ${server.scratch}/t.pid; echo partial >&2; sleep 30`));
    const stderr = (await peer.packet()).payload.toString();
    assert.match(stderr, /^partial\nrakeserver: job timed out after 0.3 s/);
    assert.deepEqual(await peer.packet(), { head: '!F3', payload: Buffer.from('124') });
    const [pid] = await readPids(server.scratch, ['t.pid']);
    assert.ok(await waitFor(() => !alive(pid as number)));
    peer.destroy();
  });

  it('refuses output beyond the cap: !F with a message, then 2', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!C', 'head -c 5000 /dev/zero'));
    const stderr = (await peer.packet()).payload.toString();
    assert.match(stderr, /rakeserver: refused: the job's stdout exceeded 1000 bytes/);
    assert.deepEqual(await peer.packet(), { head: '!F1', payload: Buffer.from('2') });
    peer.destroy();
  });
});

describe('shutdown', () => {
  it('lets a running job finish, then stops and removes its own workdir', async () => {
    const server = await startServer({}, { ownWorkdir: true });
    const peer = await RawPeer.connect(server.port);
    const idle = await RawPeer.connect(server.port);
    await peer.send(pkt('!C', 'sleep 0.3; echo finished > out'));
    assert.ok(await waitFor(() => server.handle.cost() === 1));
    const closing = server.handle.close({ graceSeconds: 20 });
    assert.ok(await idle.waitClosed(), 'an idle connection is closed at once');
    await peer.expect(bytes(hdr('!SSI 0'), hdr('!SSIF1')));
    assert.equal((await peer.pullFiles(1))[0]?.content.toString(), 'finished\n');
    await peer.send(hdr('!D0'));
    await closing;
    assert.equal(existsSync(server.handle.workdir), false);
    await server.close();
  });

  it('kills jobs still running when the grace period ends', async () => {
    const server = await startServer();
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!C', `echo $$ > ${server.scratch}/s.pid; sleep 30`));
    const [pid] = await readPids(server.scratch, ['s.pid']);
    await server.handle.close({ graceSeconds: 0.2 });
    assert.equal(alive(pid as number), false);
    assert.deepEqual(await jobDirs(server.workdir), []);
    assert.ok(await peer.waitClosed());
    await server.close();
  });

  it('refuses new connections once closing', async () => {
    const server = await startServer();
    await server.handle.close();
    await assert.rejects(RawPeer.connect(server.port));
    await server.close();
  });
});
