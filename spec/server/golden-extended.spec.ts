// Golden transcripts of the negotiated extensions (docs/protocol.md, "Extensions"): exact
// bytes sent by a raw socket peer that shares no code with src/, and the exact bytes the
// server must answer. Base-mode transcripts are in golden.spec.ts and must not change.
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { hdr, pkt, RawPeer } from '../helpers/raw-peer.js';
import { assertHealthy, startServer, type TestServer, waitFor } from './support.js';

const cat = (...parts: Array<Buffer | string>) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p)));

/** A 64-byte header: `text` at the start, `annex` right-aligned at the end, spaces between. */
function annexed(text: string, annex: string): Buffer {
  assert.ok(text.length + 1 + annex.length <= 64);
  return Buffer.from(text + ' '.repeat(64 - text.length - annex.length) + annex, 'latin1');
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const OFFER = annexed('!E0', 'rake/1');
const VERSION = '0.1.0';

/** Opens a connection and says hello; returns the peer after the server's `ok`. */
async function hello(port: number, ext: string, granted = ext): Promise<RawPeer> {
  const peer = await RawPeer.connect(port);
  await peer.send(pkt('!X', `hello rake/1 ext=${ext}`));
  await peer.expect(pkt('!X', `ok ext=${granted}`));
  return peer;
}

describe('golden transcripts: extended mode', () => {
  let server: TestServer;
  before(async () => {
    server = await startServer({ version: VERSION, cacheSize: 1024 * 1024, maxJobs: 3 });
  });
  after(async () => {
    await server.close();
  });

  it('offer: !E0 + "rake/1" in the padding -> !E1 + the annex, then the bare cost', async () => {
    // `!E0`, 55 spaces, `rake/1`: still one 64-byte header and no payload.
    assert.equal(OFFER.toString('latin1'), `!E0${' '.repeat(55)}rake/1`);
    const peer = await RawPeer.connect(server.port);
    await peer.send(OFFER);
    await peer.expect(
      cat(annexed('!E1', 'rake/1 slots=3 ext=stderr,mode,cache,push,cwd,queue,beat'), '0'),
    );
    // A plain cost query on the same connection is answered as in base mode.
    await peer.send(hdr('!E0'));
    await peer.expect(cat(hdr('!E1'), '0'));
    peer.end();
    assert.ok(await peer.waitClosed());
  });

  it('hello: !X + "hello rake/1 ext=…" -> !X + "ok ext=<intersection>"', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(cat(hdr('!X38'), 'hello rake/1 ext=stderr,mode,cache,zip'));
    await peer.expect(cat(hdr('!X24'), 'ok ext=stderr,mode,cache'));
    await peer.send(hdr('!D0'));
    assert.equal((await peer.readToEnd()).length, 0);
  });

  it('stderr: a successful job sends !X + "stderr\\n" + its stderr just before !SS', async () => {
    const peer = await hello(server.port, 'stderr');
    await peer.send(pkt('!C', 'echo warning: x >&2; echo out'));
    await peer.expect(cat(hdr('!X18'), 'stderr\nwarning: x\n', hdr('!SS  4'), 'out\n'));
    // No stderr, no !X packet; a failure is the base two !F packets.
    await peer.send(pkt('!C', 'echo quiet'));
    await peer.expect(cat(hdr('!SS  6'), 'quiet\n'));
    await peer.send(pkt('!C', 'echo bad >&2; exit 3'));
    await peer.expect(cat(hdr('!F4'), 'bad\n', hdr('!F1'), '3'));
    await peer.send(hdr('!D0'));
    assert.equal((await peer.readToEnd()).length, 0);
  });

  it('without stderr negotiated, a successful job’s stderr is dropped as in base mode', async () => {
    const peer = await hello(server.port, 'mode');
    await peer.send(pkt('!C', 'echo warning >&2; echo out'));
    await peer.expect(cat(hdr('!SS  4'), 'out\n'));
    await peer.send(hdr('!D0'));
    assert.equal((await peer.readToEnd()).length, 0);
  });

  it('mode: !M after !Z in both directions; +x survives the trip', async () => {
    const script = Buffer.from('#!/bin/sh\necho ran\n');
    const peer = await hello(server.port, 'mode');
    await peer.send(hdr('!R0'), hdr('!SSIF1'));
    await peer.expect('!N');
    await peer.send(cat(hdr('!S!NF6'), 'run.sh'));
    await peer.expect('!Z');
    await peer.send(cat(hdr('!S!ZF2'), String(script.length)));
    await peer.expect('!M');
    await peer.send(cat(hdr('!S!MF3'), '755'));
    await peer.expect('!T');
    await peer.send(script);
    // The uploaded script runs without chmod; the output files keep the modes the job set.
    await peer.send(
      pkt('!C', './run.sh > out.txt && cp run.sh tool && chmod 750 tool && chmod 640 out.txt'),
    );
    await peer.expect(cat(hdr('!SSI 0'), hdr('!SSIF2')));
    await peer.send('!N');
    await peer.expect(cat(hdr('!S!NF7'), 'out.txt'));
    await peer.send('!Z');
    await peer.expect(cat(hdr('!S!ZF1'), '4'));
    await peer.send('!M');
    await peer.expect(cat(hdr('!S!MF3'), '640'));
    await peer.send('!T');
    await peer.expect('ran\n');
    await peer.send('!N', '!Z', '!M', '!T');
    await peer.expect(
      cat(
        hdr('!S!NF4'),
        'tool',
        hdr('!S!ZF2'),
        String(script.length),
        hdr('!S!MF3'),
        '750',
        script,
      ),
    );
    await peer.send(hdr('!D0'));
    assert.equal((await peer.readToEnd()).length, 0);
  });

  it('push: files go both ways unasked, the command right behind the upload', async () => {
    const script = Buffer.from('#!/bin/sh\necho ran\n');
    const data = Buffer.from('two\n');
    const peer = await hello(server.port, 'mode,push');
    // One write: !R, the announcement, each file's name, size, mode and bytes, then !C.
    await peer.send(
      cat(
        hdr('!R0'),
        hdr('!SSIF2'),
        hdr('!S!NF6'),
        'run.sh',
        hdr('!S!ZF2'),
        String(script.length),
        hdr('!S!MF3'),
        '755',
        script,
        hdr('!S!NF10'),
        'in/two.txt',
        hdr('!S!ZF1'),
        '4',
        hdr('!S!MF3'),
        '644',
        data,
        pkt('!C', './run.sh > out.txt && cat in/two.txt && chmod 640 out.txt'),
      ),
    );
    // The reply, then its output file with no !N, !Z, !M or !T asked.
    await peer.expect(
      cat(
        hdr('!SSI 4'),
        'two\n',
        hdr('!SSIF1'),
        hdr('!S!NF7'),
        'out.txt',
        hdr('!S!ZF1'),
        '4',
        hdr('!S!MF3'),
        '640',
        'ran\n',
      ),
    );
    await peer.send(hdr('!D0'));
    assert.equal((await peer.readToEnd()).length, 0);
  });

  it('push: the ok to a hello with the job right behind it leaves with the reply', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!X', 'hello rake/1 ext=push'), pkt('!C', 'sleep 0.4; echo late'));
    // The client is not waiting for the ok: nothing is sent while the job runs.
    await new Promise((r) => setTimeout(r, 250));
    assert.equal(peer.pending.length, 0, 'the ok went out on its own');
    await peer.expect(cat(pkt('!X', 'ok ext=push'), hdr('!SS  5'), 'late\n'));
    await peer.send(hdr('!D0'));
    assert.equal((await peer.readToEnd()).length, 0);
    // A hello on its own is answered at once, as before.
    const alone = await hello(server.port, 'push');
    alone.destroy();
  });

  it('push without mode: name, size and bytes only', async () => {
    const peer = await hello(server.port, 'push');
    await peer.send(
      cat(hdr('!R0'), hdr('!SSIF1'), hdr('!S!NF3'), 'a.c', hdr('!S!ZF2'), '10', 'int a = 1;'),
      pkt('!C', 'cp a.c b.c'),
    );
    await peer.expect(
      cat(hdr('!SSI 0'), hdr('!SSIF1'), hdr('!S!NF3'), 'b.c', hdr('!S!ZF2'), '10', 'int a = 1;'),
    );
    await peer.send(hdr('!D0'));
    assert.equal((await peer.readToEnd()).length, 0);
  });

  it('push: a hostile name is refused with !F although its bytes follow unasked', async () => {
    const peer = await hello(server.port, 'push');
    await peer.send(
      cat(hdr('!R0'), hdr('!SSIF1'), hdr('!S!NF9'), '../escape', hdr('!S!ZF5'), '5', 'evil!'),
      pkt('!C', 'true'),
    );
    const refusal = await peer.packet();
    assert.equal(refusal.head.slice(0, 2), '!F');
    assert.match(refusal.payload.toString(), /^rakeserver: refused: bad-name: /);
    assert.equal((await peer.packet()).payload.toString(), '2');
    assert.ok(await peer.waitClosed());
    // Nothing was written outside the job directory, and the server serves the next client.
    assert.deepEqual(await assertHealthy(server), []);
    const next = await RawPeer.connect(server.port);
    await next.send(hdr('!E0'));
    await next.expect(cat(hdr('!E1'), '0'));
    next.destroy();
  });

  it('cache: !X have -> !X need; the second job uploads nothing', async () => {
    const header = Buffer.from('#define ANSWER 42\n');
    const source = Buffer.from('#include "answer.h"\nint x = ANSWER;\n');
    const have = [
      `${sha256(header)} ${header.length} 644 include/answer.h`,
      `${sha256(source)} ${source.length} 644 x.c`,
    ].join('\n');

    const first = await hello(server.port, 'cache');
    await first.send(pkt('!X', `have\n${have}`));
    await first.expect(pkt('!X', 'need\ninclude/answer.h\nx.c'));
    await first.send(hdr('!R0'), hdr('!SSIF2'));
    await first.serveFile('include/answer.h', header);
    await first.serveFile('x.c', source);
    await first.send(pkt('!C', 'cat include/answer.h x.c'));
    const out = cat(header, source);
    await first.expect(cat(hdr(`!SS  ${out.length}`), out));
    await first.send(hdr('!D0'));
    await first.readToEnd();

    const second = await hello(server.port, 'cache');
    await second.send(pkt('!X', `have\n${have}`));
    await second.expect(cat(hdr('!X4'), 'need'));
    // No !R: the files are in the job directory already, and are not returned as outputs.
    await second.send(pkt('!C', 'cat include/answer.h x.c'));
    await second.expect(cat(hdr(`!SS  ${out.length}`), out));
    await second.send(hdr('!D0'));
    assert.equal((await second.readToEnd()).length, 0);
  });

  it('cache: a file whose bytes do not match the announced hash is used but never cached', async () => {
    const claimed = Buffer.from('the real content\n');
    const sent = Buffer.from('something else!!\n');
    const line = `${sha256(claimed)} ${claimed.length} 644 data.txt`;
    const first = await hello(server.port, 'cache');
    await first.send(pkt('!X', `have\n${line}`));
    await first.expect(pkt('!X', 'need\ndata.txt'));
    await first.send(hdr('!R0'), hdr('!SSIF1'));
    await first.serveFile('data.txt', sent);
    await first.send(pkt('!C', 'cat data.txt'));
    await first.expect(cat(hdr(`!SS  ${sent.length}`), sent));
    await first.send(hdr('!D0'));
    await first.readToEnd();
    assert.equal(server.handle.cache?.has(sha256(claimed)), false);
    assert.ok(
      server.logs.some((l) => l.msg === 'upload does not match its announced hash: not cached'),
    );

    const second = await hello(server.port, 'cache');
    await second.send(pkt('!X', `have\n${line}`));
    await second.expect(pkt('!X', 'need\ndata.txt'));
    second.destroy();
  });

  it('cache: a job that needs a file another job is uploading waits for it instead', async () => {
    const shared = Buffer.alloc(64 * 1024, 7);
    const line = `${sha256(shared)} ${shared.length} 644 shared.bin`;
    const a = await hello(server.port, 'cache');
    await a.send(pkt('!X', `have\n${line}`));
    await a.expect(pkt('!X', 'need\nshared.bin'));
    const b = await hello(server.port, 'cache');
    await b.send(pkt('!X', `have\n${line}`));
    // b's answer waits for a's upload, then needs nothing.
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(b.pending.length, 0, 'b was answered before a uploaded');
    await a.send(hdr('!R0'), hdr('!SSIF1'));
    await a.serveFile('shared.bin', shared);
    await b.expect(cat(hdr('!X4'), 'need'));
    for (const peer of [a, b]) {
      await peer.send(pkt('!C', 'wc -c < shared.bin'));
      await peer.expect(cat(hdr('!SS  6'), '65536\n'));
      await peer.send(hdr('!D0'));
      await peer.readToEnd();
    }
  });

  it('refuses !X after a base-mode message, and a have when cache was not negotiated', async () => {
    const base = await RawPeer.connect(server.port);
    await base.send(hdr('!E0'), pkt('!X', 'hello rake/1 ext=stderr'));
    await base.expect(cat(hdr('!E1'), '0'));
    const refusal = await base.packet();
    assert.match(refusal.payload.toString(), /^rakeserver: refused: unexpected-code: /);
    assert.deepEqual((await base.packet()).payload.toString(), '2');

    const peer = await hello(server.port, 'stderr');
    await peer.send(pkt('!X', `have\n${'0'.repeat(64)} 1 644 a`));
    const refused = await peer.packet();
    assert.match(refused.payload.toString(), /^rakeserver: refused: bad-extension: /);
    assert.ok(await peer.waitClosed());
  });

  it('leaves the server clean', async () => {
    assert.deepEqual(await assertHealthy(server), []);
  });
});

describe('golden transcripts: authentication', () => {
  const TOKEN = 'correct horse battery staple 0123456789';
  let server: TestServer;
  before(async () => {
    server = await startServer({ version: VERSION, token: TOKEN, maxJobs: 3 });
  });
  after(async () => {
    await server.close();
  });

  const proof = (nonce: string, token = TOKEN) =>
    createHmac('sha256', token).update(`rake/1 auth ${nonce}`).digest('hex');

  /** Says hello with auth and returns the peer and the challenge's nonce. */
  async function challenged(): Promise<{ peer: RawPeer; nonce: string }> {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!X', 'hello rake/1 ext=stderr,mode,cache,auth'));
    const head = await peer.header();
    assert.equal(head, '!X42');
    const payload = await peer.read(42);
    const m = /^challenge ([0-9a-f]{32})$/.exec(payload.toString());
    assert.ok(m, payload.toString());
    return { peer, nonce: m[1] as string };
  }

  it('the annex says auth; a base cost query is still answered, plainly', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(OFFER, hdr('!E0'));
    await peer.expect(
      cat(
        annexed('!E1', 'rake/1 slots=3 ext=stderr,mode,cache,push,cwd,queue,auth'),
        '0',
        hdr('!E1'),
        '0',
      ),
    );
    peer.destroy();
  });

  it('right token: challenge, HMAC-SHA256 proof, ok; then jobs run', async () => {
    const { peer, nonce } = await challenged();
    await peer.send(pkt('!X', `auth ${proof(nonce)}`));
    await peer.expect(pkt('!X', 'ok ext=stderr,mode,cache'));
    await peer.send(pkt('!C', 'echo hi'));
    await peer.expect(cat(hdr('!SS  3'), 'hi\n'));
    await peer.send(hdr('!D0'));
    assert.equal((await peer.readToEnd()).length, 0);
  });

  it('wrong token: the two-packet refusal, then the server closes', async () => {
    const { peer, nonce } = await challenged();
    await peer.send(pkt('!X', `auth ${proof(nonce, 'a wrong token')}`));
    const refusal = await peer.packet();
    assert.match(refusal.payload.toString(), /^rakeserver: refused: unauthenticated: /);
    assert.equal((await peer.packet()).payload.toString(), '2');
    assert.ok(await peer.waitClosed());
  });

  it('a client without the token (hello without auth) is refused with a clear message', async () => {
    const peer = await RawPeer.connect(server.port);
    await peer.send(pkt('!X', 'hello rake/1 ext=stderr,mode,cache'));
    const refusal = await peer.packet();
    assert.match(refusal.payload.toString(), /unauthenticated: .*token/);
    assert.equal((await peer.packet()).payload.toString(), '2');
    assert.ok(await peer.waitClosed());
  });

  it('a base-mode client cannot run a command or upload', async () => {
    for (const opening of [pkt('!C', 'echo hi'), hdr('!R0'), pkt('!E', 'echo hi')]) {
      const peer = await RawPeer.connect(server.port);
      await peer.send(opening);
      const refusal = await peer.packet();
      assert.equal(refusal.head.slice(0, 2), '!F');
      assert.match(
        refusal.payload.toString(),
        /^rakeserver: refused: unauthenticated: expected a client that proves it knows this server's token/,
      );
      assert.deepEqual((await peer.packet()).payload.toString(), '2');
      assert.ok(await peer.waitClosed());
    }
  });

  it('never logs the token or a proof', async () => {
    const { peer, nonce } = await challenged();
    const good = proof(nonce);
    await peer.send(pkt('!X', `auth ${good}`));
    await peer.expect(pkt('!X', 'ok ext=stderr,mode,cache'));
    peer.destroy();
    assert.ok(await waitFor(() => server.logs.some((l) => l.msg === 'authenticated')));
    const text = JSON.stringify(server.logs);
    assert.equal(text.includes(TOKEN), false);
    assert.equal(text.includes(good), false);
    assert.equal(text.includes(Buffer.from(TOKEN).toString('hex')), false);
  });
});
