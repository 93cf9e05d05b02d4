import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { SMALL_FILE_BYTES } from '../../src/protocol/filestream.js';
import {
  FramedReader,
  isProtocolError,
  prepareInside,
  receiveFilestream,
  sendFilestream,
  type TransferredFile,
} from '../../src/protocol/index.js';
import { hdr, pkt } from '../helpers/raw-peer.js';

const made: string[] = [];
after(() => Promise.all(made.map((d) => rm(d, { recursive: true, force: true }))));
/** A fresh temporary directory, removed after the file's tests. */
async function scratch(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A connected loopback socket pair: `a` is the client end, `b` the server end. */
async function socketPair(): Promise<{ a: Socket; b: Socket; server: Server }> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const port = (server.address() as { port: number }).port;
  const accepted = new Promise<Socket>((ok) => server.once('connection', ok));
  const a = connect(port, '127.0.0.1');
  const b = await accepted;
  return { a, b, server };
}

describe('filestream', () => {
  it('round-trips files (empty, nested, at the small-file bound, 20 MiB) between the two roles', async () => {
    const src = await scratch('rake-fs-src-');
    const dst = await scratch('rake-fs-dst-');
    const contents: Record<string, Buffer> = {
      'empty.txt': Buffer.alloc(0),
      'dir/sub/nested.c': Buffer.from('int x;\n'),
      'big.bin': randomBytes(20 * 1024 * 1024),
      // Read and written whole, synchronously, up to the bound; streamed past it.
      'edge/at-bound.bin': randomBytes(SMALL_FILE_BYTES),
      'edge/past-bound.bin': randomBytes(SMALL_FILE_BYTES + 1),
      'ünïcode name.txt': Buffer.from('é'),
    };
    const files = Object.entries(contents).map(([name, data], i) => ({
      name,
      path: join(src, `f${i}`),
      data,
    }));
    for (const f of files) await writeFile(f.path, f.data);
    const { a, b, server } = await socketPair();
    const [sent, received] = await Promise.all([
      sendFilestream(a, new FramedReader(a), files),
      receiveFilestream(new FramedReader(b), b, { resolve: (n) => prepareInside(dst, n) }),
    ]);
    a.destroy();
    b.destroy();
    server.close();
    const summary = (list: TransferredFile[]) => list.map((f) => [f.name, f.size]);
    assert.deepEqual(summary(received), summary(sent));
    for (const [name, data] of Object.entries(contents)) {
      assert.equal(sha(await readFile(join(dst, name))), sha(data), name);
    }
    assert.deepEqual(
      (await readdir(dst)).filter((n) => n.includes('rake-tmp')),
      [],
    );
  });

  it('receiver: a refused name stops the stream with bad-name', async () => {
    const dst = await scratch('rake-fs-dst-');
    const { a, b, server } = await socketPair();
    a.write(hdr('!SSIF1'));
    const receiving = receiveFilestream(new FramedReader(b), b, {
      resolve: (n) => prepareInside(dst, n),
    });
    a.once('data', () => a.write(pkt('!S!NF', '../escape')));
    await assert.rejects(receiving, (e) => isProtocolError(e, 'bad-name'));
    a.destroy();
    b.destroy();
    server.close();
  });

  it('receiver: a truncated file leaves neither the file nor its temporary', async () => {
    const dst = await scratch('rake-fs-dst-');
    const { a, b, server } = await socketPair();
    const receiving = receiveFilestream(new FramedReader(b), b, {
      resolve: (n) => prepareInside(dst, n),
    });
    const reader = new FramedReader(a);
    a.write(hdr('!SSIF1'));
    await reader.readRequest('!N');
    a.write(pkt('!S!NF', 'partial.bin'));
    await reader.readRequest('!Z');
    a.write(pkt('!S!ZF', '1000'));
    await reader.readRequest('!T');
    a.end(Buffer.alloc(10));
    await assert.rejects(receiving, (e) => isProtocolError(e, 'short-read'));
    assert.deepEqual(await readdir(dst), []);
    b.destroy();
    server.close();
  });

  it('receiver: a !F where a filestream was due is a refused error with the message', async () => {
    const dst = await scratch('rake-fs-dst-');
    const { a, b, server } = await socketPair();
    const receiving = receiveFilestream(new FramedReader(b), b, {
      resolve: (n) => prepareInside(dst, n),
    });
    a.write(pkt('!F', 'rakeserver: refused: no\n'));
    await assert.rejects(
      receiving,
      (e) => isProtocolError(e, 'refused') && /refused: no/.test(String(e)),
    );
    a.destroy();
    b.destroy();
    server.close();
  });

  it('sender: noFollow refuses a symlink; without it the target is sent', async () => {
    const src = await scratch('rake-fs-src-');
    await writeFile(join(src, 'target'), 'pointed at');
    await symlink(join(src, 'target'), join(src, 'link'));
    for (const noFollow of [true, false]) {
      const { a, b, server } = await socketPair();
      const sending = sendFilestream(
        a,
        new FramedReader(a),
        [{ name: 'l', path: join(src, 'link') }],
        {
          noFollow,
        },
      );
      const r = new FramedReader(b);
      await r.readHeader();
      b.write('!N');
      await r.readHeader();
      await r.readExact(1);
      b.write('!Z');
      if (noFollow) await assert.rejects(sending, /ELOOP/);
      else {
        await r.readHeader();
        assert.equal((await r.readExact(2)).toString(), '10');
        b.write('!T');
        assert.equal((await r.readExact(10)).toString(), 'pointed at');
        await sending;
      }
      a.destroy();
      b.destroy();
      server.close();
    }
  });
});
