// Issue 17, the connection's share: garbage refused at once (defect 13), no server path and
// no auth proof in a reply or a log (defect 9). Each case ends with a healthy server.
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { dirname } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
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

describe('no server path in a reply (defect 9)', () => {
  /** `!R0` + one file announced, its name sent; resolves the refusal's message. */
  async function uploadNamed(name: string): Promise<string> {
    const peer = await RawPeer.connect(server.port);
    await peer.send(hdr('!R0'), hdr('!SSIF1'));
    await peer.expect('!N');
    await peer.send(pkt('!S!NF', name));
    return refusal(peer, 5000);
  }

  /** Asserts a reply shows no server path: not the workdir, its parent, nor the server's pid. */
  function assertNoPath(message: string): void {
    for (const leak of [server.workdir, dirname(server.workdir), tmpdir(), `p${process.pid}`]) {
      assert.ok(!message.includes(leak), `the reply leaks ${leak}: ${message}`);
    }
  }

  it('a name segment over 255 bytes is a bad-name refusal that names no path', async () => {
    const message = await uploadNamed(`d/${'s'.repeat(300)}`);
    assert.match(message, /^rakeserver: refused: bad-name: .*300-byte segment \(at most 255/);
    assertNoPath(message);
  });

  it('a name longer than the file system allows below the job directory, likewise', async () => {
    // 20 segments of 203 bytes (4 079 with the slashes, under the 4 096 allowed for a name):
    // each one fits, the path below the job directory does not (PATH_MAX is 4 096).
    const name = Array.from({ length: 20 }, (_, i) => `${i}`.padEnd(203, 'x')).join('/');
    assert.ok(server.workdir.length + name.length > 4096);
    const message = await uploadNamed(name);
    assert.match(message, /^rakeserver: refused: bad-name: .*too long a path on this host/);
    assertNoPath(message);
  });
});

describe('an auth proof is never echoed nor logged (defect 9)', () => {
  let authed: TestServer;
  before(async () => {
    authed = await startServer({ token: 'hardening-spec-token' });
  });
  after(async () => {
    await authed.close();
  });

  const answers: Array<[string, string]> = [
    ['a proof of the wrong length', 'auth 0123456789abcdef-SECRET-PROOF-0123456789abcdef'],
    ['a token pasted as the answer', 'SECRET-PROOF-hardening-spec-token'],
    ['a proof with a second word', `auth ${'a'.repeat(64)} SECRET-PROOF`],
  ];
  for (const [name, answer] of answers) {
    it(`refuses ${name} without showing it`, async () => {
      const peer = await RawPeer.connect(authed.port);
      await peer.send(pkt('!X', 'hello rake/1 ext=stderr,mode,cache,auth'));
      const head = await peer.header();
      assert.match(head, /^!X\d+$/);
      assert.match((await peer.read(Number(head.slice(2)))).toString(), /^challenge /);
      await peer.send(pkt('!X', answer));
      const message = await refusal(peer, 5000);
      assert.match(message, /^rakeserver: refused: bad-extension: .*not shown/);
      assert.ok(!message.includes('SECRET-PROOF'), `the reply echoes the proof: ${message}`);
      assert.ok(
        await waitFor(() => authed.logs.some((l) => l.msg === 'refused')),
        'no refused line',
      );
      assert.ok(!JSON.stringify(authed.logs).includes('SECRET-PROOF'), 'the log holds the proof');
    });
  }
});
