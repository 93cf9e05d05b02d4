// Extension `queue` on the wire (docs/protocol.md, "queue"): exact bytes from a raw peer that
// shares no code with src/. A job that finds a free slot gets no extra byte; one that must
// wait is told `queued` at once and `started` when its slot comes.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import { waitUntil } from '../helpers/wait.js';
import { assertHealthy, startServer, type TestServer } from './support.js';

const cat = (...parts: Array<Buffer | string>) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p)));

describe('golden transcripts: queue', { timeout: 30_000 }, () => {
  let server: TestServer;
  let gates = '';
  before(async () => {
    server = await startServer({ maxJobs: 1 });
    gates = await mkdtemp(join(tmpdir(), 'rake-queue-'));
  });
  after(async () => {
    await server.close();
    await rm(gates, { recursive: true, force: true });
  });

  it('a job that waits for a slot: !X queued at once, !X started when it starts', async () => {
    const go = join(gates, 'go');
    const running = join(gates, 'running');
    // The first job holds the only slot until the test opens the gate.
    const first = await RawPeer.connect(server.port);
    await first.send(pkt('!X', 'hello rake/1 ext=queue'));
    await first.expect(pkt('!X', 'ok ext=queue'));
    await first.send(
      pkt('!C', `touch ${running}; while [ ! -e ${go} ]; do sleep 0.01; done; echo one`),
    );
    await waitUntil(() => existsSync(running), { ms: 10_000, every: 10, what: 'the first job' });
    const second = await RawPeer.connect(server.port);
    await second.send(pkt('!X', 'hello rake/1 ext=queue'));
    await second.expect(pkt('!X', 'ok ext=queue'));
    await second.send(pkt('!C', 'echo two'));
    await second.expect(cat(hdr('!X6'), 'queued'));
    await writeFile(go, '');
    // The first job got its slot at once: its reply comes with no queue message.
    await first.expect(cat(hdr('!SS  4'), 'one\n'));
    await second.expect(cat(hdr('!X7'), 'started', hdr('!SS  4'), 'two\n'));
    for (const peer of [first, second]) {
      await peer.send(hdr('!D0'));
      assert.equal((await peer.readToEnd()).length, 0);
    }
    assert.deepEqual(await assertHealthy(server), []);
  });

  it('the slot is the command’s only: a queued job starts when the first one’s process ends, its reply still unread', async () => {
    const go = join(gates, 'go3');
    const running = join(gates, 'running3');
    const size = 16 * 1024 * 1024; // more than loopback's socket buffers hold: the reply waits
    const first = await RawPeer.connect(server.port);
    await first.send(
      pkt(
        '!C',
        `touch ${running}; while [ ! -e ${go} ]; do sleep 0.01; done; head -c ${size} /dev/zero`,
      ),
    );
    // The first client reads nothing until the second job is done.
    first.socket.pause();
    await waitUntil(() => existsSync(running), { ms: 10_000, every: 10, what: 'the first job' });
    const second = await RawPeer.connect(server.port);
    await second.send(pkt('!X', 'hello rake/1 ext=queue'));
    await second.expect(pkt('!X', 'ok ext=queue'));
    await second.send(pkt('!C', 'echo two'));
    await second.expect(cat(hdr('!X6'), 'queued'));
    await writeFile(go, '');
    await second.expect(cat(hdr('!X7'), 'started', hdr('!SS  4'), 'two\n'), 20_000);
    // The first job's end is logged once its reply is written: it is not.
    assert.equal(server.logs.filter((l) => l.msg === 'job end').at(-1)?.command, 'echo two');
    assert.ok(!server.logs.some((l) => l.msg === 'job end' && String(l.command).includes(go)));
    first.socket.resume();
    await first.expect(hdr(`!SS  ${size}`), 20_000);
    for (let left = size; left > 0; left -= 1 << 20) {
      assert.ok((await first.read(Math.min(left, 1 << 20), 20_000)).every((b) => b === 0));
    }
    for (const peer of [first, second]) {
      await peer.send(hdr('!D0'));
      assert.equal((await peer.readToEnd()).length, 0);
    }
    assert.deepEqual(await assertHealthy(server), []);
  });

  it('a peer that did not ask for queue waits silently, as in base mode', async () => {
    const go = join(gates, 'go2');
    const running = join(gates, 'running2');
    const first = await RawPeer.connect(server.port);
    await first.send(pkt('!C', `touch ${running}; while [ ! -e ${go} ]; do sleep 0.01; done`));
    await waitUntil(() => existsSync(running), { ms: 10_000, every: 10, what: 'the first job' });
    const second = await RawPeer.connect(server.port);
    await second.send(pkt('!X', 'hello rake/1 ext=stderr'));
    await second.expect(pkt('!X', 'ok ext=stderr'));
    await second.send(pkt('!C', 'echo two'));
    await writeFile(go, '');
    await first.expect(hdr('!SS  0'));
    await second.expect(cat(hdr('!SS  4'), 'two\n'));
    first.destroy();
    second.destroy();
  });
});
