// Issue 17, the connection's share: garbage refused at once (defect 13), no server path and
// no auth proof in a reply or a log (defect 9). Each case ends with a healthy server.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { hdr, RawPeer } from '../helpers/raw-peer.js';
import { assertHealthy, startServer, type TestServer, waitFor } from './support.js';

let server: TestServer;

before(async () => {
  // The default idle timeout (300 s): a refusal that waited for it would time the test out.
  server = await startServer();
});
after(async () => {
  await server.close();
});
afterEach(async () => {
  assert.deepEqual(await assertHealthy(server), []);
});

/** Reads the two-packet refusal and the close; returns the message. */
async function refusal(peer: RawPeer, timeoutMs: number): Promise<string> {
  const first = await peer.packet(timeoutMs);
  assert.match(first.head, /^!F\d+$/);
  const second = await peer.packet(timeoutMs);
  assert.deepEqual([second.head, second.payload.toString()], ['!F1', '2']);
  assert.ok(await peer.waitClosed(timeoutMs), 'server kept the connection open');
  return first.payload.toString('utf8');
}

describe('a first byte that cannot start a header (defect 13)', () => {
  const cases: Array<[string, Buffer, string]> = [
    ['a NUL byte', Buffer.from([0]), '\\x00'],
    ['a digit', Buffer.from('0'), '"0"'],
    ['JSON', Buffer.from('{"id":1}'), '{'],
    ['a TLS hello after spaces', Buffer.from([0x20, 0x20, 0x16, 0x03, 0x01]), '\\x16'],
    ['an HTTP request line', Buffer.from('GET / HTTP/1.1\r\n'), 'GET'],
    ['! and a letter no header has', Buffer.from('!Q'), '!Q'],
  ];
  for (const [name, bytes, shown] of cases) {
    it(`refuses ${name} at once, well before 64 bytes came`, async () => {
      const before = server.logs.length;
      const peer = await RawPeer.connect(server.port);
      await peer.send(bytes);
      // The old code waited for 64 bytes (up to the 300 s idle timeout): 2 s is ample.
      const message = await refusal(peer, 2000);
      assert.ok(message.startsWith('rakeserver: refused: unknown-code: expected '), message);
      assert.ok(message.includes(shown), `${message} lacks ${shown}`);
      assert.ok(message.includes('cannot start one'), message);
      const refused = server.logs
        .slice(before)
        .find((l) => l.msg === 'refused' && l.reason === 'unknown-code');
      assert.ok(refused, 'no "refused" log line');
      const mine = (l: Record<string, unknown>) => l.conn === refused.conn;
      assert.ok(await waitFor(() => server.logs.some((l) => mine(l) && l.msg === 'connection')));
      const lines = server.logs.filter(mine);
      assert.ok(!lines.some((l) => l.msg === 'client vanished'), 'logged as a vanished client');
      assert.equal(lines.find((l) => l.msg === 'connection')?.outcome, 'refused');
    });
  }

  it('still reads a header that arrives one byte at a time', async () => {
    const peer = await RawPeer.connect(server.port);
    for (const byte of hdr('!E0')) await peer.send(Buffer.from([byte]));
    const reply = await peer.packet();
    assert.deepEqual([reply.head, reply.payload.toString()], ['!E1', '0']);
    peer.destroy();
  });
});
