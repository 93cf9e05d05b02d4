// Golden transcripts: the exact bytes of PROTOCOL.md's examples, sent by a raw socket peer,
// and the exact bytes the server must send back.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hdr, RawPeer } from '../helpers/raw-peer.js';
import { assertHealthy, startServer, type TestServer } from './support.js';

const cat = (...parts: Array<Buffer | string>) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p)));

const SQUARE_C = Buffer.from('#include "allfunctions.h"\nint square(int x) { return x * x; }\n');
const ALLFUNCTIONS_H = Buffer.from('int square(int x);\n');

/** The object file `cc -c square.c` makes here, to compare against what the server returns. */
function compileLocally(): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'rake-golden-cc-'));
  writeFileSync(join(dir, 'square.c'), SQUARE_C);
  writeFileSync(join(dir, 'allfunctions.h'), ALLFUNCTIONS_H);
  try {
    const r = spawnSync('/bin/sh', ['-c', 'cc -c square.c'], { cwd: dir });
    assert.equal(r.status, 0, r.stderr.toString());
    return readFileSync(join(dir, 'square.o'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const form of ['2-byte', 'padded'] as const) {
  /** A filestream request as the receiver sends it: 2 raw bytes, or padded to 64. */
  const req = (r: string) => (form === '2-byte' ? Buffer.from(r) : hdr(r));

  describe(`golden transcripts (${form} requests)`, () => {
    let server: TestServer;
    before(async () => {
      server = await startServer();
    });
    after(async () => {
      await server.close();
    });

    it('cost query: !E0 -> !E1 + "0" on an idle server', async () => {
      const peer = await RawPeer.connect(server.port);
      await peer.send(hdr('!E0'));
      await peer.expect(cat(hdr('!E1'), '0'));
      peer.end();
      assert.ok(await peer.waitClosed());
    });

    it('echo hi: !C7 + "echo hi" -> !SS  3 + "hi\\n", then !D0 closes', async () => {
      const peer = await RawPeer.connect(server.port);
      await peer.send(cat(hdr('!C7'), 'echo hi'));
      await peer.expect(cat(hdr('!SS  3'), 'hi\n'));
      await peer.send(hdr('!D0'));
      assert.equal((await peer.readToEnd()).length, 0);
    });

    it('false: two !F packets, empty stderr then exit status 1', async () => {
      const peer = await RawPeer.connect(server.port);
      await peer.send(cat(hdr('!C5'), 'false'));
      await peer.expect(cat(hdr('!F0'), hdr('!F1'), '1'));
      await peer.send(hdr('!D0'));
      assert.equal((await peer.readToEnd()).length, 0);
    });

    it('ls of a missing path: !F + ls stderr, then !F1 + "2"', async () => {
      const local = spawnSync('/bin/sh', ['-c', 'ls no-such-path'], { cwd: server.scratch });
      const stderr = local.stderr;
      assert.equal(local.status, 2);
      const peer = await RawPeer.connect(server.port);
      await peer.send(cat(hdr('!C15'), 'ls no-such-path'));
      await peer.expect(cat(hdr(`!F${stderr.length}`), stderr, hdr('!F1'), '2'));
      await peer.send(hdr('!D0'));
      assert.equal((await peer.readToEnd()).length, 0);
    });

    it('touch out.txt: !SSI 0, !SSIF1, then out.txt (0 bytes) on !N !Z !T', async () => {
      const peer = await RawPeer.connect(server.port);
      await peer.send(cat(hdr('!C13'), 'touch out.txt'));
      await peer.expect(cat(hdr('!SSI 0'), hdr('!SSIF1')));
      await peer.send(req('!N'));
      await peer.expect(cat(hdr('!S!NF7'), 'out.txt'));
      await peer.send(req('!Z'));
      await peer.expect(cat(hdr('!S!ZF1'), '0'));
      await peer.send(req('!T'));
      await peer.send(hdr('!D0'));
      assert.equal((await peer.readToEnd()).length, 0);
    });

    it('requirements + cc -c: the server receives two files, compiles, returns square.o', async () => {
      const object = compileLocally();
      const peer = await RawPeer.connect(server.port);
      await peer.send(hdr('!R0'), hdr('!SSIF2'));
      // The server is the receiver here: it must send 2-byte requests.
      await peer.expect('!N');
      await peer.send(cat(hdr('!S!NF8'), 'square.c'));
      await peer.expect('!Z');
      await peer.send(cat(hdr(`!S!ZF${String(SQUARE_C.length).length}`), String(SQUARE_C.length)));
      await peer.expect('!T');
      await peer.send(SQUARE_C);
      await peer.expect('!N');
      await peer.send(cat(hdr('!S!NF14'), 'allfunctions.h'));
      await peer.expect('!Z');
      await peer.send(cat(hdr('!S!ZF2'), String(ALLFUNCTIONS_H.length)));
      await peer.expect('!T');
      await peer.send(ALLFUNCTIONS_H);
      await peer.send(cat(hdr('!C14'), 'cc -c square.c'));

      await peer.expect(cat(hdr('!SSI 0'), hdr('!SSIF1')));
      await peer.send(req('!N'));
      await peer.expect(cat(hdr('!S!NF8'), 'square.o'));
      await peer.send(req('!Z'));
      const size = String(object.length);
      await peer.expect(cat(hdr(`!S!ZF${size.length}`), size));
      await peer.send(req('!T'));
      const received = await peer.read(object.length);
      assert.ok(received.equals(object), 'square.o differs from a local compile');
      await peer.send(hdr('!D0'));
      assert.equal((await peer.readToEnd()).length, 0);
    });

    it('a server reply never goes beyond what was asked: nothing after the last !T', async () => {
      const peer = await RawPeer.connect(server.port);
      await peer.send(cat(hdr('!C19'), 'printf ab > two.txt'));
      await peer.expect(cat(hdr('!SSI 0'), hdr('!SSIF1')));
      await peer.send(req('!N'), req('!Z'), req('!T'));
      await peer.expect(cat(hdr('!S!NF7'), 'two.txt', hdr('!S!ZF1'), '2', 'ab'));
      peer.end();
      assert.equal((await peer.readToEnd()).length, 0);
    });

    it('leaves the server clean', async () => {
      assert.deepEqual(await assertHealthy(server), []);
    });
  });
}
