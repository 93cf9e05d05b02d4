// Hostile input: every malformed thing is refused with two !F packets and a closed
// connection; every vanishing peer is cleaned up. After each case the server must hold no
// job directory and no child process, and must still serve a normal request.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import { assertHealthy, readPids, startServer, type TestServer, waitFor } from './support.js';

let server: TestServer;
let pids: number[] = [];

before(async () => {
  server = await startServer({
    limits: {
      maxCommandBytes: 4096,
      maxFiles: 10,
      maxFileSize: 16 * 1024 * 1024,
      maxNameBytes: 100,
      maxOutputBytes: 1024 * 1024,
    },
  });
});
after(async () => {
  await server.close();
});
afterEach(async () => {
  assert.deepEqual(await assertHealthy(server, pids), []);
  pids = [];
});

/** Reads the refusal: `!F` + "rakeserver: refused: ...", `!F1` + "2", then the close. */
async function expectRefusal(peer: RawPeer, reason: string, fragment?: string): Promise<string> {
  const first = await peer.packet();
  assert.match(first.head, /^!F\d+$/);
  const message = first.payload.toString('utf8');
  assert.ok(message.startsWith(`rakeserver: refused: ${reason}: expected `), message);
  if (fragment) assert.ok(message.includes(fragment), `${message} lacks ${fragment}`);
  const second = await peer.packet();
  assert.deepEqual([second.head, second.payload.toString()], ['!F1', '2']);
  assert.ok(await peer.waitClosed(), 'server kept the connection open');
  const logged = server.logs.some((l) => l.msg === 'refused' && l.reason === reason);
  assert.ok(logged, `no "refused" log line with reason ${reason}`);
  return message;
}

/** Opens a connection, sends `!R0` + `!SSIF<count>` and waits for the server's first `!N`. */
async function startUpload(count = 1): Promise<RawPeer> {
  const peer = await RawPeer.connect(server.port);
  await peer.send(hdr('!R0'), hdr(`!SSIF${count}`));
  await peer.expect('!N');
  return peer;
}

describe('malformed headers', () => {
  const cases: Array<[string, Buffer, string, string?]> = [
    ['an unknown code', hdr('!Xgarbage'), 'unknown-code', '!Xgarbage'],
    ['64 NUL bytes', Buffer.alloc(64), 'unknown-code', '\\x00'],
    ['plain text', hdr('GET / HTTP/1.0'), 'unknown-code'],
    ['a non-numeric length', hdr('!Cabc'), 'bad-length', 'non-numeric'],
    ['a negative length', hdr('!C-5'), 'bad-length', 'negative'],
    ['a length with a space inside', hdr('!C1 2'), 'bad-length'],
    ['a fractional length', hdr('!C1.5'), 'bad-length'],
    ['a 30-digit length', hdr(`!C${'9'.repeat(30)}`), 'length-too-large'],
    ['a length of 2^40 + 1', hdr(`!C${2 ** 40 + 1}`), 'length-too-large'],
    ['a command over the limit', hdr('!C5000'), 'limit-exceeded', 'command of at most 4096'],
    ['an !E command over the limit', hdr('!E5000'), 'limit-exceeded', 'command'],
    ['!F from a client', hdr('!F3'), 'unexpected-code', '!F3'],
    ['a filestream without !R', hdr('!SSIF1'), 'unexpected-code', '!SSIF1'],
    ['a name packet out of place', hdr('!S!NF3'), 'unexpected-code'],
    ['a padded request as a header', hdr('!N'), 'unknown-code'],
    ['flags that are digits', hdr('!S12345'), 'unknown-code'],
  ];
  for (const [name, bytes, reason, fragment] of cases) {
    it(`refuses ${name}`, async () => {
      const peer = await RawPeer.connect(server.port);
      await peer.send(bytes);
      await expectRefusal(peer, reason, fragment);
    });
  }

  it('refuses garbage after a successful cost query on the same connection', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(hdr('!E0'), hdr('!Q1'));
    await peer.expect(Buffer.concat([hdr('!E1'), Buffer.from('0')]));
    await expectRefusal(peer, 'unknown-code');
  });
});

describe('hostile filestreams', () => {
  const badNames: Array<[string, Buffer, string]> = [
    ['an absolute name', Buffer.from('/etc/passwd'), 'bad-name'],
    ['a .. name', Buffer.from('../escape'), 'bad-name'],
    ['a name climbing out through ..', Buffer.from('a/../../escape'), 'bad-name'],
    ['a name with NUL', Buffer.from('a\0b'), 'bad-name'],
    ['an empty name', Buffer.alloc(0), 'bad-name'],
    ['a name of only slashes and dots', Buffer.from('/./'), 'bad-name'],
    ['a name that is not UTF-8', Buffer.from([0x61, 0xff, 0xfe]), 'bad-name'],
    ['a name over the limit', Buffer.from('n'.repeat(101)), 'limit-exceeded'],
  ];
  for (const [name, bytes, reason] of badNames) {
    it(`refuses ${name}`, async () => {
      const peer = await startUpload();
      await peer.send(pkt('!S!NF', bytes));
      await expectRefusal(peer, reason);
      assert.equal(existsSync(join(server.workdir, '..', 'escape')), false);
    });
  }

  const badSizes: Array<[string, string, string]> = [
    ['a non-numeric size', 'abc', 'bad-number'],
    ['a negative size', '-1', 'bad-number'],
    ['a size over the limit', String(16 * 1024 * 1024 + 1), 'limit-exceeded'],
    ['a 40-digit size', '9'.repeat(40), 'limit-exceeded'],
  ];
  for (const [name, size, reason] of badSizes) {
    it(`refuses ${name}`, async () => {
      const peer = await startUpload();
      await peer.send(pkt('!S!NF', 'ok.txt'));
      await peer.expect('!Z');
      await peer.send(pkt('!S!ZF', size));
      await expectRefusal(peer, reason);
    });
  }

  it('refuses more files than allowed', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(hdr('!R0'), hdr('!SSIF11'));
    await expectRefusal(peer, 'limit-exceeded', 'at most 10 files');
  });

  it('refuses a size packet where a name was due', async () => {
    const peer = await startUpload();
    await peer.send(pkt('!S!ZF', '5'));
    await expectRefusal(peer, 'unexpected-code', '!S!NF');
  });

  it('refuses a command where the filestream announcement was due', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(hdr('!R0'), pkt('!C', 'echo hi'));
    await expectRefusal(peer, 'unexpected-code', '!SSIF');
  });

  it('never returns symlinks, and never writes through one', async () => {
    const outside = join(server.scratch, 'outside');
    writeFileSync(`${outside}.txt`, 'precious');
    const peer = await RawPeer.connect(server.port);
    const cmd = `mkdir -p ${outside} && ln -s ${outside} dir && ln -s ${outside}.txt file && echo x > real`;
    await peer.send(pkt('!C', cmd));
    await peer.expect(Buffer.concat([hdr('!SSI 0'), hdr('!SSIF1'), Buffer.from('')]));
    await peer.send('!N');
    await peer.expect(pkt('!S!NF', 'real'));
    await peer.send('!Z', '!T');
    await peer.expect(Buffer.concat([pkt('!S!ZF', '2'), Buffer.from('x\n')]));
    // A file named like the symlink replaces the link; the target is untouched.
    await peer.send(hdr('!R0'), hdr('!SSIF2'));
    await peer.serveFile('file', Buffer.from('overwritten'));
    assert.equal(readFileSync(`${outside}.txt`, 'utf8'), 'precious');
    // A file below the symlinked directory is refused.
    await peer.expect('!N');
    await peer.send(pkt('!S!NF', 'dir/evil'));
    await expectRefusal(peer, 'bad-name', 'symlink');
    assert.equal(existsSync(join(outside, 'evil')), false);
  });
});

describe('truncated streams and vanishing peers', () => {
  it('half a header, then end of stream', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send('!C7   ');
    peer.end();
    assert.ok(await peer.waitClosed());
  });

  it('a command cut short', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(hdr('!C10'), 'ech');
    peer.end();
    assert.ok(await peer.waitClosed());
  });

  for (const how of ['end', 'destroy'] as const) {
    it(`a peer vanishing mid-upload (${how})`, async () => {
      const peer = await startUpload();
      await peer.send(pkt('!S!NF', 'big.bin'));
      await peer.expect('!Z');
      await peer.send(pkt('!S!ZF', '1000000'));
      await peer.expect('!T');
      await peer.send(Buffer.alloc(300_000, 1));
      await waitFor(() => server.handle.cost() === 1);
      if (how === 'end') peer.end();
      else peer.destroy();
    });
  }

  for (const withD of [false, true]) {
    it(`a peer vanishing mid-job${withD ? ' after !D' : ''}: the process group dies`, async () => {
      const peer = await RawPeer.connect(server.port);
      const s = server.scratch;
      await peer.send(
        pkt('!C', `echo $$ > ${s}/sh.pid; sleep 30 & echo $! > ${s}/bg.pid; sleep 31; wait`),
      );
      pids = await readPids(s, ['sh.pid', 'bg.pid']);
      if (withD) await peer.send(hdr('!D0'));
      peer.destroy();
      assert.ok(await waitFor(() => server.logs.some((l) => l.outcome === 'vanished')));
    });
  }

  it('a peer vanishing mid-download', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!C', 'head -c 12000000 /dev/zero > big.bin'));
    await peer.expect(Buffer.concat([hdr('!SSI 0'), hdr('!SSIF1')]));
    await peer.send('!N', '!Z', '!T');
    await peer.expect(Buffer.concat([pkt('!S!NF', 'big.bin'), pkt('!S!ZF', '12000000')]));
    await peer.read(100_000);
    peer.destroy();
  });

  it('a peer leaving after its reply without !D', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!C', 'echo hi > f'));
    await peer.expect(Buffer.concat([hdr('!SSI 0'), hdr('!SSIF1')]));
    peer.destroy();
  });

  it('a peer leaving while its command waits for a slot', async () => {
    const s = server.scratch;
    const blockers: RawPeer[] = [];
    for (let i = 0; i < 8; i++) {
      const p = await RawPeer.connect(server.port);
      await p.send(pkt('!C', `echo $$ > ${s}/block${i}.pid; sleep 30`));
      blockers.push(p);
    }
    const waiting = await RawPeer.connect(server.port);
    await waiting.send(pkt('!C', `echo never > ${s}/never`));
    await waitFor(() => server.handle.cost() === 9);
    waiting.destroy();
    for (const p of blockers) p.destroy();
    pids = [];
    for (let i = 0; i < 8; i++) {
      if (existsSync(join(s, `block${i}.pid`)))
        pids.push(...(await readPids(s, [`block${i}.pid`])));
    }
    assert.equal(existsSync(join(s, 'never')), false);
  });
});
