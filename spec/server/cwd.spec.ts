// Extension `cwd` on the wire (docs/protocol.md, "cwd"): exact bytes from a raw peer that
// shares no code with src/. The command runs in the named subdirectory of the job directory;
// outputs are named relative to the job directory; a name that could leave it is refused.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import { assertHealthy, startServer, type TestServer } from './support.js';

const cat = (...parts: Array<Buffer | string>) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p)));

describe('golden transcripts: cwd', { timeout: 30_000 }, () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ maxJobs: 2 });
  });
  after(async () => {
    await server.close();
  });

  it('runs the command in the named directory; outputs come back under it', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!X', 'hello rake/1 ext=cwd'));
    await peer.expect(pkt('!X', 'ok ext=cwd'));
    await peer.send(cat(hdr('!R0'), hdr('!SSIF1')));
    await peer.expect('!N');
    await peer.send(cat(hdr('!S!NF11'), 'include/x.h'));
    await peer.expect('!Z');
    await peer.send(cat(hdr('!S!ZF1'), '2'));
    await peer.expect('!T');
    await peer.send('42');
    await peer.send(
      pkt('!X', 'cwd proj/build'),
      pkt('!C', 'pwd | sed "s|.*/proj|proj|"; cat ../../include/x.h > got'),
    );
    await peer.expect(cat(hdr('!SSI 11'), 'proj/build\n'));
    await peer.expect(hdr('!SSIF1'));
    await peer.send('!N');
    await peer.expect(cat(hdr('!S!NF14'), 'proj/build/got'));
    await peer.send('!Z');
    await peer.expect(cat(hdr('!S!ZF1'), '2'));
    await peer.send('!T');
    await peer.expect('42');
    await peer.send(hdr('!D0'));
    assert.equal((await peer.readToEnd()).length, 0);
    assert.deepEqual(await assertHealthy(server), []);
  });

  it('refuses a directory that could leave the job directory (bad-name)', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!X', 'hello rake/1 ext=cwd'));
    await peer.expect(pkt('!X', 'ok ext=cwd'));
    await peer.send(pkt('!X', 'cwd ../escape'), pkt('!C', 'touch here'));
    const refusal = await peer.packet();
    assert.equal(refusal.head.slice(0, 2), '!F');
    assert.match(refusal.payload.toString(), /^rakeserver: refused: bad-name: /);
    assert.equal((await peer.packet()).payload.toString(), '2');
    assert.ok(await peer.waitClosed());
    assert.deepEqual(await assertHealthy(server), []);
  });

  it('refuses cwd on a connection that did not negotiate it (bad-extension)', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!X', 'hello rake/1 ext=stderr'));
    await peer.expect(pkt('!X', 'ok ext=stderr'));
    await peer.send(pkt('!X', 'cwd build'));
    const refusal = await peer.packet();
    assert.match(refusal.payload.toString(), /^rakeserver: refused: bad-extension: /);
    assert.equal((await peer.packet()).payload.toString(), '2');
  });
});
