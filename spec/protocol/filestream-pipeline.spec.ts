import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  FramedReader,
  isProtocolError,
  prepareInside,
  receiveFilestream,
  sendFilestream,
} from '../../src/protocol/index.js';
import { pkt } from '../helpers/raw-peer.js';

const made: string[] = [];
after(() => Promise.all(made.map((d) => rm(d, { recursive: true, force: true }))));
async function scratch(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

async function socketPair(): Promise<{ a: Socket; b: Socket; server: Server }> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const port = (server.address() as { port: number }).port;
  const accepted = new Promise<Socket>((ok) => server.once('connection', ok));
  const a = connect(port, '127.0.0.1');
  const b = await accepted;
  return { a, b, server };
}

/** Records what a socket's writes carried, one entry per `write` call. */
function recordWrites(socket: Socket): string[] {
  const writes: string[] = [];
  const original = socket.write.bind(socket) as (chunk: Uint8Array) => boolean;
  socket.write = ((chunk: Uint8Array) => {
    writes.push(Buffer.from(chunk).toString('latin1'));
    return original(chunk);
  }) as typeof socket.write;
  return writes;
}

/** Three files to send, the last executable, and an empty destination directory. */
async function threeFiles() {
  const src = await scratch('rake-fsp-src-');
  const dst = await scratch('rake-fsp-dst-');
  const names = ['a.c', 'dir/b.h', 'tool'];
  for (const [i, n] of names.entries()) await writeFile(join(src, `f${i}`), `file ${n}\n`);
  await chmod(join(src, 'f2'), 0o755);
  const files = names.map((name, i) => ({ name, path: join(src, `f${i}`) }));
  return { dst, names, files };
}

/** The three files arrived whole, in order, the last one still executable. */
async function assertArrived(
  dst: string,
  names: readonly string[],
  received: readonly { name: string; mode?: number }[],
): Promise<void> {
  assert.deepEqual(
    received.map((f) => f.name),
    names,
  );
  for (const n of names) assert.equal(await readFile(join(dst, n), 'utf8'), `file ${n}\n`);
  assert.equal(received[2]?.mode, 0o755);
}

describe('filestream: pipelined requests (connections with extensions)', () => {
  it('asks for the next file with this file’s !T: one write per file, plus one', async () => {
    const { dst, names, files } = await threeFiles();
    const { a, b, server } = await socketPair();
    const writes = recordWrites(b);
    const [, received] = await Promise.all([
      sendFilestream(a, new FramedReader(a), files, { modes: true }),
      receiveFilestream(new FramedReader(b), b, {
        resolve: (n) => prepareInside(dst, n),
        modes: true,
      }),
    ]);
    a.destroy();
    b.destroy();
    server.close();
    assert.deepEqual(writes, ['!N!Z!M', '!T!N!Z!M', '!T!N!Z!M', '!T']);
    await assertArrived(dst, names, received);
  });

  it('with push, the receiver writes nothing and the sender never waits to be asked', async () => {
    const { dst, names, files } = await threeFiles();
    const { a, b, server } = await socketPair();
    const received = recordWrites(b);
    const sent = recordWrites(a);
    // The whole filestream is sent before the receiver even starts reading.
    await sendFilestream(a, new FramedReader(a), files, { modes: true, push: true });
    const got = await receiveFilestream(new FramedReader(b), b, {
      resolve: (n) => prepareInside(dst, n),
      modes: true,
      push: true,
    });
    a.destroy();
    b.destroy();
    server.close();
    assert.deepEqual(received, []);
    // Every name went out although nobody asked for one.
    assert.equal(sent.join('').split('!S!NF').length, 4);
    await assertArrived(dst, names, got);
  });

  it('stays in lockstep without extensions (a base-mode peer)', async () => {
    const src = await scratch('rake-fsp-src-');
    const dst = await scratch('rake-fsp-dst-');
    await writeFile(join(src, 'x'), 'x');
    await writeFile(join(src, 'y'), 'y');
    const files = ['x', 'y'].map((name) => ({ name, path: join(src, name) }));
    const { a, b, server } = await socketPair();
    const writes = recordWrites(b);
    await Promise.all([
      sendFilestream(a, new FramedReader(a), files),
      receiveFilestream(new FramedReader(b), b, { resolve: (n) => prepareInside(dst, n) }),
    ]);
    a.destroy();
    b.destroy();
    server.close();
    assert.deepEqual(writes, ['!N', '!Z', '!T', '!N', '!Z', '!T']);
  });

  it('a refused second name reaches the sender where it expects !T, as a refused error', async () => {
    const src = await scratch('rake-fsp-src-');
    const dst = await scratch('rake-fsp-dst-');
    await writeFile(join(src, 'ok'), 'fine');
    await writeFile(join(src, 'bad'), 'never sent');
    const files = [
      { name: 'ok.txt', path: join(src, 'ok') },
      { name: '../escape', path: join(src, 'bad') },
    ];
    const { a, b, server } = await socketPair();
    const sending = sendFilestream(a, new FramedReader(a), files, { modes: true });
    const receiving = receiveFilestream(new FramedReader(b), b, {
      resolve: (n) => prepareInside(dst, n),
      modes: true,
    });
    await assert.rejects(receiving, (e) => isProtocolError(e, 'bad-name'));
    // What the server does with a refused filestream (src/server/connection.ts).
    b.write(pkt('!F', 'rakeserver: refused: bad name\n'));
    await assert.rejects(
      sending,
      (e) => isProtocolError(e, 'refused') && /bad name/.test(String(e)),
    );
    assert.equal(await readFile(join(dst, 'ok.txt'), 'utf8'), 'fine');
    a.destroy();
    b.destroy();
    server.close();
  });
});
